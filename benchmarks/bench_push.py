"""Cost of the push (prototype projection, ``engine/push.py:push_prototypes``) relative to the bare
forward pass over the same images.

The push makes one pass over the un-augmented training images, vectorised over prototypes:
per batch one forward pass to the add-on features, one distance computation (B, m, H, W), a
class mask and one min-reduction per prototype. Two references, timed on the same pre-decoded
batches in the same process, interleaved, same precision (``--precision auto``: bf16 autocast
where the CPU has it natively, else fp32) and channels_last:

* ``backbone``: the bare backbone forward (``model.backbone(images)``) — the minimum any push needs;
* ``forward``: the full ProtoPNet forward (``model(images)``: backbone, add-on, distances, logits).

Prints push time / reference time, from the medians and from the best round of each (the best
round is the least disturbed by other processes on a shared machine); target: push / backbone
≤ 1.15. The ratios measured within one run are what to compare.

    python benchmarks/bench_push.py [--backbone resnet18] [--size 112] [--stride 16] [--images 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.runtime.device import Runtime, resolve_precision
from p2p_cli.training.push import push_prototypes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=112, help="input side (px)")
    parser.add_argument("--stride", type=int, default=16, help="feature stride (16: 7×7 grid at 112 px)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=10, help="prototypes per class")
    parser.add_argument("--depth", type=int, default=64, help="prototype depth D")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    args = parser.parse_args()

    torch.manual_seed(0)
    rt = Runtime(device=torch.device("cpu"), amp_dtype=resolve_precision(args.precision, torch.device("cpu")),
                 channels_last=True)
    model = ProtoPNet(ProtoPNetConfig(args.backbone, args.classes, prototypes_per_class=args.per_class,
                                      prototype_depth=args.depth, feature_stride=args.stride)).eval()
    model.backbone.to(memory_format=torch.channels_last)
    batches = []
    for start in range(0, args.images, args.batch):
        n = min(args.batch, args.images - start)
        images = torch.randn(n, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, args.classes, (n,))
        batches.append((images, labels, torch.arange(start, start + n)))
    protos = model.prototype_vectors.detach().clone()

    @torch.no_grad()
    def backbone() -> None:
        for images, _, _ in batches:
            with rt.autocast():
                model.backbone(images)

    @torch.no_grad()
    def forward() -> None:
        for images, _, _ in batches:
            with rt.autocast():
                model(images)

    def push() -> None:
        with torch.no_grad():
            model.prototype_vectors.copy_(protos)  # every round pushes the same random prototypes
        push_prototypes(model, batches, rt)

    fns = {"backbone": backbone, "forward": forward, "push": push}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    if args.verbose:
        print({k: [round(t, 2) for t in v] for k, v in times.items()})
    grid = tuple(model(batches[0][0][:1]).distances.shape[-2:])
    print(f"{args.backbone} stride {args.stride}, {args.size} px ({grid[0]}×{grid[1]} grid), "
          f"{model.num_prototypes} prototypes × D={model.prototype_depth}, {args.images} images in batches of "
          f"{args.batch}, {rt.amp_dtype or 'fp32'}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds")
    for name in fns:
        rate = args.images / best[name]
        print(f"  {name:9s} median {med[name]:7.3f} s  best {best[name]:7.3f} s  ({rate:6.1f} img/s)")
    for ref, label in (("backbone", "bare backbone forward"), ("forward", "full ProtoPNet forward")):
        print(f"push / {label:22s}: {med['push'] / med[ref]:.3f} (medians)  {best['push'] / best[ref]:.3f} (best of "
              f"{args.rounds}){'  target <= 1.15' if ref == 'backbone' else ''}")

if __name__ == "__main__":
    main()
