"""Peer for `npm run bench -- metrics --files`: `imiad evaluate`'s work done the way MVTec AD's official evaluation
does it, from the same files: every test image's anomaly map read with tifffile (MAPS/<category>/test/<defect>/
<stem>.tiff), its ground-truth mask with PIL (<root>/<category>/ground_truth/<defect>/<stem>_mask.png, any non-zero
pixel anomalous; normal images get an all-zero mask), then image AUROC and AP (scikit-learn, the map's maximum as
the image score), pixel AUROC and AP (scikit-learn) and AU-PRO (the official compute_pro + trapezoid, from
metrics_official.py). Times everything from the first file read to the last metric. Prints one JSON line last.

usage: metrics_files.py ROOT MAPS CATEGORY LIMIT
"""
import json
import os
import sys
import time

import numpy as np
import tifffile
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics_official import compute_pro, trapezoid  # noqa: E402


def main():
    root, maps_root, category, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    test = os.path.join(root, category, 'test')
    samples = []
    for defect in sorted(os.listdir(test)):
        for name in sorted(os.listdir(os.path.join(test, defect))):
            samples.append((defect, os.path.splitext(name)[0]))

    t0 = time.perf_counter()
    maps, masks, labels = [], [], []
    for defect, stem in samples:
        amap = tifffile.imread(os.path.join(maps_root, category, 'test', defect, stem + '.tiff'))
        if defect == 'good':
            mask = np.zeros(amap.shape, dtype=np.uint8)
        else:
            mask = np.asarray(Image.open(os.path.join(root, category, 'ground_truth', defect, stem + '_mask.png'))) > 0
            if mask.ndim == 3:  # any channel, as imiad reads masks
                mask = mask.any(axis=2)
            mask = mask.astype(np.uint8)
        maps.append(amap)
        masks.append(mask)
        labels.append(0 if defect == 'good' else 1)
    t1 = time.perf_counter()
    image_scores = [float(m.max()) for m in maps]
    image_auroc = roc_auc_score(labels, image_scores)
    image_ap = average_precision_score(labels, image_scores)
    y = np.concatenate([m.ravel() for m in masks]) > 0
    s = np.concatenate([m.ravel() for m in maps])
    pixel_auroc = roc_auc_score(y, s)
    pixel_ap = average_precision_score(y, s)
    del y, s
    fprs, pros = compute_pro(maps, masks)
    aupro = trapezoid(fprs, pros, x_max=limit) / limit
    t2 = time.perf_counter()
    print(json.dumps({
        'images': len(samples), 'image_auroc': image_auroc, 'image_ap': image_ap, 'pixel_auroc': pixel_auroc,
        'pixel_ap': pixel_ap, 'aupro': aupro, 'seconds': {'read': t1 - t0, 'metrics': t2 - t1, 'total': t2 - t0},
    }))


if __name__ == '__main__':
    main()
