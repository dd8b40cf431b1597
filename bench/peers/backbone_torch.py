"""Peer of bench/backbone.ts: images/s of torchvision's resnet18 / wide_resnet50_2 trunks (layer1..layer4, random
weights: speed does not depend on them) in PyTorch eager mode, CPU, no grad, same batch and threads.
Usage: backbone_torch.py ARCH SIZE BATCH THREADS REPEATS STAGES (run layer1..layerSTAGES); prints JSON on its last line."""
import json
import sys
import time

import torch
import torchvision

arch, size, batch, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
stages = int(sys.argv[6]) if len(sys.argv) > 6 else 4
torch.set_num_threads(threads)
torch.manual_seed(0)
net = getattr(torchvision.models, arch)().eval()
x = torch.randn(batch, 3, size, size)


def trunk(x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    outs = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4)[:stages]:
        x = layer(x)
        outs.append(x)
    return outs


with torch.no_grad():
    trunk(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trunk(x)
        times.append(time.perf_counter() - t0)
times.sort()
median = times[len(times) // 2]
print(json.dumps({"arch": arch, "batch": batch, "seconds_per_batch": median, "images_per_second": batch / median,
                  "torch": torch.__version__}))
