"""Cost of a ProtoPNet train step (all losses) relative to a bare timm backbone train step.

Both run in the same process, interleaved, with the same optimizer (Adam), precision
(``--precision auto``: bf16 autocast on a CPU with AMX/AVX512-BF16, else fp32) and
channels_last; the ProtoPNet has the paper's CUB head (200 classes × 10 prototypes, D = 256).
Prints one ratio per image size; timings vary from run to run on a shared machine, the ratio
measured within one run is what to compare.

    python benchmarks/bench_train_step.py [--backbone resnet18] [--batch 32] [--sizes 224 112]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch import nn

from p2p_cli.io.config import build_config
from p2p_cli.losses.protopnet import protopnet_loss
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.runtime.device import resolve_precision


def step_fns(backbone: str, classes: int, size: int, batch: int, dtype, stride: int | None):
    cfg = build_config()
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,))

    bare = timm.create_model(backbone, pretrained=False, num_classes=classes).to(memory_format=torch.channels_last)
    bare_opt = torch.optim.Adam(bare.parameters(), lr=1e-4)

    proto = ProtoPNet(ProtoPNetConfig(backbone, classes, prototypes_per_class=10, feature_stride=stride))
    proto.backbone.to(memory_format=torch.channels_last)
    groups = proto.parameter_groups()
    proto_opt = torch.optim.Adam(groups["backbone"] + groups["add_on"] + groups["prototypes"], lr=1e-4)

    def autocast():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    def bare_step():
        with autocast():
            loss = nn.functional.cross_entropy(bare(images), labels)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    def proto_step():
        with autocast():
            out = proto(images)
        terms = protopnet_loss(out.logits, out.min_distances, labels, proto.class_identity, proto.last_layer.weight,
                               lambda_clst=cfg.lambda_clst, lambda_sep=cfg.lambda_sep, lambda_l1=cfg.lambda_l1)
        proto_opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        proto_opt.step()

    grid = proto(images[:1]).distances.shape[-2:]
    return bare_step, proto_step, tuple(grid)


def timed(fn, repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    args = parser.parse_args()
    dtype = resolve_precision(args.precision, torch.device("cpu"))
    print(f"{args.backbone}, batch {args.batch}, {args.classes} classes × 10 prototypes, {dtype or 'fp32'}, "
          f"{torch.get_num_threads()} threads")
    # Stride 32 taps the same last stage the bare backbone runs (the like-for-like ratio); at
    # small sizes stride 16 (ResNet layer3) is what the CPU demo uses to keep a 7×7 grid.
    cases = [(size, 32) for size in args.sizes] + [(size, 16) for size in args.sizes if size < 224]
    for size, stride in cases:
        bare_step, proto_step, grid = step_fns(args.backbone, args.classes, size, args.batch, dtype, stride)
        for fn in (bare_step, proto_step, bare_step, proto_step):  # warm-up
            fn()
        ratios, bare_t, proto_t = [], [], []
        for _ in range(args.rounds):
            b = timed(bare_step, args.steps)
            p = timed(proto_step, args.steps)
            bare_t.append(b)
            proto_t.append(p)
            ratios.append(p / b)
        print(f"{size} px (ProtoPNet grid {grid[0]}×{grid[1]}, stride {stride}): "
              f"bare {statistics.median(bare_t):.3f} s/step, "
              f"ProtoPNet {statistics.median(proto_t):.3f} s/step, ratio {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
