"""PyTorch peer of imiad's RegAD anomaly maps (test/regad.test.ts): the official test() of MediaBrain-SJTU/RegAD
(train.py) on the weights imiad exported (state.bin) and the same support and test images:

- the support augmentations: the images, rot_img at +-pi/16 .. +-pi/4, translation_img at (+-0.1, +-0.1) and
  (+-0.2, +-0.2), hflip, grey (kornia's rgb_to_grayscale weights 0.299, 0.587, 0.114) and rotations by 90, 180 and
  270 degrees (kornia's rotate of a square image; torch.rot90 here: the set of the three is the same either way);
- the eval-mode STN forward with its inverse-warped stn{1,2,3}_output, utils/funcs.py embedding_concat, the
  per-position mean and torch.cov + 0.01 I, and mahalanobis_torch against torch.linalg.inv of the covariance.

The covariance, its inverse and the distances are computed in float64 here (the official: float32), so that the
comparison checks imiad's Woodbury form of the same distance rather than float32's rounding of a 448 x 448 inverse.
Prints the maps [n, h1, w1] (before upsampling and smoothing) as JSON on the last line.

usage: regad_maps_torch.py <dir> <threads>
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import layout  # noqa: E402
from regad_torch import ResNet, load_into, load_state, read_images  # noqa: E402


def get_rot_mat(theta):
    theta = torch.tensor(theta)
    return torch.tensor([[torch.cos(theta), -torch.sin(theta), 0], [torch.sin(theta), torch.cos(theta), 0]])


def get_translation_mat(a, b):
    return torch.tensor([[1, 0, a], [0, 1, b]])


def rot_img(x, theta):
    dtype = torch.FloatTensor
    rot_mat = get_rot_mat(theta)[None, ...].type(dtype).repeat(x.shape[0], 1, 1)
    grid = F.affine_grid(rot_mat, x.size()).type(dtype)
    return F.grid_sample(x, grid, padding_mode="reflection")


def translation_img(x, a, b):
    dtype = torch.FloatTensor
    rot_mat = get_translation_mat(a, b)[None, ...].type(dtype).repeat(x.shape[0], 1, 1)
    grid = F.affine_grid(rot_mat, x.size()).type(dtype)
    return F.grid_sample(x, grid, padding_mode="reflection")


def grey_img(x):
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (0.299 * r + 0.587 * g + 0.114 * b).repeat(1, 3, 1, 1)


def embedding_concat(x, y):
    B, C1, H1, W1 = x.size()
    _, C2, H2, W2 = y.size()
    s = int(H1 / H2)
    x = F.unfold(x, kernel_size=s, dilation=1, stride=s)
    x = x.view(B, C1, -1, H2, W2)
    z = torch.zeros(B, C1 + C2, x.size(2), H2, W2)
    for i in range(x.size(2)):
        z[:, :, i, :, :] = torch.cat((x[:, :, i, :, :], y), 1)
    z = z.view(B, -1, H2 * W2)
    return F.fold(z, kernel_size=s, output_size=(H1, W1), stride=s)


def embed(STN, images):
    with torch.no_grad():
        STN(images)
    e = STN.stn1_output
    for o in [STN.stn2_output, STN.stn3_output]:
        e = embedding_concat(e, o)
    return e


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    state = load_state(meta, folder)
    side = meta['side']
    STN = ResNet(BasicBlock, [2, 2, 2, 2], side)
    load_into(STN, {k[len('resnet.'):] if k.startswith('resnet.') else k: v for k, v in state.items()}, '')
    layout.apply(STN)
    STN.eval()
    support_img = read_images(folder, 'support.bin', (meta['shots'], 3, side, side))
    augment_support_img = support_img
    for angle in [-np.pi / 4, -3 * np.pi / 16, -np.pi / 8, -np.pi / 16, np.pi / 16, np.pi / 8, 3 * np.pi / 16, np.pi / 4]:
        augment_support_img = torch.cat([augment_support_img, rot_img(support_img, angle)], dim=0)
    for a, b in [(0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2), (0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1)]:
        augment_support_img = torch.cat([augment_support_img, translation_img(support_img, a, b)], dim=0)
    augment_support_img = torch.cat([augment_support_img, torch.flip(support_img, [3])], dim=0)
    augment_support_img = torch.cat([augment_support_img, grey_img(support_img)], dim=0)
    for k in [1, 2, 3]:
        augment_support_img = torch.cat([augment_support_img, torch.rot90(support_img, k, [2, 3])], dim=0)

    e = embed(STN, augment_support_img).double()
    B, C, H, W = e.size()
    e = e.view(B, C, H * W)
    mean = torch.mean(e, dim=0)
    I = torch.eye(C, dtype=torch.float64)
    cov_inv = [torch.linalg.inv(torch.cov(e[:, :, i].T) + 0.01 * I) for i in range(H * W)]

    test = embed(STN, read_images(folder, 'test.bin', (meta['tests'], 3, side, side))).double()
    T = test.size(0)
    test = test.view(T, C, H * W)
    dist = torch.zeros(T, H * W, dtype=torch.float64)
    for i in range(H * W):
        delta = test[:, :, i] - mean[:, i]
        dist[:, i] = torch.sqrt(torch.einsum('tc,cd,td->t', delta, cov_inv[i], delta))
    print(json.dumps({'maps': dist.view(T, H, W).tolist()}))


if __name__ == '__main__':
    main()
