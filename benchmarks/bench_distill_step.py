"""Cost of a Proto2Proto distillation step (teacher forward + student step with all losses)
relative to a bare student train step, measured interleaved in one run.

Reports two ratios: against a bare timm student (backbone + classifier, cross-entropy), and
against the student's own ProtoPNet step without a teacher (the price of distillation alone).

    python benchmarks/bench_distill_step.py [--teacher resnet50] [--student resnet18] [--size 224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch import nn

from p2p_cli.io.config import build_config
from p2p_cli.losses.registry import get_method
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.runtime.device import Runtime, resolve_precision
from p2p_cli.training.distillation import DistillObjective
from p2p_cli.training.objectives import task_terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet50")
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--stride", type=int, default=None, help="feature stride (default 32 at ≥224 px, else 16)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 autocast where the CPU has it natively, else fp32")
    args = parser.parse_args()
    stride = args.stride or (32 if args.size >= 224 else 16)
    cpu = torch.device("cpu")
    rt = Runtime(device=cpu, amp_dtype=resolve_precision(args.precision, cpu), channels_last=True)
    cfg = build_config({"method": "proto2proto"})
    images = rt.images(torch.randn(args.batch, 3, args.size, args.size))
    labels = torch.randint(0, args.classes, (args.batch,))

    def protopnet(name: str) -> ProtoPNet:
        model = ProtoPNet(ProtoPNetConfig(name, args.classes, prototypes_per_class=10, prototype_depth=256,
                                          feature_stride=stride))
        model.backbone.to(memory_format=torch.channels_last)
        return model

    teacher = protopnet(args.teacher).eval().requires_grad_(False)
    student = protopnet(args.student)
    plain = protopnet(args.student)
    objective = DistillObjective(cfg, teacher, get_method("proto2proto"), rt, student)
    bare = timm.create_model(args.student, pretrained=False, num_classes=args.classes)
    bare.to(memory_format=torch.channels_last)

    def trainable(model: ProtoPNet) -> list[nn.Parameter]:
        g = model.parameter_groups()
        return g["backbone"] + g["add_on"] + g["prototypes"]

    opts = {"bare": torch.optim.Adam(bare.parameters()), "student": torch.optim.Adam(trainable(plain)),
            "distill": torch.optim.Adam(trainable(student))}

    def run(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def bare_step():
        with rt.autocast():
            loss = nn.functional.cross_entropy(bare(images), labels)
        run(opts["bare"], loss)

    def student_step():
        with rt.autocast():
            out = plain(images)
        run(opts["student"], task_terms(plain, out, labels, cfg)["total"])

    def distill_step():
        with rt.autocast():
            out = student(images)
        run(opts["distill"], objective.loss(student, out, images, labels, "joint")["total"])

    def teacher_forward():
        objective.teacher_outputs(images)

    steps = {"bare": bare_step, "student": student_step, "distill": distill_step, "teacher": teacher_forward}
    for fn in steps.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.teacher} → {args.student}, {args.size} px, stride {stride}, batch {args.batch}, "
          f"{rt.amp_dtype or 'fp32'}, {torch.get_num_threads()} threads")
    print(f"bare student {med['bare']:.3f} s/step, ProtoPNet student {med['student']:.3f} s/step, "
          f"distillation {med['distill']:.3f} s/step; teacher forward alone {med['teacher']:.3f} s")
    overhead = med["distill"] - med["student"] - med["teacher"]
    print(f"distillation - (student step + teacher forward) = {overhead:+.3f} s (the transfer losses)")
    print(f"distillation / bare student step: {med['distill'] / med['bare']:.2f}")
    print(f"distillation / ProtoPNet student step: {med['distill'] / med['student']:.2f}")


if __name__ == "__main__":
    main()
