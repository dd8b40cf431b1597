#!/usr/bin/python3
"""IGD trained in PyTorch (Python), for test/igd.test.ts (loss trajectories) and bench/train.ts (epoch times).

Written from the official code tianyu0207/IGD: the modules are p256/mvtec_module.py's (MyConvo2d, ConvMeanPool,
MeanPoolConv, DepthToSpace, UpSampleConv, ResidualBlock, twoin1Generator256, VisualDiscriminator256) with the image
side as a parameter (the official fixes DIM = 256 and the generator's 4 x 4 start; here side / 64 and the
discriminator's LayerNorm sides side / 2 .. side / 16), and without the generator's frozen torchvision ResNet-18
(`pretrain`): the job hands over its pooled output, so encoder(x) = ln11(features). The step, init_c, init_sigma and
poly_lr_scheduler are p256/ssim_main.py's; ms_ssim is pytorch_msssim's (VainF/pytorch-msssim 1.0, the library the
official imports), transcribed because Debian has no package of it. The alphas come from a torch.Generator seeded
with the job's seed (imiad's model draws them from a CPU generator seeded alike).

Reads a job JSON (argv[1]): side, channels, lr, steps (the poly schedule's length), seed, the files of the initial
weights (imiad's state: names, shapes, one float32 file), of the images [n, 3, side, side] and pooled features
[n, channels] (float32), `calibration` (index batches of the descriptor's passes), `batches` (index batches of the
steps), `epochs` (how many steps make an epoch, for the times), `refresh` (steps after which one descriptor pass
runs), threads. Prints JSON on its last line: the loss of each step (generator + discriminator), the epoch times
(milliseconds, training steps only), c and sigma, the CPU seconds of the training loop and the peak resident memory."""
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- p256/mvtec_module.py ----
class MyConvo2d(nn.Module):
    def __init__(self, input_dim, output_dim, kernel_size, he_init=True, stride=1, bias=True):
        super().__init__()
        self.he_init = he_init
        self.padding = int((kernel_size - 1) / 2)
        self.conv = nn.Conv2d(input_dim, output_dim, kernel_size, stride=stride, padding=self.padding, bias=bias)

    def forward(self, x):
        return self.conv(x)


class ConvMeanPool(nn.Module):
    def __init__(self, input_dim, output_dim, kernel_size, he_init=True):
        super().__init__()
        self.conv = MyConvo2d(input_dim, output_dim, kernel_size, he_init=he_init)

    def forward(self, x):
        output = self.conv(x)
        return (output[:, :, ::2, ::2] + output[:, :, 1::2, ::2] + output[:, :, ::2, 1::2] + output[:, :, 1::2, 1::2]) / 4


