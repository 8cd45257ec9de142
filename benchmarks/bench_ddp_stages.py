"""DistributedDataParallel across ProtoPNet's stages: re-wrap per stage vs one wrapper with
``find_unused_parameters=True``, seconds per training step, measured interleaved in one run.

The warm stage freezes the backbone, the joint stage trains everything. ``rewrap`` builds a DDP
wrapper over the stage's trainable parameters (what the trainer does);
``find_unused`` builds one wrapper over all parameters and lets DDP search the autograd graph
for the frozen ones after every forward pass. Also prints the cost of building a wrapper.

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 benchmarks/bench_ddp_stages.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from p2p_cli.io.config import build_config
from p2p_cli.models.factory import build_model
from p2p_cli.runtime.device import make_runtime
from p2p_cli.runtime.distributed import wrap_ddp
from p2p_cli.training.recipes import recipe_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cfg = build_config({"backbone": args.backbone, "image_size": args.size, "batch_size": args.batch,
                        "feature_stride": 16, "prototypes_per_class": 2, "precision": "fp32"})
    rt = make_runtime("cpu", "fp32", False)
    torch.manual_seed(0)
    model = build_model(cfg, args.classes, rt)
    recipe = recipe_for(model.arch)
    groups = model.parameter_groups()
    local = args.batch // rt.world_size
    gen = torch.Generator().manual_seed(rt.rank)
    images = torch.randn(local, 3, args.size, args.size, generator=gen)
    labels = torch.randint(0, args.classes, (local,), generator=gen)

    def freeze(stage: str) -> list[torch.nn.Parameter]:
        trained = recipe.stage_groups(stage, cfg)
        for name, params in groups.items():
            for p in params:
                p.requires_grad_(name in trained)
        return [p for name in trained for p in groups.get(name, [])]

    def steps(ddp: torch.nn.Module, params: list[torch.nn.Parameter]) -> float:
        """Seconds per step after one untimed step (DDP's first step finds the graph)."""
        opt = torch.optim.SGD(params, lr=1e-6)
        for i in range(args.steps + 1):
            if i == 1:
                t0 = time.perf_counter()
            out = ddp(images)
            loss = recipe.task_loss(model, out, labels, cfg)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / args.steps

    times: dict[tuple[str, str], list[float]] = {}
    wraps: list[float] = []
    for _ in range(args.rounds):  # one live wrapper at a time: DDP hooks every parameter it registers
        for stage in ("warm", "joint"):
            params = freeze(stage)
            t0 = time.perf_counter()
            ddp = wrap_ddp(model, rt)
            wraps.append(time.perf_counter() - t0)
            times.setdefault((stage, "rewrap"), []).append(steps(ddp, params))
            del ddp
            for p in model.parameters():
                p.requires_grad_(True)
            ddp = wrap_ddp(model, rt, find_unused=True)
            params = freeze(stage)
            times.setdefault((stage, "find_unused"), []).append(steps(ddp, params))
            del ddp
    wrap_seconds = statistics.median(wraps)
    if rt.is_main:
        print(f"{args.backbone} ProtoPNet, {args.size} px, global batch {args.batch}, {rt.world_size} processes, "
              f"{torch.get_num_threads()} thread(s) each; building a DDP wrapper: {wrap_seconds:.3f} s")
        print(f"{'stage':8} {'rewrap s/step':>14} {'find_unused s/step':>19}")
        for stage in ("warm", "joint"):
            a = statistics.median(times[(stage, "rewrap")])
            b = statistics.median(times[(stage, "find_unused")])
            print(f"{stage:8} {a:14.4f} {b:19.4f}")


if __name__ == "__main__":
    main()
