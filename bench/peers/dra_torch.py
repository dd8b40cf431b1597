#!/usr/bin/python3
"""DRA trained in PyTorch with the official code's network and loop (Choubo/DRA), for bench/deviation.ts and
test/deviation.test.ts.

The network is the official DRA (modeling/net.py: torchvision's resnet18 through layer4; HolisticHead, PlainHead x 2,
CompositeHead; 2 scales; nRef = 5 reference images at the front of every batch) and the training step the official
Trainer.training (scheduler.step() at the start of each epoch, generate_target, the sum of the four deviation losses,
Adam(model.parameters(), lr 2e-4, weight_decay 1e-5), clip_grad_norm_(1.0)), copied below. The starting weights and
the batches come from the job (imiad's exported state; its balanced batches with the reference images in front,
CutMix pseudo-anomalies labelled 2, rotated and normalised, and one row of 5000 N(0, 1) reference draws per loss
term, which the official DeviationLoss draws inside forward), so that both sides see the same numbers.

Usage: dra_torch.py JOB.json (the job format of devnet_torch.py); prints one JSON line as devnet_torch.py does."""
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models

import layout

from devnet_torch import DeviationLoss, batches, imiad_name, load_state


class FeatureRESNET18(nn.Module):
    # modeling/networks/resnet18.py; the ImageNet download is replaced by the job's weights.
    def __init__(self):
        super(FeatureRESNET18, self).__init__()
        self.net = models.resnet18(weights=None)

    def forward(self, x):
        x = self.net.conv1(x)
        x = self.net.bn1(x)
        x = self.net.relu(x)
        x = self.net.maxpool(x)
        x = self.net.layer1(x)
        x = self.net.layer2(x)
        x = self.net.layer3(x)
        x = self.net.layer4(x)
        return x


# modeling/net.py, verbatim but for the backbone choice.
class HolisticHead(nn.Module):
    def __init__(self, in_dim, dropout=0):
        super(HolisticHead, self).__init__()
        self.fc1 = nn.Linear(in_dim, 256)
        self.fc2 = nn.Linear(256, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = x.view(x.size(0), -1)
        x = self.drop(F.relu(self.fc1(x)))
        x = self.fc2(x)
        return torch.abs(x)


class PlainHead(nn.Module):
    def __init__(self, in_dim, topk_rate=0.1):
        super(PlainHead, self).__init__()
        self.scoring = nn.Conv2d(in_channels=in_dim, out_channels=1, kernel_size=1, padding=0)
        self.topk_rate = topk_rate

    def forward(self, x):
        x = self.scoring(x)
        x = x.view(int(x.size(0)), -1)
        topk = max(int(x.size(1) * self.topk_rate), 1)
        x = torch.topk(torch.abs(x), topk, dim=1)[0]
        x = torch.mean(x, dim=1).view(-1, 1)
        return x


class CompositeHead(PlainHead):
    def __init__(self, in_dim, topk=0.1):
        super(CompositeHead, self).__init__(in_dim, topk)
        self.conv = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, padding=1),
                                  nn.BatchNorm2d(in_dim),
                                  nn.ReLU())

    def forward(self, x, ref):
        ref = torch.mean(ref, dim=0).repeat([x.size(0), 1, 1, 1])
        x = ref - x
        x = self.conv(x)
        x = super().forward(x)
        return x


class DRA(nn.Module):
    def __init__(self, cfg, backbone="resnet18"):
        super(DRA, self).__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureRESNET18()
        self.in_c = 512
        self.holistic_head = HolisticHead(self.in_c)
        self.seen_head = PlainHead(self.in_c, self.cfg.topk)
        self.pseudo_head = PlainHead(self.in_c, self.cfg.topk)
        self.composite_head = CompositeHead(self.in_c, self.cfg.topk)

    def forward(self, image, label):
        image_pyramid = list()
        for i in range(self.cfg.total_heads):
            image_pyramid.append(list())
        for s in range(self.cfg.n_scales):
            image_scaled = F.interpolate(image, size=self.cfg.img_size // (2 ** s)) if s > 0 else image
            feature = self.feature_extractor(image_scaled)

            ref_feature = feature[:self.cfg.nRef, :, :, :]
            feature = feature[self.cfg.nRef:, :, :, :]

            if self.training:
                normal_scores = self.holistic_head(feature)
                abnormal_scores = self.seen_head(feature[label != 2])
                dummy_scores = self.pseudo_head(feature[label != 1])
                comparison_scores = self.composite_head(feature, ref_feature)
            else:
                normal_scores = self.holistic_head(feature)
                abnormal_scores = self.seen_head(feature)
                dummy_scores = self.pseudo_head(feature)
                comparison_scores = self.composite_head(feature, ref_feature)
            for i, scores in enumerate([normal_scores, abnormal_scores, dummy_scores, comparison_scores]):
                image_pyramid[i].append(scores)
        for i in range(self.cfg.total_heads):
            image_pyramid[i] = torch.cat(image_pyramid[i], dim=1)
            image_pyramid[i] = torch.mean(image_pyramid[i], dim=1)
        return image_pyramid


class Cfg:
    def __init__(self, size):
        self.img_size = size
        self.n_scales = 2
        self.total_heads = 4
        self.nRef = 5
        self.topk = 0.1


def generate_target(target, eval=False):
    # Trainer.generate_target (train.py)
    targets = list()
    if eval:
        targets.append(target == 0)
        targets.append(target)
        targets.append(target)
        targets.append(target)
        return targets
    else:
        temp_t = target != 0
        targets.append(target == 0)
        targets.append(temp_t[target != 2])
        targets.append(temp_t[target != 1])
        targets.append(target != 0)
    return targets


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    model = DRA(Cfg(job["size"]))
    load_state(model, job, imiad_name)
    layout.apply(model.feature_extractor.net)
    criterion = DeviationLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=job["lr"], weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
    data = list(batches(job))
    losses, step_s, epoch_s = [], [], []
    steps = job["steps_per_epoch"]
    total_heads = 4
    cpu0 = time.process_time()
    for epoch in range(job["epochs"]):
        # Trainer.training: the scheduler steps before the epoch's batches.
        model.train()
        scheduler.step()
        t_epoch = time.perf_counter()
        for idx in range(steps):
            image, target, ref = data[(epoch * steps + idx) % len(data)]
            t = time.perf_counter()
            outputs = model(image, target)
            targets = generate_target(target)

            losses_ = list()
            for i in range(total_heads):
                losses_.append(criterion(outputs[i], targets[i].float(), ref[i]).view(-1, 1))

            loss = torch.cat(losses_)
            loss = torch.sum(loss)

            optimizer.zero_grad()
            loss.backward()

            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step_s.append(time.perf_counter() - t)
        epoch_s.append(time.perf_counter() - t_epoch)
    cpu = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"losses": losses, "step_s": step_s, "epoch_s": epoch_s, "train_cpu_s": cpu, "max_rss_kb": usage.ru_maxrss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
