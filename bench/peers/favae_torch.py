#!/usr/bin/python3
"""PyTorch peer of imiad's FAVAE (native/train/favae.cc), for bench/favae.ts and test/favae.test.ts.

The network is open-iad's models/favae/net_favae.py (NetFAVAE, Adapter_model; from its baselines/favae) and the
training step is arch/favae.py train_model, as written there: encoder -> (mu, logvar), reparameterise, decode, then
the decoder run a second time through feature_extractor(z, decode, ['10', '16', '22']) for the taps, the teacher's
taps compared in reverse order through the adapters, MSELoss(reduction='sum') on the reconstruction and on each tap,
+ kld_weight * 0.5 * sum(-1 - logvar + exp(logvar) + mu^2), Adam(lr, weight_decay). Two inputs differ from the
official loop and are passed in instead: the teacher's features (imiad's ONNX teacher computed them; the peer does
not run VGG16), and the reparameterisation noise, drawn from torch.Generator().manual_seed(seed ^ 0x7a3e5) with
torch.randn as imiad's engine draws it (the official uses the global generator through std.new().normal_()).

It loads imiad's initial weights by name (state.bin, official parameter names), trains on the same batches
(batch<k>.bin: images [n, 3, 128, 128] in [0, 1], then each teacher level), and prints the loss of every step and
its time as JSON on the last line. With `epochs` in meta.json it instead times whole epochs over the batches.

usage: favae_torch.py <dir> <threads>
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn


class DeFlatten(nn.Module):
    def __init__(self, zdim):
        super().__init__()
        self.zdim = zdim

    def forward(self, x):
        return x.view(x.shape[0], self.zdim, 1, 1)


class Split(nn.Module):
    def forward(self, x):
        mu, logvar = x.chunk(2, dim=1)
        return mu, logvar


class Adapter_model(nn.Module):
    def __init__(self, channel_in, channel_out):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channel_in, channel_out, kernel_size=1, stride=1), nn.ReLU(),
                                  nn.Conv2d(channel_out, channel_out, kernel_size=1, stride=1))

    def forward(self, x):
        return self.conv(x)


class NetFAVAE(nn.Module):
    """net_favae.NetFAVAE with the adapters' input channels given (the official: 128, 256, 512 in and out)."""

    def __init__(self, tap_channels, teacher_channels, input_channel=3, z_dim=100):
        super().__init__()
        self.z_dim = z_dim
        self.encode = nn.Sequential(
            nn.Conv2d(input_channel, 128, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(128), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(128, 128, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(128), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(128, 256, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(256), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(256, 256, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(256), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(256, 512, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(512, 512, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(512, 512, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(512, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(negative_slope=0.2),
            nn.Conv2d(32, 2 * z_dim, kernel_size=8, stride=1),
            nn.Flatten(),
            Split())
        self.decode = nn.Sequential(
            DeFlatten(z_dim),
            nn.ConvTranspose2d(z_dim, 32, kernel_size=8, stride=1), nn.BatchNorm2d(32), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(32, 512, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(512, 512, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(512, 512, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(512), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(512, 256, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(256), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(256, 256, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(256), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(256, 128, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(128), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(128, 128, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(128), nn.LeakyReLU(negative_slope=0.2),
            nn.ConvTranspose2d(128, input_channel, kernel_size=4, stride=2, padding=1),
            nn.Identity(),
            nn.Sigmoid())
        self.adapter = nn.ModuleList([Adapter_model(i, o) for i, o in zip(tap_channels, teacher_channels)])

    def reparameterize(self, mu, log_var, eps):
        if self.training:
            std = log_var.mul(0.5).exp_()
            return eps.mul(std).add_(mu)
        return mu

    def forward(self, x, eps):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)
        return z, self.decode(z), mu, logvar


def feature_extractor(x, model, target_layers):
    """open-iad models/favae/func.py feature_extractor."""
    target_activations = list()
    for name, module in model._modules.items():
        x = module(x)
        if name in target_layers:
            target_activations += [x]
    return target_activations, x


def read_floats(path, offset, count):
    return np.fromfile(path, dtype=np.float32, count=count, offset=offset * 4)


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    # Taps ordered by decoder index (deep first), as feature_extractor returns them; the teacher's levels shallow first.
    taps = [str(t) for t in meta['taps']]
    model = NetFAVAE(meta['tapChannels'], meta['teacherChannels'], z_dim=meta['zdim'])
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    offset = 0
    loaded = 0
    with torch.no_grad():
        for entry in meta['state']:
            count = int(np.prod(entry['shape']))
            own[entry['name']].copy_(torch.from_numpy(read_floats(os.path.join(folder, 'state.bin'), offset, count).reshape(entry['shape'])))
            offset += count
            loaded += 1
    optimizer = torch.optim.Adam(model.parameters(), lr=meta['lr'], weight_decay=meta['weightDecay'])
    generator = torch.Generator().manual_seed(meta['seed'] ^ 0x7a3e5)
    criterion = nn.MSELoss(reduction='sum')
    model.train()

    batch_files = sorted((f for f in os.listdir(folder) if f.startswith('batch')), key=lambda f: int(f[5:-4]))
    batches = []
    for name in batch_files:
        path = os.path.join(folder, name)
        n = meta['batchSizes'][len(batches)]
        parts, off = [], 0
        for shape in [[3, 128, 128]] + meta['teacherShapes']:
            count = n * int(np.prod(shape))
            parts.append(torch.from_numpy(read_floats(path, off, count).reshape([n] + shape)))
            off += count
        batches.append(parts)

    def step(parts):
        img, t_activations = parts[0], parts[1:]
        eps = torch.randn(img.shape[0], meta['zdim'], generator=generator)
        z, output, mu, log_var = model(img, eps)
        s_activations, _ = feature_extractor(z, model.decode, target_layers=taps)
        optimizer.zero_grad()
        mse_loss = criterion(output, img)
        kld_loss = 0.5 * torch.sum(-1 - log_var + torch.exp(log_var) + mu ** 2)
        for i in range(len(s_activations)):
            s_act = model.adapter[i](s_activations[-(i + 1)])
            mse_loss += criterion(s_act, t_activations[i])
        loss = mse_loss + meta['kld'] * kld_loss
        value = loss.sum().item()
        loss.backward()
        optimizer.step()
        return value

    losses, times = [], []
    epochs = meta.get('epochs', 0)
    if epochs:
        for _ in range(epochs):
            t0 = time.perf_counter()
            for parts in batches:
                losses.append(step(parts))
            times.append(time.perf_counter() - t0)
        print(json.dumps({'losses': losses, 'epochSeconds': times, 'torch': torch.__version__, 'loaded': loaded}))
    else:
        for parts in batches:
            t0 = time.perf_counter()
            losses.append(step(parts))
            times.append(time.perf_counter() - t0)
        print(json.dumps({'losses': losses, 'stepSeconds': times, 'torch': torch.__version__, 'loaded': loaded}))


if __name__ == '__main__':
    main()
