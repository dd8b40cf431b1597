#!/usr/bin/python3
"""STPM and RD4AD trained in PyTorch (Python) on the teacher features imiad wrote, for bench/train.ts.

The architectures, losses, optimisers and maps are those of the official code (gdwang08/STFPM, hq-deng/RD4AD) and
of imiad's native/train/train.cc: STPM's ResNet-18-shaped student (stem + layers 1..3, torchvision init), loss
sum over layers of 0.5 / (h w) * MSE(sum) of channel-normalised features, SGD; RD4AD's one-class bottleneck
embedding + de_wide_resnet50_2 decoder, loss sum over layers of mean(1 - cos) of flattened features, Adam.
Reads a job JSON (argv[1]): shapes, file names, epochs, batch order per epoch, lr, threads, labels. Trains with the
same batches, times each epoch (the training steps only: the teacher's features come from the files), then scores
the test images: per-layer (1 - cos) maps upsampled to the image (STPM product, align_corners=False; RD4AD sum,
align_corners=True), scipy gaussian_filter sigma 4, image score = max. Prints JSON on its last line, with the CPU
seconds and page faults of the training loop and the process's peak resident memory (getrusage: the same counters
that imiad's side reads with process.resourceUsage() in its own child process, bench/train.ts)."""
import json
import resource
import sys
import time

import numpy as np
import scipy.ndimage as ndimage
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score


def conv(i, o, k, s, p):
    return nn.Conv2d(i, o, k, stride=s, padding=p, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, i, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = conv(i, planes, 3, stride, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, 1, 1), nn.BatchNorm2d(planes)
        self.downsample = nn.Sequential(conv(i, planes, 1, stride, 0), nn.BatchNorm2d(planes)) if stride != 1 or i != planes else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    def __init__(self, i, planes, stride, down):
        super().__init__()
        w = planes * 2
        self.conv1, self.bn1 = conv(i, w, 1, 1, 0), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = conv(w, w, 3, stride, 1), nn.BatchNorm2d(w)
        self.conv3, self.bn3 = conv(w, planes * 4, 1, 1, 0), nn.BatchNorm2d(planes * 4)
        self.downsample = nn.Sequential(conv(i, planes * 4, 1, stride, 0), nn.BatchNorm2d(planes * 4)) if down else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class DeBottleneck(nn.Module):
    def __init__(self, i, planes, stride, up):
        super().__init__()
        w = planes * 2
        self.conv1, self.bn1 = conv(i, w, 1, 1, 0), nn.BatchNorm2d(w)
        self.conv2 = nn.ConvTranspose2d(w, w, 2, stride=2, bias=False) if stride == 2 else conv(w, w, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3, self.bn3 = conv(w, planes * 4, 1, 1, 0), nn.BatchNorm2d(planes * 4)
        self.upsample = nn.Sequential(nn.ConvTranspose2d(i, planes * 4, 2, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)) if up else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.upsample(x) if self.upsample is not None else x))


class Student(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = conv(3, 64, 7, 2, 3), nn.BatchNorm2d(64)
        layers, i = [], 64
        for k, ch in enumerate(c):
            layers.append(nn.Sequential(BasicBlock(i, ch, 1 if k == 0 else 2), BasicBlock(ch, ch, 1)))
            i = ch
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        out = []
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out


class Reverse(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = conv(c[0], c[1], 3, 2, 1), nn.BatchNorm2d(c[1])
        self.conv2, self.bn2 = conv(c[1], c[2], 3, 2, 1), nn.BatchNorm2d(c[2])
        self.conv3, self.bn3 = conv(c[1], c[2], 3, 2, 1), nn.BatchNorm2d(c[2])
        planes = c[2] // 2
        self.bn_layer = nn.Sequential(Bottleneck(3 * c[2], planes, 2, True), *[Bottleneck(planes * 4, planes, 1, False) for _ in range(2)])
        self.inp = planes * 4

        def make(out, blocks):
            p = out // 4
            s = nn.Sequential(DeBottleneck(self.inp, p, 2, True), *[DeBottleneck(p * 4, p, 1, False) for _ in range(blocks - 1)])
            self.inp = p * 4
            return s

        self.de1, self.de2, self.de3 = make(c[2], 3), make(c[1], 4), make(c[0], 6)

    def forward(self, images, t):
        l1 = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(t[0]))))))
        l2 = F.relu(self.bn3(self.conv3(t[1])))
        e = self.bn_layer(torch.cat([l1, l2, t[2]], 1)).contiguous()
        a = self.de1(e)
        b = self.de2(a)
        return [self.de3(b), b, a]


