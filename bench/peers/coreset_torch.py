"""Peer of bench/coreset.ts: a PatchCore-style greedy coreset loop in torch (CPU).

Follows amazon-science/patchcore-inspection, sampler.py (ApproximateGreedyCoresetSampler): an optional random linear
map to `--proj` dims (torch.nn.Linear(dims, proj, bias=False), default init), then the greedy loop that after each
selection computes the distances of all rows to the selected row and keeps the running minimum. Three distance forms:
- "reference": the reference sampler's own step, as written there: _compute_batchwise_differences(features,
  features[i:i+1]) (row norms recomputed every step by bmm, |a|^2 - 2ab + |b|^2 clamped, sqrt), then torch.cat of
  the running minimum with the new column and torch.min over it. Selected rows are not masked (their distance is 0).
- "expansion": the same formula with the row norms computed once and the minimum kept in place (the strong form).
- "difference": ((X - x_c)^2).sum(1) in float64, slower but free of cancellation and rounding trouble: the exact
  greedy selection, used to check that imiad's float32 kernel selects the same rows.
The first row is --start (as in imiad; the reference starts from the mean distance to 10 random rows instead, which
costs one step), selected rows are excluded from the argmax, and ties go to the first index (torch.argmax). With
--repeats N the whole (projection and loop) runs N times and the median times are reported. Prints JSON on its last
line.
With --device cuda the features, the projection and the loop live on the GPU (torch.cuda.synchronize() before each
clock reading).
"""
import argparse
import json
import time

import numpy as np
import torch


def clock(a):
    if a.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def select(a, x):
    """One projection and greedy loop: (projection seconds, loop seconds, selected rows)."""
    with torch.no_grad():
        t0 = clock(a)
        if a.proj > 0:
            torch.manual_seed(a.seed)
            mapper = torch.nn.Linear(a.dims, a.proj, bias=False).to(a.device)
            f = mapper(x).contiguous()
        else:
            f = x
        t1 = clock(a)

        if a.distance == "reference":
            def batchwise(matrix_a, matrix_b):
                # patchcore-inspection's GreedyCoresetSampler._compute_batchwise_differences, unchanged.
                a_times_a = matrix_a.unsqueeze(1).bmm(matrix_a.unsqueeze(2)).reshape(-1, 1)
                b_times_b = matrix_b.unsqueeze(1).bmm(matrix_b.unsqueeze(2)).reshape(1, -1)
                a_times_b = matrix_a.mm(matrix_b.T)
                return (-2 * a_times_b + a_times_a + b_times_b).clamp(0, None).sqrt()

            selected = [a.start]
            anchor = batchwise(f, f[a.start:a.start + 1])
            for _ in range(a.count - 1):
                i = int(torch.argmax(anchor))
                selected.append(i)
                step = batchwise(f, f[i:i + 1])
                anchor = torch.min(torch.cat([anchor, step], dim=-1), dim=1).values.reshape(-1, 1)
            t2 = clock(a)
            return t1 - t0, t2 - t1, selected
        if a.distance == "expansion":
            norms = (f * f).sum(1)

            def dist(i):
                return (norms - 2.0 * (f @ f[i]) + norms[i]).clamp(min=0).sqrt()
        else:
            f = f.double()

            def dist(i):
                return ((f - f[i]) ** 2).sum(1).sqrt()

        selected = [a.start]
        min_d = dist(a.start)
        min_d[a.start] = -1.0
        for _ in range(a.count - 1):
            i = int(torch.argmax(min_d))
            selected.append(i)
            min_d = torch.minimum(min_d, dist(i))
            min_d[i] = -1.0
        t2 = clock(a)
    return t1 - t0, t2 - t1, selected


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)  # raw float32, row-major [rows, dims]
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--dims", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--proj", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--distance", choices=["reference", "expansion", "difference"], default="expansion")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    x = torch.from_numpy(np.fromfile(a.file, dtype=np.float32).reshape(a.rows, a.dims)).to(a.device)

    runs = [select(a, x) for _ in range(max(1, a.repeats))]
    runs.sort(key=lambda r: r[0] + r[1])
    project_s, select_s, selected = runs[len(runs) // 2]
    t0, t1, t2 = 0.0, project_s, project_s + select_s

    print(json.dumps({
        "projectMs": (t1 - t0) * 1e3,
        "selectMs": (t2 - t1) * 1e3,
        "ms": (t2 - t0) * 1e3,
        "runsMs": [(r[0] + r[1]) * 1e3 for r in runs],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": a.device,
        "selected": selected,
    }))


if __name__ == "__main__":
    main()
