#!/usr/bin/env python3
"""Exports a torchvision ResNet backbone to ONNX for imiad (`imiad run --backbone FILE --layers layer2,layer3`).

With PyTorch, torchvision and internet access this writes torchvision's ImageNet-pretrained wide_resnet50_2 (the
backbone of the PatchCore and PaDiM papers) or resnet18, with every stage output `layer1`..`layer4` as a named graph
output. `--random-weights` needs no download (He-initialised weights from `--seed`): useful to test the export and the
loading offline, useless for real benchmark numbers, which need the pretrained weights.

`--classifier` exports the whole classification network instead (one output, `logits`); imiad then taps `layer2`
and `layer3` itself, by resolving the module paths in PyTorch's node names (`/layer2/layer2.3/relu_2/Relu`).

Examples:
  python3 scripts/export-backbone.py --arch wide_resnet50_2 --out wrn50_2.onnx
  python3 scripts/export-backbone.py --arch resnet18 --random-weights --out r18-random.onnx
"""
import argparse
import sys

import torch

try:
    import torchvision
except ImportError:  # pragma: no cover
    sys.exit("export-backbone.py needs torchvision (pip install torchvision, or apt install python3-torchvision)")

STAGES = ["layer1", "layer2", "layer3", "layer4"]


class Stages(torch.nn.Module):
    """The ResNet trunk returning every stage. Modules keep torchvision's attribute names, so the exported node
    names carry the same module paths (`/layer2/layer2.0/...`) as an export of the full model."""

    def __init__(self, net):
        super().__init__()
        for name in ["conv1", "bn1", "relu", "maxpool"] + STAGES:
            setattr(self, name, getattr(net, name))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for name in STAGES:
            x = getattr(self, name)(x)
            outs.append(x)
        return tuple(outs)


def build(arch, random_weights):
    ctor = getattr(torchvision.models, arch)
    if random_weights:
        try:
            return ctor(weights=None)
        except TypeError:  # torchvision < 0.13
            return ctor(pretrained=False)
    try:
        return ctor(weights="IMAGENET1K_V1")
    except TypeError:  # torchvision < 0.13
        return ctor(pretrained=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["wide_resnet50_2", "resnet18"], default="wide_resnet50_2")
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    parser.add_argument("--random-weights", action="store_true", help="no download: He-initialised weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    parser.add_argument("--classifier", action="store_true", help="export the full classifier (output: logits)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the example input (H and W stay dynamic)")
    parser.add_argument("--opset", type=int, default=13)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    net = build(args.arch, args.random_weights).eval()
    model = net if args.classifier else Stages(net).eval()
    outputs = ["logits"] if args.classifier else STAGES
    example = torch.randn(1, 3, args.image_size, args.image_size)
    dynamic = {"input": {0: "batch", 2: "height", 3: "width"}}
    for name in outputs:
        dynamic[name] = {0: "batch"} if args.classifier else {0: "batch", 2: f"{name}_height", 3: f"{name}_width"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            args.out,
            input_names=["input"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=args.opset,
            do_constant_folding=True,
        )
    weights = "random (seed %d)" % args.seed if args.random_weights else "ImageNet (IMAGENET1K_V1)"
    print(f"wrote {args.out}: {args.arch}, {weights} weights, outputs {', '.join(outputs)}")


if __name__ == "__main__":
    main()
