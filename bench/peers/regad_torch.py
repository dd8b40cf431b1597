"""PyTorch peer of imiad's RegAD (bench/regad.ts, test/regad.test.ts): the meta-training step of the official code
MediaBrain-SJTU/RegAD, written out from its files so that it runs on a CPU:

- models/stn.py: STNModule (mode rotation_scale) and the ResNet with stn1..stn3 after layer1..layer3, including the
  inverse-warped stn{1,2,3}_output it computes in every forward (np.linalg.inv of the detached thetas), with two
  changes that only make it run without CUDA: torch.zeros(device=x.device) for x.get_device(), and no .cuda();
- models/siamese.py: Encoder and Predictor;
- losses/norm_loss.py: CosLoss;
- train.py train(): the queries and the B x K supports in two forward calls, support features / K summed per query,
  CosLoss(p1, z2) / 2 + CosLoss(p2, z1) / 2, three SGD optimisers (lr, momentum 0.9) stepped after one backward.

It starts from the weights imiad exported (state.bin, imiad's names: resnet.* = the ResNet-18, stn1..3, enc, pred)
and trains on the same batches, printing the loss of every step and the time per step as JSON on the last line.

With a third argument `lean`, the forward skips the inverse-warped stn{1,2,3}_output, which training never reads
(imiad computes them only for the support set and the test images): the peer without that work, for a fairer time.

usage: regad_torch.py <dir> <threads> [lean]
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Variable
from torchvision.models.resnet import BasicBlock

import layout

N_PARAMS = {'rotation_scale': 3}


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class STNModule(nn.Module):
    def __init__(self, in_num, feat_size):
        super(STNModule, self).__init__()
        # The official: 56 // (4 * block_index) at 224 px; the side after the two max-pools at any size.
        self.feat_size = feat_size
        self.stn_mode = 'rotation_scale'
        self.stn_n_params = N_PARAMS[self.stn_mode]
        self.conv = nn.Sequential(
            conv3x3(in_planes=in_num, out_planes=64),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            conv3x3(in_planes=64, out_planes=16),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.fc = nn.Sequential(
            nn.Linear(in_features=16 * self.feat_size * self.feat_size, out_features=1024),
            nn.ReLU(True),
            nn.Linear(in_features=1024, out_features=self.stn_n_params),
        )
        self.fc[2].weight.data.fill_(0)
        self.fc[2].weight.data.zero_()
        self.fc[2].bias.data.copy_(torch.tensor([0, 1, 1], dtype=torch.float))

    def forward(self, x):
        batch_size = x.size(0)
        conv_x = self.conv(x)
        # reshape where the official has view: the same values, and it also takes channels-last features (layout.py).
        theta = self.fc(conv_x.reshape(batch_size, -1))
        theta1 = Variable(torch.zeros([batch_size, 2, 3], dtype=torch.float32, device=x.device), requires_grad=True)
        theta1 = theta1 + 0
        theta1[:, 0, 0] = 1.0
        theta1[:, 1, 1] = 1.0
        angle = theta[:, 0]
        theta1[:, 0, 0] = torch.cos(angle) * theta[:, 1]
        theta1[:, 0, 1] = -torch.sin(angle)
        theta1[:, 1, 0] = torch.sin(angle)
        theta1[:, 1, 1] = torch.cos(angle) * theta[:, 2]
        grid = F.affine_grid(theta1, torch.Size(x.shape))
        img_transform = F.grid_sample(x, grid, padding_mode="reflection")
        return img_transform, theta1


def half(s):
    return (s + 1) // 2


class ResNet(nn.Module):
    def __init__(self, block, layers, side):
        super(ResNet, self).__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        l1 = half(half(side))
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.stn1 = STNModule(64, half(half(l1)))
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.stn2 = STNModule(128, half(half(half(l1))))
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.stn3 = STNModule(256, half(half(half(half(l1)))))

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def _fixstn(self, x, theta):
        grid = F.affine_grid(theta, torch.Size(x.shape))
        return F.grid_sample(x, grid, padding_mode="reflection")

    lean = False

    def forward(self, x):
        if self.lean:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x, _ = self.stn1(self.layer1(x))
            x, _ = self.stn2(self.layer2(x))
            out, _ = self.stn3(self.layer3(x))
            return out
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x, theta1 = self.stn1(x)
        tmp = np.tile(np.array([0, 0, 1]), (x.shape[0], 1, 1)).astype(np.float32)
        fixthea1 = torch.from_numpy(np.linalg.inv(np.concatenate((theta1.detach().cpu().numpy(), tmp), axis=1))[:, :-1, :])
        self.stn1_output = self._fixstn(x.detach(), fixthea1)
        x = self.layer2(x)
        x, theta2 = self.stn2(x)
        tmp = np.tile(np.array([0, 0, 1]), (x.shape[0], 1, 1)).astype(np.float32)
        fixthea2 = torch.from_numpy(np.linalg.inv(np.concatenate((theta2.detach().cpu().numpy(), tmp), axis=1))[:, :-1, :])
        self.stn2_output = self._fixstn(self._fixstn(x.detach(), fixthea2), fixthea1)
        x = self.layer3(x)
        out, theta3 = self.stn3(x)
        tmp = np.tile(np.array([0, 0, 1]), (x.shape[0], 1, 1)).astype(np.float32)
        fixthea3 = torch.from_numpy(np.linalg.inv(np.concatenate((theta3.detach().cpu().numpy(), tmp), axis=1))[:, :-1, :])
        self.stn3_output = self._fixstn(self._fixstn(self._fixstn(out.detach(), fixthea3), fixthea2), fixthea1)
        return out


class Encoder(nn.Module):
    def __init__(self):
        super(Encoder, self).__init__()
        self.conv1 = conv1x1(in_planes=256, out_planes=256)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu1 = nn.ReLU()
        self.conv2 = conv1x1(in_planes=256, out_planes=256)
        self.bn2 = nn.BatchNorm2d(256)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(in_planes=256, out_planes=256)
        self.bn3 = nn.BatchNorm2d(256)
        self.relu3 = nn.ReLU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.relu2(x)
        out = self.conv3(x)
        return out


class Predictor(nn.Module):
    def __init__(self):
        super(Predictor, self).__init__()
        self.conv1 = conv1x1(in_planes=256, out_planes=256)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu1 = nn.ReLU()
        self.conv2 = conv1x1(in_planes=256, out_planes=256)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        out = self.conv2(x)
        return out


def CosLoss(data1, data2, Mean=True):
    data2 = data2.detach()
    cos = nn.CosineSimilarity(dim=1)
    if Mean:
        return -cos(data1, data2).mean()
    else:
        return -cos(data1, data2)


def load_state(meta, folder):
    raw = np.fromfile(os.path.join(folder, 'state.bin'), dtype=np.float32)
    out, offset = {}, 0
    for e in meta['state']:
        n = int(np.prod(e['shape'])) if e['shape'] else 1
        out[e['name']] = torch.from_numpy(raw[offset:offset + n].copy()).view(*e['shape'])
        offset += n
    return out


def load_into(module, state, prefix):
    """Copies imiad's tensors `prefix` + name into the module's float parameters and buffers; all must be present."""
    own = module.state_dict()
    missing = []
    for name, t in own.items():
        if t.dtype != torch.float32:
            continue  # num_batches_tracked
        key = prefix + name
        if key not in state:
            missing.append(key)
            continue
        t.copy_(state[key].view_as(t))
    if missing:
        raise SystemExit('state.bin lacks ' + ', '.join(missing))


def read_images(folder, name, shape):
    return torch.from_numpy(np.fromfile(os.path.join(folder, name), dtype=np.float32).reshape(shape))


def main():
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    with open(os.path.join(folder, 'meta.json')) as f:
        meta = json.load(f)
    state = load_state(meta, folder)
    side, batch, shots = meta['side'], meta['batch'], meta['shots']
    STN = ResNet(BasicBlock, [2, 2, 2, 2], side)
    STN.lean = len(sys.argv) > 3 and sys.argv[3] == 'lean'
    ENC = Encoder()
    PRED = Predictor()
    # imiad's resnet.layer* are the official's layer*; its stn1..3 sit on the same ResNet module.
    stn_state = {k[len('resnet.'):] if k.startswith('resnet.') else k: v for k, v in state.items()}
    load_into(STN, stn_state, '')
    layout.apply(STN)
    load_into(ENC, state, 'enc.')
    load_into(PRED, state, 'pred.')
    lr = meta['lr']
    STN_optimizer = torch.optim.SGD(STN.parameters(), lr=lr, momentum=0.9)
    ENC_optimizer = torch.optim.SGD(ENC.parameters(), lr=lr, momentum=0.9)
    PRED_optimizer = torch.optim.SGD(PRED.parameters(), lr=lr, momentum=0.9)
    STN.train()
    ENC.train()
    PRED.train()
    losses, times = [], []
    for step in range(meta['steps']):
        query_img = read_images(folder, 'query%d.bin' % step, (batch, 3, side, side))
        support_img = read_images(folder, 'support%d.bin' % step, (batch, shots, 3, side, side))
        t = time.perf_counter()
        STN_optimizer.zero_grad()
        ENC_optimizer.zero_grad()
        PRED_optimizer.zero_grad()
        query_feat = STN(query_img)
        B, K, C, H, W = support_img.shape
        support_img = support_img.view(B * K, C, H, W)
        support_feat = STN(support_img)
        support_feat = support_feat / K
        _, C, H, W = support_feat.shape
        support_feat = support_feat.view(B, K, C, H, W)
        support_feat = torch.sum(support_feat, dim=1)
        z1 = ENC(query_feat)
        z2 = ENC(support_feat)
        p1 = PRED(z1)
        p2 = PRED(z2)
        total_loss = CosLoss(p1, z2, Mean=True) / 2 + CosLoss(p2, z1, Mean=True) / 2
        total_loss.backward()
        STN_optimizer.step()
        ENC_optimizer.step()
        PRED_optimizer.step()
        loss = total_loss.item()
        times.append(time.perf_counter() - t)
        losses.append(loss)
    print(json.dumps({'losses': losses, 'stepSeconds': times, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
