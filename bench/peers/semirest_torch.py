"""PyTorch peer of imiad's SemiREST transformer step (native/train/semirest.cc; bench/semirest.ts).

SemiREST (arXiv 2306.03492) has no public code: this is NOT an official implementation. It is a plain PyTorch
writing of the paper's description as docs/detectors-semirest.md fixes it (the same choices as imiad's): a Swin-like
stack of window-attention blocks (Swin's WindowAttention with its relative position bias, window_partition,
window_reverse, the shifted-window mask and cyclic roll of microsoft/Swin-Transformer's swin_transformer.py, without
dropout or drop-path) over a residual map embedded by Linear + LayerNorm, a LayerNorm + Linear(dim, 2) classifier
per block, a focal loss (gamma) against the block labels and AdamW. It serves for speed, and as a check that the
libtorch port computes what it says: from the weights imiad exported (state.bin, imiad's names) and the same batches
(batch<i>.bin: residuals [n, C, gh, gw], labels [n, 1, gh, gw]), it prints every step's loss, every step's time and
the loop's total as JSON on the last line.

usage: semirest_torch.py <dir> <threads>
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def window_partition(x, w):
    n, h, wd, c = x.shape
    x = x.view(n, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, w * w, c)


def window_reverse(windows, w, h, wd):
    n = int(windows.shape[0] / (h * wd / w / w))
    x = windows.view(n, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(n, h, wd, -1)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.dim, self.heads, self.window = dim, heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) * (2 * window - 1), heads))
        coords = torch.stack(torch.meshgrid([torch.arange(window), torch.arange(window)], indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        self.register_buffer('relative_position_index', rel.sum(-1), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift, hidden):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, mask, shift):
        n, h, w, c = x.shape
        y = self.norm1(x)
        if shift > 0:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), mask if shift > 0 else None), self.window, h, w)
        if shift > 0:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + y
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def shift_mask(h, w, window, shift):
    img = torch.zeros((1, h, w, 1))
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    mw = window_partition(img, window).squeeze(-1)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class SemiRestNet(nn.Module):
    def __init__(self, channels, dim, depth, heads, window, mlp_ratio):
        super().__init__()
        self.window = window
        self.embed = nn.Linear(channels, dim)
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = []
        for i in range(depth):
            b = SwinBlock(dim, heads, window, window // 2 if i % 2 == 1 else 0, mlp_ratio * dim)
            self.add_module('block%d' % i, b)
            self.blocks.append(b)
        self.head_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, r):
        h, w = r.shape[2], r.shape[3]
        win = self.window
        ph, pw = (win - h % win) % win, (win - w % win) % win
        x = self.embed_norm(self.embed(r.permute(0, 2, 3, 1)))
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        mask = None
        for b in self.blocks:
            shift = win // 2 if b.shift > 0 and (hp > win or wp > win) else 0
            if shift > 0 and mask is None:
                mask = shift_mask(hp, wp, win, shift)
            x = b(x, mask, shift)
        x = x[:, :h, :w, :]
        return self.head(self.head_norm(x))


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    dim, depth, heads, window, mlp = meta['arch']
    c, gh, gw, n = meta['channels'], meta['grid'], meta['grid'], meta['batch']
    net = SemiRestNet(c, dim, depth, heads, window, mlp)
    raw = np.fromfile(os.path.join(folder, 'state.bin'), dtype=np.float32)
    state, offset = {}, 0
    for e in meta['state']:
        size = int(np.prod(e['shape'])) if e['shape'] else 1
        state[e['name']] = torch.from_numpy(raw[offset:offset + size].copy()).view(e['shape'])
        offset += size
    missing = net.load_state_dict(state, strict=True)
    del missing
    optimizer = torch.optim.AdamW(net.parameters(), lr=meta['lr'], betas=(0.9, 0.999), weight_decay=meta['weightDecay'])
    gamma = meta['gamma']
    batches = []
    for i in range(meta['steps']):
        b = np.fromfile(os.path.join(folder, 'batch%d.bin' % i), dtype=np.float32)
        r = torch.from_numpy(b[:n * c * gh * gw].copy()).view(n, c, gh, gw)
        y = torch.from_numpy(b[n * c * gh * gw:].copy()).view(n, gh, gw)
        batches.append((r, y))
    net.train()
    losses, times = [], []
    t0 = time.perf_counter()
    for r, y in batches:
        t = time.perf_counter()
        logp = torch.log_softmax(net(r), -1)
        lp = torch.where(y > 0.5, logp[..., 1], logp[..., 0])
        loss = (-(1 - lp.exp()).pow(gamma) * lp).mean() if gamma > 0 else (-lp).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    print(json.dumps({'losses': losses, 'stepSeconds': times, 'loopSeconds': total, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
