"""Peer for bench/images.ts: PIL decode + bilinear resize (shorter side 256) + centre crop 224 + ImageNet
normalisation with numpy, one image at a time. Prints {"seconds": median} on its last line."""
import json
import os
import sys
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def prepare(path):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = 256, int(256 * h / w)
    else:
        nw, nh = int(256 * w / h), 256
    img = img.resize((nw, nh), Image.BILINEAR)
    left = int(round((nw - 224) / 2.0))
    top = int(round((nh - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    a = np.asarray(img, dtype=np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def main():
    folder, count, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))[:count]
    for f in files:
        prepare(f)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in files:
            prepare(f)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"seconds": times[len(times) // 2]}))


if __name__ == "__main__":
    main()
