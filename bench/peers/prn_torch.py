"""PyTorch peer of imiad's PRN head (native/train/prn.cc; bench/prn.ts, test/prn.test.ts).

Written from the reference implementation xcyao00/PRNet (no official PRN code exists): models/prnet.py (PRNet.forward
after the encoder: prototype matching, residuals, ms_fuser1 on features and residuals, concatenation, the
multi-size attention module, ms_fuser2, the decoder), models/modules.py (MultiScaleFusion, UpsampleConv),
models/attention.py (MultiSizeAttentionModule, MultiSizeAttention with depthwise Conv1d projections and einsum
attention, ResidualBlock), utils.py (get_prototype_features with F.pairwise_distance, get_residual_features with
mse_loss(reduction='none')), losses/focal_loss.py (FocalLoss alpha 0.5, gamma 4, smooth 1e-5 over [1 - p, p]),
losses/smooth_l1_loss.py (beta 1, mean) and train.py's step (loss1 + 5 * loss2, Adam(lr, weight_decay), zero_grad,
backward, step). The modules keep the reference's parameter names, so imiad's exported state loads as a state dict.
Deviation, as in imiad: the patch sides of the attention are max(1, h // 2^i) (the reference's h // 8 is 0 below
256 px inputs), and the number of attention layers per level is read from the job (the reference's 3 by default).

The frozen encoder is not run here: the job holds the backbone's layer 1..4 features of every batch (imiad's ONNX
ResNet-18), its masks, the initial weights and the k-means prototypes, all exported by imiad (state.bin). The peer
trains from them and prints the loss and time of every step and the loop's total as JSON on the last line.

usage: prn_torch.py <dir> <threads>
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class UpsampleConv(nn.Module):
    def __init__(self, cin, cout, scale):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=scale, mode='bilinear', align_corners=True)
        self.conv = nn.Conv2d(cin, cout, kernel_size=1, stride=1)

    def forward(self, x):
        return self.conv(self.upsample(x))


class MultiScaleFusion(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.l2_to_l1 = UpsampleConv(c[1], c[0], 2)
        self.l3_to_l1 = UpsampleConv(c[2], c[0], 4)
        self.l1_to_l2 = nn.Conv2d(c[0], c[1], kernel_size=3, stride=2, padding=1, groups=c[0])
        self.l3_to_l2 = UpsampleConv(c[2], c[1], 2)
        self.l1_to_l3 = nn.Conv2d(c[0], c[2], kernel_size=5, stride=4, padding=2, groups=c[0])
        self.l2_to_l3 = nn.Conv2d(c[1], c[2], kernel_size=3, stride=2, padding=1, groups=c[1])

    def forward(self, x1, x2, x3):
        y1 = x1 + self.l2_to_l1(x2) + self.l3_to_l1(x3)
        y2 = x2 + self.l1_to_l2(x1) + self.l3_to_l2(x3)
        y3 = x3 + self.l1_to_l3(x1) + self.l2_to_l3(x2)
        return y1, y2, y3


class ResidualBlock(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride=1, padding=1)
        self.norm1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Conv2d(cin, c, 1, stride=1, padding=0)

    def forward(self, x):
        identity = self.downsample(x)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        y += identity
        return self.relu(y)


class MultiSizeAttention(nn.Module):
    def __init__(self, c, height):
        super().__init__()
        self.c = c
        self.sizes = [max(1, height // 2 ** i) for i in range(4)]
        for i, p in enumerate(self.sizes):
            d = c * p * p
            for name in ('q', 'k', 'v'):
                setattr(self, '%s_proj%d' % (name, i + 1), nn.Conv1d(d, d, kernel_size=1, groups=d))
        self.residual_block = ResidualBlock(4 * c, c)

    @staticmethod
    def patchify(x, p, c):
        n, h = x.shape[0], x.shape[2] // p
        y = x.reshape(n, c, h, p, h, p)
        y = torch.einsum('nchpwq->nhwcpq', y)
        return y.reshape(n, h * h, c * p * p)

    @staticmethod
    def unpatchify(x, p, c):
        n, h = x.shape[0], int(x.shape[1] ** .5)
        y = x.reshape(n, h, h, c, p, p)
        y = torch.einsum('nhwcpq->nchpwq', y)
        return y.reshape(n, c, h * p, h * p)

    def forward(self, x):
        outs = []
        for i, p in enumerate(self.sizes):
            t = self.patchify(x, p, self.c).permute(0, 2, 1).contiguous()  # (B, d, L)
            q = getattr(self, 'q_proj%d' % (i + 1))(t).permute(0, 2, 1)
            k = getattr(self, 'k_proj%d' % (i + 1))(t).permute(0, 2, 1)
            v = getattr(self, 'v_proj%d' % (i + 1))(t).permute(0, 2, 1)
            a = torch.softmax(torch.einsum('ble,bse->bls', q, k) * (1 / (self.c * p * p)), dim=-1)
            outs.append(self.unpatchify(torch.einsum('bls,bsd->bld', a, v), p, self.c))
        return self.residual_block(torch.cat(outs, dim=1))


class MultiSizeAttentionModule(nn.Module):
    def __init__(self, channels, heights, layers):
        super().__init__()
        self.layer1_msa = nn.Sequential(*[MultiSizeAttention(channels[0], heights[0]) for _ in range(layers)])
        self.layer2_msa = nn.Sequential(*[MultiSizeAttention(channels[1], heights[1]) for _ in range(layers)])
        self.layer3_msa = nn.Sequential(*[MultiSizeAttention(channels[2], heights[2]) for _ in range(layers)])

    def forward(self, f):
        return self.layer1_msa(f[0]), self.layer2_msa(f[1]), self.layer3_msa(f[2])


def up_block(cin, cout, scale):
    return nn.Sequential(nn.Upsample(scale_factor=scale, mode='bilinear', align_corners=True),
                         nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PRNetHead(nn.Module):
    """PRNet without its encoder: forward takes the encoder's 4 levels and the prototypes."""

    def __init__(self, c, heights, layers):
        super().__init__()
        self.ms_fuser1 = MultiScaleFusion(c[:3])
        doubled = [2 * x for x in c[:3]]
        self.ms_fuser2 = MultiScaleFusion(doubled)
        self.attn_module = MultiSizeAttentionModule(doubled, heights[:3], layers)
        self.up4_to_3 = up_block(c[3], c[2], 2)
        self.conv_block3 = conv_block(3 * c[2], c[2])
        self.up3_to_2 = up_block(c[2], c[1], 2)
        self.conv_block2 = conv_block(3 * c[1], c[1])
        self.up2_to_1 = up_block(c[1], c[0], 2)
        self.conv_block1 = conv_block(3 * c[0], c[0])
        self.up1_to_0 = up_block(c[0], c[0], 4)
        self.conv_out = nn.Conv2d(c[0], 1, kernel_size=3, padding=1)

    def forward(self, levels, protos):
        layer4 = levels[3]
        feats = levels[:3]
        matched = []
        for f, p in zip(feats, protos):  # utils.get_prototype_features
            b, k = f.shape[0], p.shape[0]
            fr = f.unsqueeze(1).expand(b, k, *f.shape[1:]).reshape(b * k, -1)
            pr = p.unsqueeze(0).expand(b, k, *p.shape[1:]).reshape(b * k, -1)
            dist = torch.stack(F.pairwise_distance(fr, pr, p=2).chunk(b), dim=0)
            matched.append(p[torch.argmin(dist, dim=1)])
        residuals = [F.mse_loss(f, p, reduction='none') for f, p in zip(feats, matched)]
        feats = self.ms_fuser1(*feats)
        residuals = self.ms_fuser1(*residuals)
        joined = [torch.cat([f, r], dim=1) for f, r in zip(feats, residuals)]
        fused = self.ms_fuser2(*self.attn_module(joined))
        x = self.conv_block3(torch.cat([fused[2], self.up4_to_3(layer4)], dim=1))
        x = self.conv_block2(torch.cat([fused[1], self.up3_to_2(x)], dim=1))
        x = self.conv_block1(torch.cat([fused[0], self.up2_to_1(x)], dim=1))
        return self.conv_out(self.up1_to_0(x))