def init(m):
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


def load(job, split):
    n = job[split]["n"]
    t = [torch.from_numpy(np.fromfile(job[split]["teacher"][i], dtype="<f4").reshape([n] + job["shapes"][i])) for i in range(3)]
    images = None
    if job[split].get("images"):
        images = torch.from_numpy(np.fromfile(job[split]["images"], dtype="<f4").reshape([n, 3, job["crop"], job["crop"]]))
    return images, t


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    kind = job["kind"]
    channels = [s[0] for s in job["shapes"]]
    net = Student(channels) if kind == "stpm" else Reverse(channels)
    init(net)
    if kind == "stpm":
        opt = torch.optim.SGD(net.parameters(), lr=job["lr"], momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=job["lr"], betas=(0.5, 0.999))
    images, teacher = load(job, "train")
    epoch_ms, losses = [], []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for order in job["orders"]:
        net.train()
        t0 = time.perf_counter()
        total, steps = 0.0, 0
        for s in range(0, len(order), job["batch"]):
            idx = torch.tensor(order[s : s + job["batch"]])
            t = [x[idx] for x in teacher]
            out = net(images[idx]) if kind == "stpm" else net(None, t)
            loss = 0
            for fs, ft in zip(out, t):
                if kind == "stpm":
                    h, w = ft.shape[2:]
                    loss = loss + (0.5 / (h * w)) * ((F.normalize(fs, dim=1) - F.normalize(ft, dim=1)) ** 2).sum()
                else:
                    n = ft.shape[0]
                    loss = loss + (1 - F.cosine_similarity(ft.reshape(n, -1), fs.reshape(n, -1), dim=1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss)
            steps += 1
        epoch_ms.append((time.perf_counter() - t0) * 1000)
        losses.append(total / steps)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    net.eval()
    images, teacher = load(job, "test")
    crop = job["crop"]
    scores = []
    with torch.no_grad():
        for i in range(job["test"]["n"]):
            t = [x[i : i + 1] for x in teacher]
            out = net(images[i : i + 1]) if kind == "stpm" else net(None, t)
            amap = torch.ones(1, 1, crop, crop) if kind == "stpm" else torch.zeros(1, 1, crop, crop)
            for fs, ft in zip(out, t):
                a = (1 - F.cosine_similarity(fs, ft, dim=1)).unsqueeze(1)
                a = F.interpolate(a, size=(crop, crop), mode="bilinear", align_corners=(kind == "rd4ad"))
                amap = amap * a if kind == "stpm" else amap + a
            scores.append(float(ndimage.gaussian_filter(amap[0, 0].numpy(), sigma=4).max()))
    auroc = float(roc_auc_score(job["labels"], scores))
    r2 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "torch": torch.__version__, "epoch_ms": epoch_ms, "losses": losses, "auroc": auroc, "threads": torch.get_num_threads(),
        "train_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "train_sys_s": r1.ru_stime - r0.ru_stime,
        "train_minflt": r1.ru_minflt - r0.ru_minflt, "cpu_s": r2.ru_utime + r2.ru_stime, "max_rss_kb": r2.ru_maxrss,
    }))


if __name__ == "__main__":
    main()
