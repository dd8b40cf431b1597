#!/usr/bin/python3
"""PyTorch peer of imiad's CutPaste (bench/cutpaste.ts, test/cutpaste.test.ts).

The network is Runinho/pytorch-cutpaste's ProjectionNet (model.py): torchvision's resnet18 with fc = Identity (its
pooled 512-d output is the embedding), a head of [Linear, BatchNorm1d, ReLU] per width, then Linear(-> classes).
The training step is open-iad's _CutPaste.forward (arch/cutpaste.py) without its double softmax: Adam(lr, weight
decay) over every parameter, cross-entropy of the logits over the 3 views (labels 0, 1, 2, repeat_interleave),
backward, step, then CosineAnnealingWarmRestarts(T_0).step(epoch) after every batch. The density is
Runinho's GaussianDensityTorch (density.py): the mean and sklearn's LedoitWolf precision of the L2-normalised
eval-mode embeddings; the score is the Mahalanobis distance.

It loads the initial weights imiad exported (state.bin: imiad's names, which are this module's state-dict names),
trains on the same batches (batch<i>.bin, the views imiad drew), prints the loss of every step and the time of every
step as JSON on the last line; with calibrate.bin / eval.bin it also fits the density and scores the eval images.

usage: cutpaste_torch.py <dir>   (dir/meta.json says the shapes, the schedule and the threads)
"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from sklearn.covariance import LedoitWolf
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

import layout


class ProjectionNet(nn.Module):
    def __init__(self, head_layers, num_classes):
        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        last = 512
        layers = []
        for n in head_layers:
            layers += [nn.Linear(last, n), nn.BatchNorm1d(n), nn.ReLU(inplace=True)]
            last = n
        self.head = nn.Sequential(*layers)
        self.out = nn.Linear(last, num_classes)

    def forward(self, x):
        embeds = self.backbone(x)
        return embeds, self.out(self.head(embeds))


def read_floats(path, shape):
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(shape).copy())


def main():
    d = sys.argv[1]
    meta = json.load(open(os.path.join(d, "meta.json")))
    torch.set_num_threads(meta["threads"])
    torch.manual_seed(0)
    net = ProjectionNet(meta["headDims"], meta["classes"])
    raw = np.fromfile(os.path.join(d, "state.bin"), dtype="<f4")
    own = net.state_dict()
    state, at = {}, 0
    for entry in meta["state"]:
        n = int(np.prod(entry["shape"])) if entry["shape"] else 1
        t = torch.from_numpy(raw[at:at + n].copy()).reshape(entry["shape"])
        at += n
        if entry["name"] in own:
            state[entry["name"]] = t
        elif not entry["name"].startswith("density_"):
            raise SystemExit(f"imiad's tensor {entry['name']} has no counterpart in the peer's network")
    missing = [k for k, v in own.items() if k not in state and v.dtype == torch.float32]
    if missing:
        raise SystemExit(f"the exported state lacks {missing}")
    net.load_state_dict(state, strict=False)
    layout.apply(net.backbone)

    optimizer = torch.optim.Adam(net.parameters(), lr=meta["lr"], weight_decay=meta["weightDecay"])
    scheduler = CosineAnnealingWarmRestarts(optimizer, meta["t0"])
    classes = meta["classes"]
    losses, seconds, cpu, system = [], [], [], []
    for step, shape in enumerate(meta["batchShapes"]):
        x = read_floats(os.path.join(d, f"batch{step}.bin"), shape)
        labels = torch.arange(classes).repeat_interleave(shape[0] // classes)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        net.train()
        optimizer.zero_grad()
        _, logits = net(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        scheduler.step(step // meta["stepsPerEpoch"])
        seconds.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        system.append(r1.ru_stime - r0.ru_stime)
        losses.append(loss.item())

    result = {"losses": losses, "stepSeconds": seconds, "stepCpuSeconds": cpu, "stepSysSeconds": system, "torch": torch.__version__}
    if "calibrateShape" in meta:
        net.eval()
        with torch.no_grad():
            train = F.normalize(net(read_floats(os.path.join(d, "calibrate.bin"), meta["calibrateShape"]))[0], p=2, dim=1)
            test = F.normalize(net(read_floats(os.path.join(d, "eval.bin"), meta["evalShape"]))[0], p=2, dim=1)
        mean = torch.mean(train, axis=0)
        inv_cov = torch.Tensor(LedoitWolf().fit(train.cpu()).precision_)
        x_mu = test - mean.unsqueeze(0)
        result["scores"] = torch.einsum("im,mn,in->i", x_mu, inv_cov, x_mu).sqrt().tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