def focal_loss(prob2, mask, alpha=0.5, gamma=4, smooth=1e-5):
    """losses/focal_loss.py FocalLoss(alpha=0.5, gamma=4) on [1 - p, p] (float alpha: both classes weigh 0.5)."""
    n_class = prob2.shape[1]
    logit = prob2.view(prob2.size(0), n_class, -1).permute(0, 2, 1).contiguous().view(-1, n_class)
    target = torch.squeeze(mask, 1).reshape(-1, 1)
    weights = torch.ones(n_class, 1) * (1 - alpha)
    weights[0] = alpha
    idx = target.long()
    key = torch.zeros(target.size(0), n_class).scatter_(1, idx, 1)
    key = torch.clamp(key, smooth / (n_class - 1), 1.0 - smooth)
    pt = (key * logit).sum(1) + smooth
    a = torch.squeeze(weights[idx])
    return (-1 * a * torch.pow(1 - pt, gamma) * pt.log()).mean()


def smooth_l1(pred, target, beta=1.0):
    diff = torch.abs(pred - target)
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta).mean()


def read_floats(path):
    return np.fromfile(path, dtype=np.float32)


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    raw = read_floats(os.path.join(folder, 'state.bin'))
    state, offset = {}, 0
    for e in meta['state']:
        n = int(np.prod(e['shape'])) if e['shape'] else 1
        state[e['name']] = torch.from_numpy(raw[offset:offset + n].copy()).view(*e['shape'])
        offset += n
    c, h = meta['channels'], meta['sides']
    model = PRNetHead(c, h, meta['attentionLayers'])
    protos = [state.pop('proto%d' % (i + 1)) for i in range(3)]
    state.pop('prototypes_fitted')
    own = model.state_dict()
    for k in own:
        if k.endswith('num_batches_tracked'):
            state[k] = own[k]
    missing, extra = set(own) - set(state), set(state) - set(own)
    if missing or extra:
        raise SystemExit('state mismatch: missing %s, unexpected %s' % (sorted(missing)[:5], sorted(extra)[:5]))
    model.load_state_dict(state)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=meta['lr'], weight_decay=meta['weightDecay'])
    n, s = meta['batch'], meta['size']
    batches = []
    for i in range(meta['steps']):
        data = read_floats(os.path.join(folder, 'batch%d.bin' % i))
        o, levels = 0, []
        for ch, side in zip(c, h):
            m = n * ch * side * side
            levels.append(torch.from_numpy(data[o:o + m].copy()).view(n, ch, side, side))
            o += m
        mask = torch.from_numpy(data[o:o + n * s * s].copy()).view(n, 1, s, s)
        batches.append((levels, mask))
    losses, times = [], []
    t0 = time.perf_counter()
    for levels, mask in batches:
        t = time.perf_counter()
        logits = model(levels, protos)
        scores = torch.sigmoid(logits)
        loss1 = smooth_l1(scores, mask)
        loss2 = focal_loss(torch.cat([1 - scores, scores], dim=1), mask)
        loss = loss1 + meta['focalWeight'] * loss2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    print(json.dumps({'losses': losses, 'stepSeconds': times, 'loopSeconds': total, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
