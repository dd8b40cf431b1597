"""PyTorch peer of imiad's BGAD (bench/bgad.ts), following the official xcyao00/BGAD training engine
(engines/bgad_fas_train_engine.py train_meta_epoch with --focal_weighting, losses/losses.py, utils/model_utils.py's
adjust_learning_rate + warmup_learning_rate) on CFlow's conditional decoders (models/fc_flow.py
conditional_flow_model: FrEIA's AllInOneBlock of the pinned version, written out in flows_torch.py). It starts from
the weights imiad exported (state.bin) and trains on the same feature batches and masks, with the fiber shuffles
drawn from a generator seeded as imiad's, printing every step's loss and time as JSON on the last line.

Departures, both about bookkeeping, not the maths:
- The loss recorded for a chunk whose anomalous fibers all lie below the abnormal boundary: the official loss is then
  NaN (the mean of an empty tensor; its gradient is the same as without that term, and the official loop skips the
  NaN in its running mean); this records the loss without the empty term, as imiad reports it.
- The warm-up counts the real batches per sub-epoch (`batches` in meta.json); the official engine counts
  len([normal_loader, train_loader]) = 2.

usage: bgad_torch.py <dir> <threads>
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from flows_torch import AllInOneBlock, Sequence, copy_block, load_state, perm_matrix, positionalencoding2d, read_batch, subnet_fc

GCONST = -0.9189385332046727  # ln(1 / sqrt(2 pi))


def logp_per_dim(C, z, logdet):
    # utils.get_logp, then / dim as the engine does
    return (C * GCONST - 0.5 * torch.sum(z ** 2, 1) + logdet) / C


def focal_normal(l, normalizer=10.0, gamma=0.5, alpha=11.7):
    q = l / normalizer
    w = alpha * (1 - torch.exp(q)).pow(gamma) * torch.abs(q)
    out = torch.zeros_like(w)
    keep = q > -0.2
    out[keep] = 1.0
    out[~keep] = w[~keep]
    return out


def focal_abnormal(l, normalizer=10.0, gamma=2.0, alpha=0.53):
    q = l / normalizer
    w = alpha * (1 + torch.exp(q)).pow(gamma) / torch.abs(q)
    out = torch.zeros_like(w)
    low = q <= -1.0
    out[low] = 1.0
    out[~low] = w[~low]
    return out


def boundaries(l, m, beta, tau, normalizer):
    # get_logp_boundary: the beta-quantile (by sorted position) of the normal log-likelihoods
    normal = l[m == 0].detach()
    k = int(((m == 0).sum() * beta).item())
    b_n = normal[torch.sort(normal)[1][k]] / normalizer
    return b_n, b_n - tau


def semi_push_pull(l, m, b_n, b_a, normalizer, weights):
    # calculate_bg_spp_loss with focal weights; returns the two means (the second may be over nothing)
    q = l / normalizer
    qn, qa = q[m == 0], q[m == 1]
    inside_n, inside_a = qn <= b_n, qa >= b_a
    loss_n = (b_n - qn[inside_n]) * weights[m == 0][inside_n]
    loss_a = (qa[inside_a] - b_a) * weights[m == 1][inside_a]
    return loss_n.mean(), loss_a.mean(), loss_a.numel()


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    state = load_state(meta, folder)
    blocks, clamp, P, N = meta['blocks'], meta['clamp'], meta['condition'], meta['fibers']
    beta, tau, normalizer, lam = meta['beta'], meta['tau'], meta['normalizer'], meta['lambda']
    decoders = []
    for level, (c, h, w) in enumerate(meta['levels']):
        seq = []
        for i in range(blocks):
            prefix = 'flows.%d.%d.' % (level, i)
            b = AllInOneBlock(c, 0, subnet_fc(c - c // 2 + P, 2 * (c // 2)), clamp, perm_matrix(state, prefix, c))
            copy_block(b, state, prefix)
            seq.append(b)
        decoders.append(Sequence(seq))
    params = []
    for d in decoders:
        params += [p for p in d.parameters() if p.requires_grad]
    lr0 = meta['lr']
    optimizer = torch.optim.Adam(params, lr=lr0)
    meta_epochs, sub_epochs, warm = meta['metaEpochs'], meta['subEpochs'], 2
    eta_min = lr0 * (0.1 ** 3)
    warm_from = lr0 / 10.0
    warm_to = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * warm / meta_epochs)) / 2
    generator = torch.Generator().manual_seed(meta['permSeed'])
    size = meta['size']
    losses, times = [], []
    for step in range(meta['steps']):
        epoch, batch_id, per_sub = meta['epochOfStep'][step], meta['batchOfStep'][step], meta['batches'][step]
        # adjust_learning_rate at the meta-epoch, warmup_learning_rate per batch
        lr = eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * epoch / meta_epochs)) / 2
        if epoch < warm:
            total = per_sub * sub_epochs
            p = (batch_id + epoch * total) / (warm * total)
            lr = warm_from + p * (warm_to - warm_from)
        for g in optimizer.param_groups:
            g['lr'] = lr
        features = read_batch(folder, step, meta['batchShapes'])
        bs = meta['batchShapes'][0][0]
        if meta['hasMask'][step]:
            raw = np.fromfile(os.path.join(folder, 'mask%d.bin' % step), dtype=np.float32)
            mask = torch.from_numpy(raw.copy()).view(bs, 1, size, size)
        else:
            mask = torch.zeros(bs, 1, size, size)
        t = time.perf_counter()
        total_loss, count = 0.0, 0
        for level, e in enumerate(features):
            _, dim, h, w = e.size()
            m_all = F.interpolate(mask, size=(h, w), mode='nearest').squeeze(1).reshape(-1)
            e = e.permute(0, 2, 3, 1).reshape(-1, dim)
            pos = positionalencoding2d(P, h, w).unsqueeze(0).repeat(bs, 1, 1, 1).permute(0, 2, 3, 1).reshape(-1, P)
            perm = torch.randperm(bs * h * w, generator=generator)
            for k in range(bs * h * w // N):
                idx = perm[torch.arange(k * N, (k + 1) * N)]
                e_b, p_b, m_b = e[idx], pos[idx], m_all[idx]
                z, log_jac_det = decoders[level](e_b, p_b)
                l = logp_per_dim(dim, z, log_jac_det)
                if epoch == 0:
                    if m_b.sum() != 0:
                        continue
                    loss = -F.logsigmoid(l).mean()
                    recorded = loss.item()
                elif m_b.sum() == 0:
                    loss = (-F.logsigmoid(l) * focal_normal(l.detach())).mean()
                    recorded = loss.item()
                else:
                    ld = l.detach()
                    w_n, w_a = focal_normal(ld[m_b == 0]), focal_abnormal(ld[m_b == 1])
                    weights = w_n.new_zeros(ld.shape)
                    weights[m_b == 0] = w_n
                    weights[m_b == 1] = w_a
                    loss_ml = (-F.logsigmoid(l[m_b == 0]) * w_n).mean()
                    b_n, b_a = boundaries(l, m_b, beta, tau, normalizer)
                    loss_n, loss_a, n_a = semi_push_pull(l, m_b, b_n, b_a, normalizer, weights)
                    loss = loss_ml + lam * (loss_n + loss_a)
                    recorded = (loss_ml + lam * (loss_n + (loss_a if n_a > 0 else 0.0))).item()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += recorded * N
                count += N
        times.append(time.perf_counter() - t)
        losses.append(total_loss / count if count else 0.0)
    print(json.dumps({'losses': losses, 'stepSeconds': times, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
