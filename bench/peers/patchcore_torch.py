#!/usr/bin/python3
"""PatchCore inference in torch + faiss, the way amazon-science/patchcore-inspection computes it, for
bench/patchcore.ts. Reads a job JSON (argv[1]) naming the ONNX graph exported by imiad as JSON + float32 weights,
the layers' tensor names, the memory bank (float32 [rows, dims]) and the test images. Per image and stage it times:
decode (PIL + torchvision Resize/CenterCrop/Normalize), backbone (the graph's ops in torch, stopping after the last
requested layer as the reference's forward hook does), embed (patchify 3x3, resize to the first layer's grid,
adaptive average pooling to 1024 and 1024), k-NN (faiss IndexFlatL2, k = 1, squared distances as the reference's
scores), post (bilinear upsampling to the crop, scipy gaussian_filter sigma 4). Prints JSON on its last line."""
import json
import sys
import time

import faiss
import numpy as np
import scipy
import scipy.ndimage as ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms


def attrs_of(node):
    return {a["name"]: a["value"] for a in node["attributes"]}


def load_graph(job):
    with open(job["graph"]) as f:
        graph = json.load(f)
    blob = np.fromfile(job["weights"], dtype="<f4")
    weights = {}
    for t in graph["initializers"]:
        n = int(np.prod(t["dims"])) if t["dims"] else 1
        weights[t["name"]] = torch.from_numpy(blob[t["offset"] : t["offset"] + n].reshape(t["dims"]).copy())
    return graph, weights


def run_graph(graph, weights, x, wanted):
    env = {graph["input"]: x}
    env.update(weights)
    left = set(wanted)
    for node in graph["nodes"]:
        a = attrs_of(node)
        ins = [env[i] if i else None for i in node["inputs"]]
        op = node["op"]
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            y = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, stride=a.get("strides", [1, 1]),
                         padding=(pads[0], pads[1]), dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
        elif op == "Relu":
            y = F.relu(ins[0])
        elif op == "Add":
            y = ins[0] + ins[1]
        elif op == "MaxPool":
            pads = a.get("pads", [0, 0, 0, 0])
            y = F.max_pool2d(ins[0], a["kernel_shape"], stride=a.get("strides", [1, 1]), padding=(pads[0], pads[1]),
                             ceil_mode=bool(a.get("ceil_mode", 0)))
        elif op == "BatchNormalization":
            y = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], training=False, eps=a.get("epsilon", 1e-5))
        elif op == "Identity":
            y = ins[0]
        else:
            raise SystemExit(f"unsupported op {op}")
        env[node["outputs"][0]] = y
        left.discard(node["outputs"][0])
        if not left:
            break
    return [env[w] for w in wanted]


def patchify(f, p=3):
    # torch Unfold with zero padding, as the reference's PatchMaker: [B, h*w, C, p, p] and the grid shape.
    b, c, h, w = f.shape
    u = F.unfold(f, kernel_size=p, stride=1, padding=(p - 1) // 2)
    u = u.reshape(b, c, p, p, -1).permute(0, 4, 1, 2, 3)
    return u, (h, w)


def embed(feats, pretrain=1024, target=1024):
    patches = [patchify(f) for f in feats]
    ref = patches[0][1]
    out = [patches[0][0]]
    for u, (h, w) in patches[1:]:
        b = u.shape[0]
        u = u.reshape(b, h, w, *u.shape[2:])
        u = u.permute(0, -3, -2, -1, 1, 2)
        s = u.shape
        u = u.reshape(-1, h, w)
        u = F.interpolate(u.unsqueeze(1), size=ref, mode="bilinear", align_corners=False).squeeze(1)
        u = u.reshape(*s[:-2], ref[0], ref[1]).permute(0, -2, -1, 1, 2, 3)
        u = u.reshape(b, -1, *u.shape[-3:])
        out.append(u)
    rows = [x.reshape(-1, *x.shape[-3:]) for x in out]
    pooled = [F.adaptive_avg_pool1d(r.reshape(len(r), 1, -1), pretrain).squeeze(1) for r in rows]
    stacked = torch.stack(pooled, dim=1)
    agg = F.adaptive_avg_pool1d(stacked.reshape(len(stacked), 1, -1), target)
    return agg.reshape(len(agg), -1), ref


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    threads = job["threads"]
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    graph, weights = load_graph(job)
    dims = job["dims"]
    bank = np.fromfile(job["bank"], dtype="<f4").reshape(-1, dims)
    index = faiss.IndexFlatL2(dims)
    index.add(bank)
    crop = job["cropSize"]
    tf = transforms.Compose([
        transforms.Resize(job["imageSize"]),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    times = {k: [] for k in ("decode", "backbone", "embed", "knn", "post")}
    scores = []
    with torch.no_grad():
        for path in job["images"]:
            t0 = time.perf_counter()
            x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
            t1 = time.perf_counter()
            feats = run_graph(graph, weights, x, job["tensors"])
            t2 = time.perf_counter()
            e, (h, w) = embed(feats)
            t3 = time.perf_counter()
            d, _ = index.search(e.numpy().astype(np.float32), 1)
            patch = d[:, 0]
            score = float(patch.max())
            t4 = time.perf_counter()
            m = torch.from_numpy(patch.reshape(1, 1, h, w))
            m = F.interpolate(m, size=(crop, crop), mode="bilinear", align_corners=False)
            m = ndimage.gaussian_filter(m[0, 0].numpy(), sigma=4)
            t5 = time.perf_counter()
            scores.append(score)
            for k, a, b in (("decode", t0, t1), ("backbone", t1, t2), ("embed", t2, t3), ("knn", t3, t4), ("post", t4, t5)):
                times[k].append((b - a) * 1000.0)
    print(json.dumps({"scores": scores, "times": times, "threads": threads, "torch": torch.__version__, "faiss": faiss.__version__,
                      "scipy": scipy.__version__}))


if __name__ == "__main__":
    main()
