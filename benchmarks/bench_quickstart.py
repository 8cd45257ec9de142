"""Where the quickstart's time goes: per-stage seconds, and each training stage's throughput as a
ratio to the bare backbone's train-step throughput measured in the same run.

Runs ``p2p quickstart`` (the API function the command calls) in a fresh workdir — with
``--fresh-data`` also in a fresh data cache, so the synthetic images are generated as on a new
machine — and prints:

* the stages' wall seconds (teacher, baseline, proto2proto, proto2proto-pruned, evaluate,
  visualize) and the total, as the report records them, plus the wall time of the whole call;
* for each training stage: the training images it processed, their throughput over the training
  epochs alone (``epochs``: rows ``warm``/``joint`` of ``metrics.jsonl``, each with its test
  pass) and over the whole stage (``stage``: also loading, push, last layer, saving), and both as a
  ratio to a **bare** timm backbone's train step (forward, cross-entropy, backward, Adam) at the
  preset's image size, batch size, precision and memory format. The bare throughput is measured
  before and after the quickstart (after five warm-up steps) and the faster of the two is the
  reference: the ratio is then conservative (a first measurement in a cold process once ran 7×
  slower than the second). A distillation stage is compared with its student's
  bare backbone: its ratio includes the teacher's forward pass.

A ratio of 1 means the stage trains as fast as the bare network; everything ProtoPNet adds (the
add-on, prototype layer, losses, evaluation passes, push, last layer) lowers it.

    python benchmarks/bench_quickstart.py [--preset fast] [--workdir DIR] [--fresh-data] [--bare-steps 6]
        [--set KEY=VALUE ...] [--teacher BACKBONE] [--student BACKBONE]

``--set``/``--teacher``/``--student`` measure a variant of the preset (values are YAML scalars;
``teacher.KEY=VALUE`` or ``student.KEY=VALUE`` set a key for one role only), e.g.
``--set image_size=96 epochs=6``: how the built-in presets were chosen.

Timings on a shared machine are noisy; compare the ratios measured within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from p2p_cli.io.rundir import RunDir  # noqa: E402
from p2p_cli.runtime.device import make_runtime  # noqa: E402
from p2p_cli.workflows.presets import PRESETS, get_preset  # noqa: E402

TRAINING = ("teacher", "baseline", "proto2proto")
STAGES = (*TRAINING, "proto2proto-pruned", "evaluate", "visualize")


def bare_images_per_second(backbone: str, classes: int, size: int, batch: int, precision: str,
                           channels_last: bool, steps: int) -> float:
    """Train-step throughput (images/s) of a bare timm ``backbone`` (median of ``steps`` steps after
    five warm-up steps), in the runtime the quickstart uses."""
    rt = make_runtime("cpu", precision, channels_last)
    model = timm.create_model(backbone, pretrained=False, num_classes=classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = rt.images(torch.randn(batch, 3, size, size))
    labels = torch.randint(0, classes, (batch,))
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        with rt.autocast():
            loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def training_images(records: list[dict], per_epoch: int) -> tuple[int, float]:
    """(training images, seconds of the training epochs) from a run's ``metrics.jsonl`` rows."""
    epochs = [r for r in records if r.get("stage") in ("warm", "joint")]
    return len(epochs) * per_epoch, sum(float(r.get("seconds", 0.0)) for r in epochs)


def variant(preset: dict, sets: list[str], teacher: str | None, student: str | None) -> dict:
    """``preset`` with config keys from ``KEY=VALUE`` strings (YAML scalars) and other backbones."""
    import yaml

    if not (sets or teacher or student):
        return preset
    out = {**preset, "config": dict(preset["config"]), "teacher": teacher or preset["teacher"],
           "student": student or preset["student"]}
    for role in ("teacher", "student"):
        out[f"{role}_config"] = dict(preset.get(f"{role}_config", {}))
    for item in sets:
        key, _, value = item.partition("=")
        role, _, role_key = key.partition(".")
        if role_key and role in ("teacher", "student"):
            out[f"{role}_config"][role_key] = yaml.safe_load(value)
        else:
            out["config"][key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--fresh-data", action="store_true", help="generate the synthetic data in a fresh cache")
    parser.add_argument("--bare-steps", type=int, default=6, help="bare train steps timed before and after")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset config keys")
    parser.add_argument("--teacher", help="override the preset's teacher backbone")
    parser.add_argument("--student", help="override the preset's student backbone")
    args = parser.parse_args()
    preset = variant(get_preset(args.preset), args.set, args.teacher, args.student)
    if preset is not get_preset(args.preset):
        args.preset = "variant"
        PRESETS[args.preset] = preset
        print(f"variant: {json.dumps({k: v for k, v in preset.items() if k != 'config'})} "
              f"{' '.join(args.set)}")
    cfg = preset["config"]  # (the bare reference uses the shared keys: image size, batch, precision)
    tmp = tempfile.TemporaryDirectory(prefix="p2p-bench-qs-")
    workdir = args.workdir or Path(tmp.name) / "runs"
    if args.fresh_data:
        os.environ["P2P_CACHE_DIR"] = str(Path(tmp.name) / "cache")
    classes = int(cfg.get("synthetic_classes", 10))
    per_epoch = classes * int(cfg.get("synthetic_train_per_class", 100)) * int(cfg.get("repeats", 1))
    bare_args = (classes, cfg["image_size"], cfg["batch_size"], cfg["precision"], cfg["channels_last"],
                 args.bare_steps)
    backbones = {preset["teacher"], preset["student"]}
    before = {b: bare_images_per_second(b, *bare_args) for b in backbones}

    from p2p_cli import api

    t0 = time.perf_counter()
    report = api.quickstart(workdir=workdir, preset=args.preset, device="cpu").report
    wall = time.perf_counter() - t0
    after = {b: bare_images_per_second(b, *bare_args) for b in backbones}
    bare = {b: max(before[b], after[b]) for b in backbones}

    rt = make_runtime("cpu", cfg["precision"], cfg["channels_last"])
    seconds = report["timings"]["seconds"]
    print(f"quickstart --preset {args.preset}: {torch.get_num_threads()} threads, {rt.amp_dtype or 'fp32'}, "
          f"{cfg['image_size']} px, batch {cfg['batch_size']}, {per_epoch} training images per epoch")
    print("bare train step (images/s, before/after): " + ", ".join(
        f"{b} {before[b]:.1f}/{after[b]:.1f}" for b in sorted(backbones)))
    print(f"{'stage':<20}{'seconds':>9}{'images':>8}{'epochs img/s':>14}{'ratio':>7}{'stage img/s':>13}"
          f"{'ratio':>7}")
    for stage in STAGES:
        sec = seconds.get(stage)
        line = f"{stage:<20}{sec if sec is not None else float('nan'):>9.1f}"
        if stage in TRAINING and sec:
            n, epoch_seconds = training_images(RunDir(workdir / stage).read_metrics(), per_epoch)
            ref = bare[preset["teacher"] if stage == "teacher" else preset["student"]]
            epochs_rate, stage_rate = n / max(epoch_seconds, 1e-9), n / sec
            line += f"{n:>8}{epochs_rate:>14.1f}{epochs_rate / ref:>7.2f}{stage_rate:>13.1f}{stage_rate / ref:>7.2f}"
        print(line)
    print(f"{'total (report)':<20}{seconds.get('total', float('nan')):>9.1f}")
    print(f"{'total (wall)':<20}{wall:>9.1f}")
    verdict = report.get("verdict", {})
    print(f"verdict: {verdict.get('text', '?')}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