class MeanPoolConv(nn.Module):
    def __init__(self, input_dim, output_dim, kernel_size, he_init=True):
        super().__init__()
        self.conv = MyConvo2d(input_dim, output_dim, kernel_size, he_init=he_init)

    def forward(self, x):
        output = (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4
        return self.conv(output)


class DepthToSpace(nn.Module):
    def __init__(self, block_size):
        super().__init__()
        self.block_size = block_size
        self.block_size_sq = block_size * block_size

    def forward(self, x):
        output = x.permute(0, 2, 3, 1).contiguous()
        (batch_size, input_height, input_width, input_depth) = output.size()
        output_depth = int(input_depth / self.block_size_sq)
        output_width = int(input_width * self.block_size)
        output_height = int(input_height * self.block_size)
        t_1 = output.reshape(batch_size, input_height, input_width, self.block_size_sq, output_depth)
        spl = t_1.split(self.block_size, 3)
        stacks = [t_t.reshape(batch_size, input_height, output_width, output_depth) for t_t in spl]
        output = torch.stack(stacks, 0).transpose(0, 1).permute(0, 2, 1, 3, 4).reshape(batch_size, output_height, output_width, output_depth)
        return output.contiguous().permute(0, 3, 1, 2).contiguous()


class UpSampleConv(nn.Module):
    def __init__(self, input_dim, output_dim, kernel_size, he_init=True, bias=True):
        super().__init__()
        self.conv = MyConvo2d(input_dim, output_dim, kernel_size, he_init=he_init, bias=bias)
        self.depth_to_space = DepthToSpace(2)

    def forward(self, x):
        output = torch.cat((x, x, x, x), 1)
        output = self.depth_to_space(output)
        return self.conv(output)


class ResidualBlock(nn.Module):
    def __init__(self, input_dim, output_dim, kernel_size, resample=None, hw=256):
        super().__init__()
        self.input_dim, self.output_dim, self.resample = input_dim, output_dim, resample
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        if resample == 'down':
            self.bn1 = nn.LayerNorm([input_dim, hw, hw])
            self.bn2 = nn.LayerNorm([input_dim, hw, hw])
            self.conv_shortcut = MeanPoolConv(input_dim, output_dim, kernel_size=1, he_init=False)
            self.conv_1 = MyConvo2d(input_dim, input_dim, kernel_size=kernel_size, bias=False)
            self.conv_2 = ConvMeanPool(input_dim, output_dim, kernel_size=kernel_size)
        elif resample == 'up':
            self.bn1 = nn.BatchNorm2d(input_dim)
            self.bn2 = nn.BatchNorm2d(output_dim)
            self.conv_shortcut = UpSampleConv(input_dim, output_dim, kernel_size=1, he_init=False)
            self.conv_1 = UpSampleConv(input_dim, output_dim, kernel_size=kernel_size, bias=False)
            self.conv_2 = MyConvo2d(output_dim, output_dim, kernel_size=kernel_size)
        else:
            raise Exception('invalid resample value')

    def forward(self, x):
        shortcut = self.conv_shortcut(x)
        output = self.relu1(self.bn1(x))
        output = self.conv_1(output)
        output = self.relu2(self.bn2(output))
        output = self.conv_2(output)
        return shortcut + output


class Generator(nn.Module):
    """twoin1Generator256 (dim 64) without `pretrain`: encoder() takes the pooled features."""

    def __init__(self, side, channels, dim=64, latent_dimension=128):
        super().__init__()
        self.s0 = side // 64
        self.ln11 = nn.Linear(channels, latent_dimension)
        self.dim = dim
        self.ln1 = nn.Linear(latent_dimension, self.s0 * self.s0 * (8 * self.dim))
        self.up1 = UpSampleConv(8 * self.dim, 8 * self.dim, kernel_size=3)
        self.rb1 = ResidualBlock(8 * self.dim, 8 * self.dim, 3, resample='up')
        self.rb2 = ResidualBlock(8 * self.dim, 4 * self.dim, 3, resample='up')
        self.rb3 = ResidualBlock(4 * self.dim, 2 * self.dim, 3, resample='up')
        self.rb4 = ResidualBlock(2 * self.dim, 1 * self.dim, 3, resample='up')
        self.bn = nn.BatchNorm2d(self.dim)
        self.relu = nn.ReLU()
        self.up2 = UpSampleConv(self.dim, 3, kernel_size=5)

    def encoder(self, features):
        return self.ln11(features.view(features.shape[0], -1))

    def generate(self, x):
        output = self.ln1(x).view(-1, 8 * self.dim, self.s0, self.s0)
        output = self.up1(output)
        output = self.rb4(self.rb3(self.rb2(self.rb1(output))))
        output = self.relu(self.bn(output))
        return self.up2(output)

    def forward(self, features):
        return self.generate(self.encoder(features))


class Discriminator(nn.Module):
    """VisualDiscriminator256 (dim 64) at side `side`."""

    def __init__(self, side, dim=64):
        super().__init__()
        self.dim, self.side, self.s1 = dim, side, side // 64
        self.conv1 = MyConvo2d(3, self.dim, kernel_size=5, stride=2, he_init=False)
        self.rb1 = ResidualBlock(1 * self.dim, 2 * self.dim, 3, resample='down', hw=side // 2)
        self.rb2 = ResidualBlock(2 * self.dim, 4 * self.dim, 3, resample='down', hw=side // 4)
        self.rb3 = ResidualBlock(4 * self.dim, 8 * self.dim, 3, resample='down', hw=side // 8)
        self.rb4 = ResidualBlock(8 * self.dim, 8 * self.dim, 3, resample='down', hw=side // 16)
        self.conv2 = MyConvo2d(8 * self.dim, 8 * self.dim, kernel_size=3, stride=2, he_init=False)
        self.ln1 = nn.Linear(self.s1 * self.s1 * 8 * self.dim, 1)

    def forward(self, x):
        output = x.contiguous().view(-1, 3, self.side, self.side)
        output = self.conv1(output)
        output = self.rb4(self.rb3(self.rb2(self.rb1(output))))
        output = self.conv2(output)
        output = output.view(-1, self.s1 * self.s1 * 8 * self.dim)
        return self.ln1(output).view(-1)


# ---- pytorch_msssim 1.0 (ssim.py) ----
def _fspecial_gauss_1d(size, sigma):
    coords = torch.arange(size, dtype=torch.float)
    coords -= size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return g.unsqueeze(0).unsqueeze(0)


def gaussian_filter(input, win):
    C = input.shape[1]
    out = input
    for i, s in enumerate(input.shape[2:]):
        if s >= win.shape[-1]:
            out = F.conv2d(out, weight=win.transpose(2 + i, -1), stride=1, padding=0, groups=C)
    return out


def _ssim(X, Y, data_range, win, K=(0.01, 0.03)):
    K1, K2 = K
    compensation = 1.0
    C1 = (K1 * data_range) ** 2
    C2 = (K2 * data_range) ** 2
    win = win.to(X.device, dtype=X.dtype)
    mu1 = gaussian_filter(X, win)
    mu2 = gaussian_filter(Y, win)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = compensation * (gaussian_filter(X * X, win) - mu1_sq)
    sigma2_sq = compensation * (gaussian_filter(Y * Y, win) - mu2_sq)
    sigma12 = compensation * (gaussian_filter(X * Y, win) - mu1_mu2)
    cs_map = (2 * sigma12 + C2) / (sigma1_sq + sigma2_sq + C2)
    ssim_map = ((2 * mu1_mu2 + C1) / (mu1_sq + mu2_sq + C1)) * cs_map
    return torch.flatten(ssim_map, 2).mean(-1), torch.flatten(cs_map, 2).mean(-1)


def ms_ssim(X, Y, data_range=255, size_average=True, win_size=11, win_sigma=1.5, weights=None, K=(0.01, 0.03)):
    # The library asserts sides > (win_size - 1) * 2^4 = 160; imiad's tests train at 64 px, where its
    # gaussian_filter skips the sides below the window (as here).
    weights = X.new_tensor(weights if weights is not None else [0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    win = _fspecial_gauss_1d(win_size, win_sigma).repeat([X.shape[1]] + [1] * (len(X.shape) - 1))
    levels = weights.shape[0]
    mcs = []
    for i in range(levels):
        ssim_per_channel, cs = _ssim(X, Y, win=win, data_range=data_range, K=K)
        if i < levels - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in X.shape[2:]]
            X = F.avg_pool2d(X, kernel_size=2, padding=padding)
            Y = F.avg_pool2d(Y, kernel_size=2, padding=padding)
    ssim_per_channel = torch.relu(ssim_per_channel)
    mcs_and_ssim = torch.stack(mcs + [ssim_per_channel], dim=0)
    ms_ssim_val = torch.prod(mcs_and_ssim ** weights.view(-1, 1, 1), dim=0)
    return ms_ssim_val.mean() if size_average else ms_ssim_val.mean(1)


# ---- p256/ssim_main.py ----
msssim_weight = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
data_range = 2.1179 + 2.6400
l1_criterion = nn.L1Loss()


def poly_lr_scheduler(optimizer, init_lr, iter, lr_decay_iter=1, max_iter=0, power=0.9):
    if iter % lr_decay_iter or iter > max_iter:
        return optimizer
    lr = init_lr * (1 - iter / max_iter) ** power
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr
    return lr


def init_c(batches, net, eps=0.1):
    c = torch.zeros((1, net.ln11.out_features))
    net.eval()
    n_samples = 0
    with torch.no_grad():
        for features in batches:
            outputs = net.encoder(features)
            n_samples += outputs.shape[0]
            c += torch.sum(outputs, dim=0)
    c /= n_samples
    c[(abs(c) < eps) & (c < 0)] = -eps
    c[(abs(c) < eps) & (c > 0)] = eps
    return c


def init_sigma(batches, net, c, sig_f=1):
    net.eval()
    tmp_sigma = torch.tensor(0.0, dtype=torch.float)
    n_samples = 0
    with torch.no_grad():
        for features in batches:
            latent_z = net.encoder(features)
            tmp = torch.sum((latent_z - c) ** 2, dim=1)
            if (tmp.mean().detach() / sig_f) < 1:
                tmp_sigma += 1
            else:
                tmp_sigma += tmp.mean().detach() / sig_f
            n_samples += 1
    return tmp_sigma / n_samples


def main():
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job['threads'])
    side, channels = job['side'], job['channels']
    images = torch.from_numpy(np.fromfile(job['images'], dtype=np.float32).reshape(-1, 3, side, side))
    features = torch.from_numpy(np.fromfile(job['features'], dtype=np.float32).reshape(-1, channels))
    generator, discriminator = Generator(side, channels), Discriminator(side)
    flat = np.fromfile(job['weights'], dtype=np.float32)
    at = 0
    g_state, d_state = generator.state_dict(), discriminator.state_dict()
    with torch.no_grad():
        for name, shape in zip(job['names'], job['shapes']):
            size = int(np.prod(shape)) if shape else 1
            value = torch.from_numpy(flat[at:at + size].copy()).view(shape)
            at += size
            if name.startswith('generator.'):
                g_state[name[len('generator.'):]].copy_(value)
            elif name.startswith('discriminator.'):
                d_state[name[len('discriminator.'):]].copy_(value)
    LR = job['lr']
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=LR, betas=(0, 0.9), weight_decay=1e-6)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=(0, 0.9))
    generator.train()
    discriminator.train()
    calibration = [features[torch.tensor(b)] for b in job['calibration']]
    c = init_c(calibration, generator)
    sigma = init_sigma(calibration, generator, c)
    gen = torch.Generator().manual_seed(job['seed'])
    END_ITER = job['steps']
    refresh = set(job.get('refresh', []))
    losses, epoch_times = [], []
    per_epoch = job['epochs']
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for iteration, batch in enumerate(job['batches']):
        poly_lr_scheduler(optimizer_d, init_lr=LR, iter=iteration, max_iter=END_ITER)
        poly_lr_scheduler(optimizer_g, init_lr=LR, iter=iteration, max_iter=END_ITER)
        idx = torch.tensor(batch)
        real_data, feats = images[idx], features[idx]
        # --------------------- TRAIN E ------------------------
        optimizer_g.zero_grad()
        b = real_data.shape[0]
        latent_z = generator.encoder(feats)
        fake_data = generator.generate(latent_z)
        weight = 0.85
        ms_ssim_batch_wise = 1 - ms_ssim(real_data, fake_data, data_range=data_range, size_average=True, win_size=11, weights=msssim_weight)
        l1_batch_wise = l1_criterion(real_data, fake_data) / data_range
        ms_ssim_l1 = weight * ms_ssim_batch_wise + (1 - weight) * l1_batch_wise
        e1 = torch.flip(latent_z, dims=[0])
        alpha = torch.FloatTensor(b, 1).uniform_(0, 0.5, generator=gen)
        e2 = alpha * latent_z + (1 - alpha) * e1
        g2 = generator.generate(e2)
        reg_inter = torch.mean(discriminator(g2) ** 2)
        diff = (latent_z - c) ** 2
        dist = -1 * (torch.sum(diff, dim=1) / sigma)
        svdd_loss = torch.mean(1 - torch.exp(dist))
        encoder_loss = ms_ssim_l1 + svdd_loss + 0.1 * reg_inter
        encoder_loss.backward()
        optimizer_g.step()
        # --------------------- Discriminator ------------------------
        optimizer_d.zero_grad()
        g2 = generator.generate(e2).detach()
        fake_data = generator(feats).detach()
        d_loss_front = torch.mean((discriminator(g2) - alpha) ** 2)
        gamma = 0.2
        tmp = fake_data + gamma * (real_data - fake_data)
        d_loss_back = torch.mean(discriminator(tmp) ** 2)
        d_loss = d_loss_front + d_loss_back
        d_loss.backward()
        optimizer_d.step()
        losses.append(encoder_loss.item() + d_loss.item())
        if iteration in refresh:
            sigma = init_sigma(calibration, generator, c)
            c = init_c(calibration, generator)
        if (iteration + 1) % per_epoch == 0:
            epoch_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        'losses': losses,
        'epoch_ms': [1000 * t for t in epoch_times],
        'c': c.view(-1).tolist(),
        'sigma': float(sigma),
        'train_cpu_s': (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime),
        'max_rss_kb': u1.ru_maxrss,
    }))


if __name__ == '__main__':
    main()
