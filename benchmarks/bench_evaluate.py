"""Cost of a full ``p2p evaluate`` (2 models, acc + AAP + AJS + PMS) relative to the bare forward passes.

Target: ≤ 1.2×. Two runs are written into a temporary workdir — a ResNet-34 teacher and
a ResNet-18 student (random weights: the cost does not depend on them), both at the quickstart
settings (synthetic test split: 10 classes × 40 images at 112 px, feature stride 16 → 7×7 grid,
D = 64, 10 prototypes per class, precision ``auto`` — bf16 autocast where the CPU has it natively,
else fp32 — and channels_last), or with ``--image-size 224`` at the paper's resolution (images
generated at 224 px, feature stride 32 → 7×7 grid). Then, interleaved ``--reps`` times in one
process:

* **bare**: both models' forward passes (``model(images)`` under ``torch.inference_mode``) over
  the test images already decoded in memory, in batches of ``test_batch_size``;
* **evaluate**: :func:`p2p_cli.workflows.evaluate.evaluate_models` from scratch (empty activation
  cache): resolve both runs, load the models, index and decode the images, forward passes,
  every default metric at the default 8 τ values, the table's figures — everything but printing;
* **evaluate (cached)**: the same again with the cache filled (no forward pass at all).

Each repetition times a back-to-back pair (bare then evaluate, or the reverse, alternating),
so both see the same machine load; the headline is the median of the pair ratios ``evaluate /
bare``, followed by the ratios of the fastest runs and of the medians. Timings on a shared
machine are noisy; compare ratios measured within one run.

    python benchmarks/bench_evaluate.py [--reps 7] [--classes 10] [--test-per-class 40] [--image-size 112|224]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from p2p_cli.data.images import ImageDataset  # noqa: E402
from p2p_cli.data.loaders import load_dataset_index  # noqa: E402
from p2p_cli.data.transforms import eval_transform  # noqa: E402
from p2p_cli.evaluation.options import EvalOptions  # noqa: E402
from p2p_cli.io.checkpoint import weights_hash  # noqa: E402
from p2p_cli.io.config import build_config  # noqa: E402
from p2p_cli.io.rundir import RunDir  # noqa: E402
from p2p_cli.models.factory import save_model  # noqa: E402
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig  # noqa: E402
from p2p_cli.runtime.device import make_runtime  # noqa: E402
from p2p_cli.workflows.evaluate import evaluate_models  # noqa: E402
from p2p_cli.workflows.train_teacher import write_run_config  # noqa: E402


def make_runs(workdir: Path, classes: int, test_per_class: int, image_size: int) -> None:
    """Teacher (resnet34) and student (resnet18) runs with random weights, quickstart settings."""
    stride = 16 if image_size < 224 else 32  # a 7×7 grid either way
    common = dict(dataset="synthetic", synthetic_classes=classes, synthetic_test_per_class=test_per_class,
                  synthetic_image_size=image_size, image_size=image_size, feature_stride=stride,
                  prototype_depth=64, prototypes_per_class=10,
                  test_batch_size=100, workers=0, precision="auto", channels_last=True)
    teacher_info = None
    for name, backbone in (("teacher", "resnet34"), ("student", "resnet18")):
        cfg = build_config(None, dict(common, backbone=backbone))
        index = load_dataset_index(cfg)
        torch.manual_seed(len(name))
        model = ProtoPNet(ProtoPNetConfig(backbone, index.num_classes, prototypes_per_class=10, prototype_depth=64,
                                          feature_stride=stride))
        run = RunDir(workdir / name)
        run.path.mkdir(parents=True)
        extra = {} if teacher_info is None else {"teacher_run": teacher_info}
        write_run_config(run, cfg, "train-teacher" if teacher_info is None else "distill", extra)
        meta_extra = {} if teacher_info is None else {"teacher": teacher_info, "method": "proto2proto"}
        save_model(run.model_path, model, stage="final", class_names=index.classes, extra=meta_extra)
        if teacher_info is None:
            teacher_info = {"name": name, "path": str(run.path.resolve()),
                            "weights_hash": weights_hash(model.state_dict()), "backbone": backbone}


def bare_fn(workdir: Path):
    """A closure timing both models' forward passes over the in-memory test images."""
    from p2p_cli.models.factory import load_model

    models = []
    for name in ("teacher", "student"):
        model, _ = load_model(workdir / name / "model.safetensors")
        model.backbone.to(memory_format=torch.channels_last)
        models.append(model)
    import yaml

    run_cfg = yaml.safe_load((workdir / "teacher" / "config.yaml").read_text())
    keys = ("dataset", "synthetic_classes", "synthetic_test_per_class", "synthetic_image_size", "image_size")
    cfg = build_config({k: run_cfg[k] for k in keys})
    size = cfg.image_size
    index = load_dataset_index(cfg)
    ds = ImageDataset(index.test, eval_transform(size), image_size=size)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    batches = [images[i:i + 100].contiguous(memory_format=torch.channels_last) for i in range(0, len(images), 100)]
    rt = make_runtime("cpu", "auto", True)

    def run() -> None:
        with torch.inference_mode():
            for model in models:
                for x in batches:
                    with rt.autocast():
                        model(x)

    return run, len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--test-per-class", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=112, help="112 (the CPU demo) or 224 (the paper)")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="p2p-bench-eval-"))
    try:
        make_runs(workdir, args.classes, args.test_per_class, args.image_size)
        bare, n_images = bare_fn(workdir)
        opts = dict(metrics=("acc", "aap", "ajs", "pms"), device="cpu")
        bare()  # warm-up: first-call allocations, oneDNN kernels
        evaluate_models(["student"], workdir=workdir, options=EvalOptions(**opts, use_cache=False))
        t_bare, t_eval, t_cached = [], [], []
        report = None

        def time_bare() -> None:
            t0 = time.perf_counter()
            bare()
            t_bare.append(time.perf_counter() - t0)

        def time_eval() -> dict:
            shutil.rmtree(workdir / ".cache", ignore_errors=True)
            t0 = time.perf_counter()
            rep = evaluate_models(["student"], workdir=workdir, options=EvalOptions(**opts))
            t_eval.append(time.perf_counter() - t0)
            return rep

        for k in range(args.reps):  # back-to-back pairs, alternating order
            if k % 2 == 0:
                time_bare()
                report = time_eval()
            else:
                report = time_eval()
                time_bare()
            t0 = time.perf_counter()
            cached = evaluate_models(["student"], workdir=workdir, options=EvalOptions(**opts))
            t_cached.append(time.perf_counter() - t0)
            assert all(r["activations"] == "cached" for r in cached["models"].values())
        assert report is not None and list(report["models"]) == ["teacher", "student"]
        pairs = [e / b for e, b in zip(t_eval, t_bare, strict=True)]
        b, e, c = (statistics.median(t) for t in (t_bare, t_eval, t_cached))
        grid = report["grid"]
        print(f"images: {n_images} ({args.image_size} px, {grid[0]}x{grid[1]} grid), "
              "models: resnet34 teacher + resnet18 student, "
              f"m = {report['models']['teacher']['num_prototypes']}, taus: {len(report['taus'])}, threads: "
              f"{torch.get_num_threads()}")
        print(f"bare forward passes (2 models): {b:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in t_bare)})")
        print(f"evaluate, empty cache:          {e:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in t_eval)})")
        print(f"evaluate, cached activations:   {c:.3f} s  (runs: {', '.join(f'{t:.2f}' for t in t_cached)})")
        print(f"ratio evaluate / bare, median of back-to-back pairs: {statistics.median(pairs):.3f}  "
              f"(pairs: {', '.join(f'{r:.2f}' for r in pairs)}; target <= 1.2)")
        print(f"ratio evaluate / bare, fastest runs: {min(t_eval) / min(t_bare):.3f}; medians: {e / b:.3f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
