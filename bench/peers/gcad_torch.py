#!/usr/bin/python3
"""GCAD (Bergmann et al., IJCV 2022, section 5) in PyTorch, for bench/gcad.ts and test/gcad.test.ts.

No official code exists, so this peer is written from the paper's text and from the choices imiad documents in
docs/detectors-gcad.md (the same choices, written independently of native/train/gcad.cc): teacher features
normalised per channel with their mean and standard deviation over the training images (standard deviations below
1e-3 x their mean over the channels floored there), deeper teacher levels upsampled bilinearly to the first level's
grid and concatenated; a local student (conv 4x4/2 3->64->128->256, conv 3x3 256->256, conv 1x1 -> D, ReLU between)
and a global auto-encoder (conv 4x4/2 3->32->32->64->64->64, conv to a 1x1xB code; bilinear upsampling to ceil(g/8),
ceil(g/4), ceil(g/2), g, each followed by conv 3x3 -> 64 and ReLU, then conv 3x3 64->64, ReLU, conv 3x3 64->D) both
regress the normalised features; loss = MSE(local) + MSE(global); one Adam over both. Map statistics: mean and
standard deviation of each branch's channel-mean squared error over every grid position of the validation images.

It computes the teacher statistics itself from the training images (and reports how far imiad's exported ones are
from them), loads the networks' initial weights from imiad's state file, trains on the same batches (indices into
the same training files), then computes the map statistics. Reads a job JSON (argv[1]); prints JSON on its last
line: the loss of every step, the time of every step and epoch, the statistics, CPU seconds of the training loop
and peak resident memory (getrusage).

usage: gcad_torch.py <job.json>
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


def read_f32(path, shape):
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).copy()).view(*shape)


def resize(x, h, w):
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    return F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)


class LocalStudent(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(128, 256, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, d, 1))

    def forward(self, x):
        return self.net(x)


class GlobalAutoencoder(nn.Module):
    def __init__(self, d, bottleneck, image, grid):
        super().__init__()
        side = list(image)
        for _ in range(5):
            side = [s // 2 for s in side]
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, bottleneck, tuple(side)))
        self.decoder = nn.ModuleList([nn.Conv2d(bottleneck, 64, 3, 1, 1)] + [nn.Conv2d(64, 64, 3, 1, 1) for _ in range(4)] + [nn.Conv2d(64, d, 3, 1, 1)])
        self.sizes = [(-(-grid[0] // f), -(-grid[1] // f)) for f in (8, 4, 2, 1)]

    def forward(self, x):
        h = self.encoder(x)
        for i, (sh, sw) in enumerate(self.sizes):
            h = F.relu(self.decoder[i](resize(h, sh, sw)))
        h = F.relu(self.decoder[4](h))
        return self.decoder[5](h)


class Gcad(nn.Module):
    def __init__(self, d, bottleneck, image, grid):
        super().__init__()
        self.local = LocalStudent(d)
        self.glob = GlobalAutoencoder(d, bottleneck, image, grid)
        self.grid = grid

    def target(self, teacher, mean, std):
        parts, offset = [], 0
        for t in teacher:
            c = t.shape[1]
            z = (t - mean[offset:offset + c].view(1, c, 1, 1)) / std[offset:offset + c].view(1, c, 1, 1)
            parts.append(resize(z, *self.grid))
            offset += c
        return torch.cat(parts, 1)

    def forward(self, x):
        return resize(self.local(x), *self.grid), self.glob(x)


def teacher_statistics(levels):
    """Per channel over every image and position of each level, in float64."""
    means, stds = [], []
    for t in levels:
        x = t.double().transpose(0, 1).reshape(t.shape[1], -1)
        m = x.mean(1)
        means.append(m)
        stds.append(((x - m.unsqueeze(1)) ** 2).mean(1).sqrt())
    mean, std = torch.cat(means), torch.cat(stds)
    floor = 1e-3 * std.mean().item()
    std = std.clamp_min(floor) if floor > 0 else torch.ones_like(std)
    return mean.float(), std.float()


def main():
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job['threads'])
    torch.use_deterministic_algorithms(True)
    folder = os.path.dirname(os.path.abspath(sys.argv[1]))

    def data(split):
        s = job[split]
        n = s['n']
        images = read_f32(os.path.join(folder, s['images']), [n, 3, *job['image']])
        teacher = [read_f32(os.path.join(folder, f), [n, *shape]) for f, shape in zip(s['teacher'], job['shapes'])]
        return images, teacher

    images, teacher = data('train')
    d = sum(s[0] for s in job['shapes'])
    model = Gcad(d, job['bottleneck'], job['image'], job['grid'])
    raw = np.fromfile(os.path.join(folder, job['state']), dtype=np.float32)
    state, offset = {}, 0
    for e in job['stateNames']:
        n = int(np.prod(e['shape']))
        state[e['name']] = torch.from_numpy(raw[offset:offset + n].copy()).view(*e['shape'])
        offset += n
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[name.replace('glob.', 'global.', 1)])
    mean, std = teacher_statistics(teacher)
    stat_diff = {
        'teacher_mean_max_abs_diff': (mean - state['teacher_mean']).abs().max().item(),
        'teacher_std_max_rel_diff': ((std - state['teacher_std']).abs() / std).max().item(),
    }

    optimizer = torch.optim.Adam(model.parameters(), lr=job['lr'], betas=(0.9, 0.999), weight_decay=job['weightDecay'])
    losses, step_seconds, epoch_ms = [], [], []
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    model.train()
    for epoch in job['epochs']:
        t_epoch = time.perf_counter()
        for batch in epoch:
            idx = torch.tensor(batch, dtype=torch.long)
            t = time.perf_counter()
            x = images.index_select(0, idx)
            with torch.no_grad():
                target = model.target([lv.index_select(0, idx) for lv in teacher], mean, std)
            local, glob = model(x)
            loss = F.mse_loss(local, target) + F.mse_loss(glob, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step_seconds.append(time.perf_counter() - t)
        epoch_ms.append((time.perf_counter() - t_epoch) * 1000)
    u1 = resource.getrusage(resource.RUSAGE_SELF)

    map_mean, map_std = None, None
    if job.get('validation'):
        v_images, v_teacher = data('validation')
        model.eval()
        with torch.no_grad():
            target = model.target(v_teacher, mean, std)
            local, glob = model(v_images)
            maps = [((b - target) ** 2).mean(1).double().flatten() for b in (local, glob)]
        map_mean = [m.mean().item() for m in maps]
        map_std = [((m - m.mean()) ** 2).mean().sqrt().item() for m in maps]
    u2 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        'losses': losses,
        'step_seconds': step_seconds,
        'epoch_ms': epoch_ms,
        'map_mean': map_mean,
        'map_std': map_std,
        **stat_diff,
        'train_cpu_s': (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime),
        'cpu_s': u2.ru_utime + u2.ru_stime,
        'max_rss_kb': u2.ru_maxrss,
        'torch': torch.__version__,
    }))


if __name__ == '__main__':
    main()
