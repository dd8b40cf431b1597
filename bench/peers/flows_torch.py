"""PyTorch peer of imiad's trained heads on frozen features (bench/flows.ts): FastFlow as gathierry/FastFlow builds
it and CFlow as gudovskiy/cflow-ad trains it, with FrEIA's AllInOneBlock of the pinned versions (1779d1f / cc5cf5e)
written out (FrEIA is not a dependency), and CFA as sungwool/CFA_for_anomaly_localization's utils/cfa.py (DSVDD,
Descriptor, CoordConv2d) computes its memory bank and loss, and CS-Flow as marco-rudolph/cs-flow's freia_funcs.py
(CrossConvolutions, ParallelPermute, parallel_glow_coupling_layer) and train.py train it. It starts from the weights imiad exported (state.bin) and trains on the same batches,
printing the loss of every step and the time per step as JSON on the last line.

usage: flows_torch.py <dir> <threads>
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class AllInOneBlock(nn.Module):
    """FrEIA AllInOneBlock before 2023-08 (no GIN, no householder, no pre-permutation), SOFTPLUS global affine."""

    def __init__(self, channels, rank, subnet, clamp, w_perm):
        # rank = len(dims_in[0]) - 1: 0 for CFlow's [n, c] fibers, 2 for FastFlow's [n, c, h, w] maps.
        super().__init__()
        self.input_rank = rank
        self.sum_dims = tuple(range(1, 2 + rank))
        self.splits = [channels - channels // 2, channels // 2]
        self.permute_function = {0: F.linear, 2: F.conv2d}[rank]
        self.clamp = clamp
        global_scale = 2.0 * np.log(np.exp(0.5 * 10.0 * 1.0) - 1)
        self.softplus = nn.Softplus(beta=0.5)
        self.global_scale_activation = lambda a: 0.1 * self.softplus(a)
        self.global_scale = nn.Parameter(torch.ones(1, channels, *([1] * rank)) * float(global_scale))
        self.global_offset = nn.Parameter(torch.zeros(1, channels, *([1] * rank)))
        self.w_perm = nn.Parameter(w_perm.view(channels, channels, *([1] * rank)), requires_grad=False)
        self.subnet = subnet

    def _permute(self, x):
        scale = self.global_scale_activation(self.global_scale)
        return self.permute_function(x * scale + self.global_offset, self.w_perm)

    def _affine(self, x, a):
        a = a * 0.1
        ch = x.shape[1]
        sub_jac = self.clamp * torch.tanh(a[:, :ch])
        return x * torch.exp(sub_jac) + a[:, ch:], torch.sum(sub_jac, dim=self.sum_dims)

    def forward(self, x, c=None):
        x1, x2 = torch.split(x, self.splits, dim=1)
        x1c = torch.cat([x1, c], 1) if c is not None else x1
        a1 = self.subnet(x1c)
        x2, j2 = self._affine(x2, a1)
        log_jac_det = j2
        x_out = torch.cat((x1, x2), 1)
        x_out = self._permute(x_out)
        n_pixels = x_out[0, :1].numel()
        log_jac_det = log_jac_det + n_pixels * torch.sum(torch.log(self.global_scale_activation(self.global_scale)))
        return x_out, log_jac_det


class Sequence(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, c=None):
        logdet = 0
        for b in self.blocks:
            x, j = b(x, c)
            logdet = logdet + j
        return x, logdet


def load_state(meta, folder):
    raw = np.fromfile(os.path.join(folder, 'state.bin'), dtype=np.float32)
    out, offset = {}, 0
    for e in meta['state']:
        n = int(np.prod(e['shape'])) if e['shape'] else 1
        out[e['name']] = torch.from_numpy(raw[offset:offset + n].copy()).view(*e['shape'])
        offset += n
    return out


def perm_matrix(state, prefix, channels):
    if prefix + 'w_perm' in state:
        return state[prefix + 'w_perm'].clone()
    w = torch.zeros(channels, channels)
    for i, j in enumerate(state[prefix + 'perm'].long().tolist()):
        w[i, j] = 1.0
    return w


def subnet_conv(cin, cout, k, hidden_ratio):
    hidden = int(cin * hidden_ratio)
    return nn.Sequential(nn.Conv2d(cin, hidden, k, padding='same'), nn.ReLU(), nn.Conv2d(hidden, cout, k, padding='same'))


def subnet_fc(cin, cout):
    return nn.Sequential(nn.Linear(cin, 2 * cin), nn.ReLU(), nn.Linear(2 * cin, cout))


def copy_block(block, state, prefix):
    with torch.no_grad():
        block.global_scale.copy_(state[prefix + 'global_scale'])
        block.global_offset.copy_(state[prefix + 'global_offset'])
        for i in (0, 2):
            block.subnet[i].weight.copy_(state[prefix + 'subnet.%d.weight' % i])
            block.subnet[i].bias.copy_(state[prefix + 'subnet.%d.bias' % i])


def read_batch(folder, step, shapes):
    raw = np.fromfile(os.path.join(folder, 'batch%s.bin' % step), dtype=np.float32)
    out, offset = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(torch.from_numpy(raw[offset:offset + n].copy()).view(*s))
        offset += n
    return out


def positionalencoding2d(D, H, W):
    P = torch.zeros(D, H, W)
    D = D // 2
    div_term = torch.exp(torch.arange(0.0, D, 2) * -(math.log(1e4) / D))
    pos_w = torch.arange(0.0, W).unsqueeze(1)
    pos_h = torch.arange(0.0, H).unsqueeze(1)
    P[0:D:2, :, :] = torch.sin(pos_w * div_term).transpose(0, 1).unsqueeze(1).repeat(1, H, 1)
    P[1:D:2, :, :] = torch.cos(pos_w * div_term).transpose(0, 1).unsqueeze(1).repeat(1, H, 1)
    P[D::2, :, :] = torch.sin(pos_h * div_term).transpose(0, 1).unsqueeze(2).repeat(1, 1, W)
    P[D + 1::2, :, :] = torch.cos(pos_h * div_term).transpose(0, 1).unsqueeze(2).repeat(1, 1, W)
    return P


def fastflow(meta, folder, state):
    blocks, clamp = meta['blocks'], meta['clamp']
    norms, flows = nn.ModuleList(), nn.ModuleList()
    for level, (c, h, w) in enumerate(meta['levels']):
        norm = nn.LayerNorm([c, h, w], elementwise_affine=True)
        with torch.no_grad():
            norm.weight.copy_(state['norms.%d.weight' % level])
            norm.bias.copy_(state['norms.%d.bias' % level])
        norms.append(norm)
        seq = []
        for i in range(blocks):
            k = 1 if i % 2 == 1 else 3
            prefix = 'flows.%d.%d.' % (level, i)
            b = AllInOneBlock(c, 2, subnet_conv(c - c // 2, 2 * (c // 2), k, 1.0), clamp, perm_matrix(state, prefix, c))
            copy_block(b, state, prefix)
            seq.append(b)
        flows.append(Sequence(seq))
    params = list(norms.parameters()) + [p for p in flows.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=meta['lr'], weight_decay=meta['weightDecay'])
    losses, times = [], []
    for step in range(meta['steps']):
        features = read_batch(folder, step, meta['batchShapes'])
        t = time.perf_counter()
        loss = 0
        for level, f in enumerate(features):
            out, logdet = flows[level](norms[level](f))
            loss = loss + torch.mean(0.5 * torch.sum(out ** 2, dim=(1, 2, 3)) - logdet)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return losses, times


def cflow(meta, folder, state):
    blocks, clamp, P, N = meta['blocks'], meta['clamp'], meta['condition'], meta['fibers']
    decoders = nn.ModuleList()
    for level, (c, h, w) in enumerate(meta['levels']):
        seq = []
        for i in range(blocks):
            prefix = 'flows.%d.%d.' % (level, i)
            b = AllInOneBlock(c, 0, subnet_fc(c - c // 2 + P, 2 * (c // 2)), clamp, perm_matrix(state, prefix, c))
            copy_block(b, state, prefix)
            seq.append(b)
        decoders.append(Sequence(seq))
    params = [p for p in decoders.parameters() if p.requires_grad]
    lr0 = meta['lr']
    optimizer = torch.optim.Adam(params, lr=lr0)
    steps_per_epoch, meta_epochs, sub_epochs, warm = meta['schedule']
    eta_min = lr0 * (0.1 ** 3)
    lr_warmup_from = lr0 / 10.0
    lr_warmup_to = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * warm / meta_epochs)) / 2
    generator = torch.Generator().manual_seed(meta['permSeed'])
    losses, times = [], []
    for step in range(meta['steps']):
        epoch = step // (steps_per_epoch * sub_epochs)
        # adjust_learning_rate at the meta-epoch, then warmup_learning_rate per batch (cflow-ad train.py).
        lr = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * epoch / meta_epochs)) / 2
        if epoch < warm:
            total = steps_per_epoch * sub_epochs
            p = (step % total + epoch * total) / (warm * total)
            lr = lr_warmup_from + p * (lr_warmup_to - lr_warmup_from)
        for g in optimizer.param_groups:
            g['lr'] = lr
        features = read_batch(folder, step, meta['batchShapes'])
        t = time.perf_counter()
        total_loss, count = 0.0, 0
        for level, e in enumerate(features):
            B, C, H, W = e.size()
            S = H * W
            E = B * S
            p = positionalencoding2d(P, H, W).unsqueeze(0).repeat(B, 1, 1, 1)
            c_r = p.reshape(B, P, S).transpose(1, 2).reshape(E, P)
            e_r = e.reshape(B, C, S).transpose(1, 2).reshape(E, C)
            perm = torch.randperm(E, generator=generator)
            n = min(N, E)
            for f in range(E // n):
                idx = torch.arange(f * n, (f + 1) * n)
                c_p, e_p = c_r[perm[idx]], e_r[perm[idx]]
                z, log_jac_det = decoders[level](e_p, c_p)
                logp = C * -0.9189385332046727 - 0.5 * torch.sum(z ** 2, 1) + log_jac_det
                loss = -F.logsigmoid(logp / C)
                optimizer.zero_grad()
                loss.mean().backward()
                optimizer.step()
                total_loss += loss.mean().item() * n
                count += n
        times.append(time.perf_counter() - t)
        losses.append(total_loss / count)
    return losses, times


class AddCoords(nn.Module):
    """utils/coordconv.py, rank 2, without r."""

    def forward(self, input_tensor):
        batch_size_shape, channel_in_shape, dim_y, dim_x = input_tensor.shape
        xx_ones = torch.ones([1, 1, 1, dim_x], dtype=torch.int32)
        yy_ones = torch.ones([1, 1, 1, dim_y], dtype=torch.int32)
        xx_range = torch.arange(dim_y, dtype=torch.int32)[None, None, :, None]
        yy_range = torch.arange(dim_x, dtype=torch.int32)[None, None, :, None]
        xx_channel = torch.matmul(xx_range, xx_ones)
        yy_channel = torch.matmul(yy_range, yy_ones).permute(0, 1, 3, 2)
        xx_channel = xx_channel.float() / (dim_y - 1) * 2 - 1
        yy_channel = yy_channel.float() / (dim_x - 1) * 2 - 1
        xx_channel = xx_channel.repeat(batch_size_shape, 1, 1, 1)
        yy_channel = yy_channel.repeat(batch_size_shape, 1, 1, 1)
        return torch.cat([input_tensor, xx_channel, yy_channel], dim=1)


def cfa(meta, folder, state):
    dim = sum(l[0] for l in meta['levels'])
    conv = nn.Conv2d(dim + 2, dim, 1)
    with torch.no_grad():
        conv.weight.copy_(state['descriptor.weight'])
        conv.bias.copy_(state['descriptor.bias'])
    r = nn.Parameter(state['r'].clone())
    coords = AddCoords()
    K, J, nu, alpha = 3, 3, 1e-3, 1e-1

    def descriptor(p):
        sample = None
        for o in p:
            o = F.avg_pool2d(F.leaky_relu(o), 3, 1, 1)
            sample = o if sample is None else torch.cat((sample, F.interpolate(o, sample.size(2), mode='bilinear')), dim=1)
        phi = conv(coords(sample))
        b, c, h, w = phi.shape
        return phi.reshape(b, c, h * w).transpose(1, 2)

    # _init_centroid over the calibration batches, with the untrained descriptor.
    C = 0
    with torch.no_grad():
        for i in range(meta['calibrationBatches']):
            phi = descriptor(read_batch(folder, 'c%d' % i, meta['batchShapes']))
            C = ((C * i) + torch.mean(phi, dim=0, keepdim=True)) / (i + 1)
    C = C[0].t().contiguous()  # [c, h w], as self.C after transpose(-1, -2)
    optimizer = torch.optim.AdamW(list(conv.parameters()) + [r], lr=meta['lr'], weight_decay=meta['weightDecay'], amsgrad=True)
    losses, times = [], []
    for step in range(meta['steps']):
        p = read_batch(folder, step, meta['batchShapes'])
        t = time.perf_counter()
        phi_p = descriptor(p)
        features = torch.sum(torch.pow(phi_p, 2), 2, keepdim=True)
        centers = torch.sum(torch.pow(C, 2), 0, keepdim=True)
        f_c = 2 * torch.matmul(phi_p, C)
        dist = features + centers - f_c
        dist = dist.topk(K + J, largest=False).values
        score = dist[:, :, :K] - r ** 2
        L_att = (1 / nu) * torch.mean(torch.max(torch.zeros_like(score), score))
        score = r ** 2 - dist[:, :, J:]
        L_rep = (1 / nu) * torch.mean(torch.max(torch.zeros_like(score), score - alpha))
        loss = L_att + L_rep
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return losses, times


class CrossConvolutions(nn.Module):
    def __init__(self, in_channels, channels, channels_hidden, kernel_size):
        super().__init__()
        pad = kernel_size // 2
        for i in range(3):
            setattr(self, 'conv_scale%d_0' % i, nn.Conv2d(in_channels, channels_hidden, kernel_size=kernel_size, padding=pad))
            setattr(self, 'conv_scale%d_1' % i, nn.Conv2d(channels_hidden, channels, kernel_size=kernel_size, padding=pad))
        for i in range(3):
            setattr(self, 'gamma%d' % i, nn.Parameter(torch.zeros(1)))
        self.upsample = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
        self.up_conv10 = nn.Conv2d(channels_hidden, channels, kernel_size=kernel_size, padding=pad)
        self.up_conv21 = nn.Conv2d(channels_hidden, channels, kernel_size=kernel_size, padding=pad)
        self.down_conv01 = nn.Conv2d(channels_hidden, channels, kernel_size=kernel_size, padding=pad, stride=2)
        self.down_conv12 = nn.Conv2d(channels_hidden, channels, kernel_size=kernel_size, padding=pad, stride=2)
        self.lr = nn.LeakyReLU(0.1)

    def forward(self, x0, x1, x2):
        y0 = self.lr(self.conv_scale0_0(x0))
        y1 = self.lr(self.conv_scale1_0(x1))
        y2 = self.lr(self.conv_scale2_0(x2))
        out0 = self.conv_scale0_1(y0)
        out1 = self.conv_scale1_1(y1)
        out2 = self.conv_scale2_1(y2)
        y1_up = self.up_conv10(self.upsample(y1))
        y2_up = self.up_conv21(self.upsample(y2))
        y0_down = self.down_conv01(y0)
        y1_down = self.down_conv12(y1)
        out0 = out0 + y1_up
        out1 = out1 + y0_down + y2_up
        out2 = out2 + y1_down
        return out0 * self.gamma0, out1 * self.gamma1, out2 * self.gamma2


class ParallelGlowCoupling(nn.Module):
    def __init__(self, channels, hidden, kernel, clamp, perms):
        super().__init__()
        self.split_len1 = channels // 2
        self.split_len2 = channels - channels // 2
        self.clamp = clamp
        self.perms = perms
        self.s1 = CrossConvolutions(self.split_len1, self.split_len2 * 2, hidden, kernel)
        self.s2 = CrossConvolutions(self.split_len2, self.split_len1 * 2, hidden, kernel)

    def log_e(self, s):
        return self.clamp * 0.636 * torch.atan(s / self.clamp)

    def e(self, s):
        return torch.exp(self.log_e(s))

    def forward(self, x):
        x = [x[i][:, self.perms[i]] for i in range(3)]  # ParallelPermute
        l1, l2 = self.split_len1, self.split_len2
        x01, x02 = x[0].narrow(1, 0, l1), x[0].narrow(1, l1, l2)
        x11, x12 = x[1].narrow(1, 0, l1), x[1].narrow(1, l1, l2)
        x21, x22 = x[2].narrow(1, 0, l1), x[2].narrow(1, l1, l2)
        r02, r12, r22 = self.s2(x02, x12, x22)
        s02, t02 = r02[:, :l1], r02[:, l1:]
        s12, t12 = r12[:, :l1], r12[:, l1:]
        s22, t22 = r22[:, :l1], r22[:, l1:]
        y01 = self.e(s02) * x01 + t02
        y11 = self.e(s12) * x11 + t12
        y21 = self.e(s22) * x21 + t22
        r01, r11, r21 = self.s1(y01, y11, y21)
        s01, t01 = r01[:, :l2], r01[:, l2:]
        s11, t11 = r11[:, :l2], r11[:, l2:]
        s21, t21 = r21[:, :l2], r21[:, l2:]
        y02 = self.e(s01) * x02 + t01
        y12 = self.e(s11) * x12 + t11
        y22 = self.e(s21) * x22 + t21
        y0 = torch.clamp(torch.cat((y01, y02), 1), -1e6, 1e6)
        y1 = torch.clamp(torch.cat((y11, y12), 1), -1e6, 1e6)
        y2 = torch.clamp(torch.cat((y21, y22), 1), -1e6, 1e6)
        jac0 = torch.sum(self.log_e(s01), dim=(1, 2, 3)) + torch.sum(self.log_e(s02), dim=(1, 2, 3))
        jac1 = torch.sum(self.log_e(s11), dim=(1, 2, 3)) + torch.sum(self.log_e(s12), dim=(1, 2, 3))
        jac2 = torch.sum(self.log_e(s21), dim=(1, 2, 3)) + torch.sum(self.log_e(s22), dim=(1, 2, 3))
        return [y0, y1, y2], [jac0, jac1, jac2]


def csflow(meta, folder, state):
    c = meta['levels'][0][0]
    blocks = nn.ModuleList()
    for k in range(meta['blocks']):
        prefix = 'blocks.%d.' % k
        perms = [state[prefix + 'perm%d' % i].long() for i in range(3)]
        b = ParallelGlowCoupling(c, meta['hidden'], meta['kernels'][k], meta['clamp'], perms)
        own = b.state_dict()
        b.load_state_dict({name: state[prefix + name] for name in own})
        blocks.append(b)
    optimizer = torch.optim.Adam(blocks.parameters(), lr=meta['lr'], eps=1e-04, weight_decay=meta['weightDecay'])
    losses, times = [], []
    for step in range(meta['steps']):
        x = read_batch(folder, step, meta['batchShapes'])
        t = time.perf_counter()
        jac = [0, 0, 0]
        for b in blocks:
            x, j = b(x)
            jac = [jac[i] + j[i] for i in range(3)]
        z = torch.cat([x[i].reshape(x[i].shape[0], -1) for i in range(3)], dim=1)
        loss = torch.mean(0.5 * torch.sum(z ** 2, dim=(1,)) - sum(jac)) / z.shape[1]  # train.py get_loss
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(blocks.parameters(), 1)
        optimizer.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return losses, times


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    state = load_state(meta, folder)
    losses, times = {'fastflow': fastflow, 'cflow': cflow, 'cfa': cfa, 'csflow': csflow}[meta['method']](meta, folder, state)
    print(json.dumps({'losses': losses, 'stepSeconds': times, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
