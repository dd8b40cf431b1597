#!/usr/bin/env python3
"""Peer for bench/knn.ts and `imiad bench knn` (lib/bench/knn.ts): faiss IndexFlatL2 on the same data, timed in the
same run.

usage: knn_faiss.py BANK.f32 ROWS_LIST DIMS QUERIES.f32 NQ K_LIST REPEATS OUT_DIR [cpu|gpu]
With gpu, the index is copied to GPU 0 (faiss-gpu: faiss.index_cpu_to_gpu) and the searches run there.
BANK.f32 holds max(ROWS_LIST) rows; each bank size uses its first rows, as the benchmark does. For each (rows, k)
the median wall and CPU (all threads) time of REPEATS searches after one warm-up search is reported, and the indices (int32, [NQ, k]) are
written to OUT_DIR/faiss_<rows>_<k>.i32 so that the benchmark can check they are the same as imiad's.
Prints one JSON line last.
"""
import json
import os
import statistics
import sys
import time

import faiss
import numpy as np


def main() -> None:
    bank_file, rows_list, dims, queries_file, nq, k_list, repeats, out_dir = sys.argv[1:9]
    gpu = len(sys.argv) > 9 and sys.argv[9] == "gpu"
    dims, nq, repeats = int(dims), int(nq), int(repeats)
    rows_list = [int(r) for r in rows_list.split(",")]
    k_list = [int(k) for k in k_list.split(",")]
    bank = np.fromfile(bank_file, dtype=np.float32).reshape(-1, dims)
    queries = np.fromfile(queries_file, dtype=np.float32).reshape(nq, dims)
    results = []
    for rows in rows_list:
        t0 = time.perf_counter()
        index = faiss.IndexFlatL2(dims)
        if gpu:
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.add(np.ascontiguousarray(bank[:rows]))
        add_ms = (time.perf_counter() - t0) * 1e3
        for k in k_list:
            index.search(queries, k)
            times, cpu_times = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                _, indices = index.search(queries, k)
                times.append((time.perf_counter() - t0) * 1e3)
                cpu_times.append((time.process_time() - c0) * 1e3)
            out = os.path.join(out_dir, f"faiss_{rows}_{k}.i32")
            indices.astype(np.int32).tofile(out)
            results.append({"rows": rows, "k": k, "ms": statistics.median(times),
                            "cpuMs": statistics.median(cpu_times), "addMs": add_ms, "indicesFile": out})
    print(json.dumps({"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(),
                      "openblasCore": openblas_core(), "gpu": gpu, "results": results}))


def openblas_core() -> str:
    """The kernel set OpenBLAS dispatched to (faiss's sgemm runs on it), or 'unknown'."""
    try:
        import ctypes
        lib = ctypes.CDLL("libblas.so.3")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return "unknown"


if __name__ == "__main__":
    main()
