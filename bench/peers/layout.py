"""The memory layout of a peer's ResNet-18, from IMIAD_PEER_LAYOUT.

- "nchw" (the default): torchvision's layout, as the official code runs. The speed comparisons use it.
- "channels-last": the layout imiad's training addon gives the ResNet-18 of CutPaste and RegAD
  (bindings/train/layout.ts, native/train/resnet18.h): the weights of
  the convolutions of conv1 and layer1 .. layer4 channels-last, and the network's input laid out so at conv1. PyTorch
  then runs the same oneDNN kernels as imiad, so the fidelity checks compare the same arithmetic. (The two layouts
  sum in different orders: a 20-step loss trajectory moves between them by 1e-3 to a few 1e-2 relative, in PyTorch
  alone, as it does between 1 and 2 threads.)
"""
import os

import torch

_NAMES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def channels_last():
    value = os.environ.get("IMIAD_PEER_LAYOUT", "nchw")
    if value not in ("nchw", "channels-last"):
        raise SystemExit(f"IMIAD_PEER_LAYOUT: expected nchw or channels-last but received {value}")
    return value == "channels-last"


def apply(resnet):
    """Lays out `resnet` (a module with torchvision's conv1 and layer1.. attributes) as IMIAD_PEER_LAYOUT says."""
    if not channels_last():
        return resnet
    for name, module in resnet.named_modules():
        if isinstance(module, torch.nn.Conv2d) and name.split(".")[0] in _NAMES:
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    resnet.conv1.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:]))
    return resnet
