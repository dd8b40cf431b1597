"""Peer for bench/metrics.ts: times scikit-learn's roc_auc_score and average_precision_score and a numpy
implementation of MVTec AD's official AU-PRO (pro_curve_util.compute_pro + generic_util.trapezoid) on the same
maps and masks, read from raw files. Prints one JSON line last.

usage: metrics_official.py MAPS.f32 MASKS.u8 COUNT HEIGHT WIDTH LIMIT
"""
import json
import sys
import time
from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, roc_auc_score


def trapezoid(x, y, x_max=None):
    x = np.asarray(x)
    y = np.asarray(y)
    finite = np.logical_and(np.isfinite(x), np.isfinite(y))
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def compute_pro(anomaly_maps, ground_truth_maps):
    # The official algorithm (MVTec AD pro_curve_util.compute_pro), written out with numpy.
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for i, gt in enumerate(ground_truth_maps):
        labeled, n = label(gt, structure)
        num_gt_regions += n
        ok = labeled == 0
        num_ok_pixels += np.sum(ok)
        fp_changes[i][ok] = 1
        sizes = np.bincount(labeled.ravel())
        change = np.zeros(gt.shape, dtype=np.float64)
        for k in range(1, n + 1):
            change[labeled == k] = 1.0 / sizes[k]
        pro_changes[i] = change
    scores = np.array(anomaly_maps).ravel()
    fp = fp_changes.ravel()
    pro = pro_changes.ravel()
    order = np.argsort(scores).astype(np.uint32)[::-1]
    np.take(scores, order, out=scores)
    np.take(fp, order, out=fp)
    np.take(pro, order, out=pro)
    del order
    np.cumsum(fp, out=fp)
    fprs = fp.astype(np.float32, copy=False)
    np.divide(fprs, num_ok_pixels, out=fprs)
    np.cumsum(pro, out=pro)
    np.divide(pro, num_gt_regions, out=pro)
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pro[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def main():
    maps_file, masks_file, count, height, width, limit = sys.argv[1:7]
    count, height, width, limit = int(count), int(height), int(width), float(limit)
    maps = np.fromfile(maps_file, dtype=np.float32).reshape(count, height, width)
    masks = np.fromfile(masks_file, dtype=np.uint8).reshape(count, height, width)
    y = masks.ravel() > 0
    s = maps.ravel()

    t0 = time.perf_counter()
    roc = roc_auc_score(y, s)
    t1 = time.perf_counter()
    ap = average_precision_score(y, s)
    t2 = time.perf_counter()
    fprs, pros = compute_pro(list(maps), list(masks))
    aupro = trapezoid(fprs, pros, x_max=limit) / limit
    t3 = time.perf_counter()
    print(json.dumps({
        'pixel_auroc': roc, 'pixel_ap': ap, 'aupro': aupro,
        'seconds': {'roc_auc_score': t1 - t0, 'average_precision_score': t2 - t1, 'official_aupro': t3 - t2},
    }))


if __name__ == '__main__':
    main()
