#!/usr/bin/python3
"""DevNet trained in PyTorch with the official code's network and loop (Choubo/deviation-network-image), for
bench/deviation.ts and test/deviation.test.ts.

The network is the official SemiADNet (modeling/net.py: feature_resnet18 = torchvision's resnet18 through layer4,
Conv2d(512, 1, 1) head, top-10 % MIL score per scale, mean over 2 scales) and the training step the official
Trainer.train (Adam(model.parameters(), lr 2e-4, weight_decay 1e-5), StepLR(10, 0.1) stepped after each epoch,
clip_grad_norm_(1.0)), copied below. Two things come from the job instead of the official data pipeline, so that
both sides see the same numbers: the starting weights (imiad's exported state: the ONNX backbone's weights and the
head's initialisation) and the batches (imiad's balanced batches, already rotated and normalised, with their labels
and the deviation loss's 5000 N(0, 1) reference draws, which the official DeviationLoss draws inside forward).

Usage: devnet_torch.py JOB.json. The job names the state and batch files (raw little-endian float32); prints one JSON
line: losses per step, seconds per step and per epoch, the process's CPU seconds and peak resident memory."""
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models

import layout


class feature_resnet18(nn.Module):
    # modeling/networks/resnet18.py; the ImageNet download is replaced by the job's weights.
    def __init__(self):
        super(feature_resnet18, self).__init__()
        self.net = models.resnet18(weights=None)

    def forward(self, x):
        x = self.net.conv1(x)
        x = self.net.bn1(x)
        x = self.net.relu(x)
        x = self.net.maxpool(x)
        x = self.net.layer1(x)
        x = self.net.layer2(x)
        x = self.net.layer3(x)
        x = self.net.layer4(x)
        return x


class SemiADNet(nn.Module):
    # modeling/net.py, verbatim but for the backbone choice.
    def __init__(self, args):
        super(SemiADNet, self).__init__()
        self.args = args
        self.feature_extractor = feature_resnet18()
        self.conv = nn.Conv2d(in_channels=512, out_channels=1, kernel_size=1, padding=0)

    def forward(self, image):

        if self.args.n_scales == 0:
            raise ValueError

        image_pyramid = list()
        for s in range(self.args.n_scales):
            image_scaled = F.interpolate(image, size=self.args.img_size // (2 ** s)) if s > 0 else image
            feature = self.feature_extractor(image_scaled)

            scores = self.conv(feature)
            if self.args.topk > 0:
                scores = scores.view(int(scores.size(0)), -1)
                topk = max(int(scores.size(1) * self.args.topk), 1)
                scores = torch.topk(torch.abs(scores), topk, dim=1)[0]
                scores = torch.mean(scores, dim=1).view(-1, 1)
            else:
                scores = scores.view(int(scores.size(0)), -1)
                scores = torch.mean(scores, dim=1).view(-1, 1)

            image_pyramid.append(scores)
        scores = torch.cat(image_pyramid, dim=1)
        score = torch.mean(scores, dim=1)
        return score.view(-1, 1)


class DeviationLoss(nn.Module):
    # modeling/layers/deviation_loss.py; `ref` (the official draws it: torch.normal(0, 1, [5000])) comes with the batch.
    def __init__(self):
        super().__init__()

    def forward(self, y_pred, y_true, ref):
        confidence_margin = 5.
        dev = (y_pred - torch.mean(ref)) / torch.std(ref)
        inlier_loss = torch.abs(dev)
        outlier_loss = torch.abs((confidence_margin - dev).clamp_(min=0.))
        return torch.mean((1 - y_true) * inlier_loss + y_true * outlier_loss)


class Args:
    def __init__(self, size):
        self.n_scales = 2
        self.img_size = size
        self.topk = 0.1


def read(file, shape):
    return torch.from_numpy(np.fromfile(file, dtype="<f4").reshape(shape).copy())


def load_state(model, job, rename):
    """imiad's exported tensors into the model by name (`rename` maps imiad's names to the official module's)."""
    state = {}
    for entry in job["state"]:
        name = rename(entry["name"])
        if name is not None:
            state[name] = read(entry["file"], entry["shape"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # torchvision's unused classifier and the batch counters are the only tensors the job does not set.
    missing = [k for k in missing if not k.startswith("feature_extractor.net.fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit("state mismatch: missing %s, unexpected %s" % (missing, unexpected))


def imiad_name(name):
    if name.startswith("backbone."):
        return "feature_extractor.net." + name[len("backbone."):]
    if name in ("schedule_steps", "reference_set") or name.startswith("reference_mean_"):
        return None  # imiad's schedule position and DRA's test references: no official counterpart
    return name


def batches(job):
    for b in job["batches"]:
        n = b["n"]
        images = read(b["images"], [b["images_n"], 3, job["size"], job["size"]])
        labels = read(b["labels"], [n])
        reference = read(b["reference"], [b["reference_rows"], 5000])
        yield images, labels, reference


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    model = SemiADNet(Args(job["size"]))
    load_state(model, job, imiad_name)
    layout.apply(model.feature_extractor.net)
    criterion = DeviationLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=job["lr"], weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
    data = list(batches(job))
    losses, step_s, epoch_s = [], [], []
    steps = job["steps_per_epoch"]
    cpu0 = time.process_time()
    for epoch in range(job["epochs"]):
        # Trainer.train
        model.train()
        t_epoch = time.perf_counter()
        for i in range(steps):
            image, target, ref = data[(epoch * steps + i) % len(data)]
            t = time.perf_counter()
            output = model(image)
            loss = criterion(output, target.unsqueeze(1).float(), ref[0])
            optimizer.zero_grad()
            loss.backward()

            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step_s.append(time.perf_counter() - t)
        scheduler.step()
        epoch_s.append(time.perf_counter() - t_epoch)
    cpu = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"losses": losses, "step_s": step_s, "epoch_s": epoch_s, "train_cpu_s": cpu, "max_rss_kb": usage.ru_maxrss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
