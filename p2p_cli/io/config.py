"""Run configuration: one flat, typed, validated schema; YAML file + flag overrides.

One config = one experiment. Every key has a flag of the same name (``lr_backbone`` →
``--lr-backbone``); a flag beats the file, the file beats the default. Unknown or mistyped
keys and out-of-range values are one-line errors that name the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from p2p_cli.errors import P2PError, did_you_mean

SCHEMA_VERSION = 1
DATASET_KINDS: tuple[str, ...] = ("synthetic", "cub", "cars", "folder")
"""The dataset kinds, in the order help lists them (the default first). Each has a reader in
:data:`p2p_cli.data.readers.READERS` (``data.readers.KINDS`` is this tuple): the kinds are named
here, at the bottom of the import graph, so that the config schema and the CLI's help can use
them without importing the readers."""


SEED_MAX = 2**32 - 1
"""Seeds live in [0, 2^32 − 1]: numpy's range, and every derived per-step seed stays an int64."""


def _key(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
         choices: tuple[str, ...] = ()) -> Any:
    """A config field: its help, its bounds (inclusive) and its choices."""
    return field(default=default, metadata={"help": help, "min": minimum, "max": maximum, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of train-teacher and distill. Defaults follow the Proto2Proto Cars config."""

    # -- data ------------------------------------------------------------------------------
    dataset: str = _key("synthetic", "dataset kind", choices=DATASET_KINDS)
    data_root: str | None = _key(None, "dataset root (synthetic: generated into the cache when unset)")
    image_size: int = _key(224, "input side in pixels", minimum=16, maximum=4096)
    crop_bbox: bool = _key(False, "crop CUB/Cars/synthetic images to their bounding boxes")
    augment: bool = _key(True, "online augmentation (rotate, skew, shear, elastic, flip)")
    augment_jpeg: float = _key(0.0, "probability of JPEG-compressing a training image at quality 20 "
                               "(robustness remedy; 0 = off)", minimum=0)
    repeats: int = _key(1, "an epoch is this many passes over the base training images", minimum=1,
                       maximum=10_000)
    cache_images: bool = _key(False, "keep decoded, resized images in memory (small datasets)")
    workers: int = _key(2, "DataLoader worker processes", minimum=0, maximum=256)
    synthetic_preset: str = _key("easy", "synthetic data difficulty", choices=("easy", "hard"))
    synthetic_classes: int = _key(10, "synthetic: number of classes", minimum=2, maximum=1000)
    synthetic_train_per_class: int = _key(100, "synthetic: training images per class", minimum=1,
                                          maximum=100_000)
    synthetic_test_per_class: int = _key(40, "synthetic: test images per class", minimum=1,
                                         maximum=100_000)
    synthetic_image_size: int = _key(112, "synthetic: generated image side", minimum=48, maximum=1024)
    synthetic_seed: int = _key(0, "synthetic: generator seed", minimum=0, maximum=SEED_MAX)
    # -- model -----------------------------------------------------------------------------
    arch: str = _key("protopnet", "prototypical architecture", choices=("protopnet", "prototree"))
    backbone: str = _key("resnet50", "backbone name from the registry (`p2p models`) or any timm CNN")
    pretrained: bool = _key(False, "start from ImageNet weights: tf_efficientnet_lite0-2 from their installed "
                            "packages, other backbones from timm (needs network access)")
    weights: str | None = _key(None, "local backbone weights: .safetensors, or .pth (weights only), or "
                               "package:NAME (the weights file an installed package ships)")
    feature_stride: int | None = _key(None, "stride of the tapped feature map (default: last stage, 32)",
                                       minimum=1, maximum=64)
    prototype_depth: int | None = _key(None, "prototype depth D (default: 256 ResNet/DenseNet, 128 VGG)",
                                        minimum=1, maximum=8192)
    prototypes_per_class: int = _key(10, "prototypes per class", minimum=1, maximum=1000)
    add_on: str | None = _key(None, "add-on type", choices=("regular", "bottleneck"))
    depth: int | None = _key(None, "prototree: tree depth (2^depth leaves, 2^depth − 1 prototypes; "
                             "default ceil(log2 K) + 1, 9 for 200 classes)", minimum=1, maximum=16)
    leaf_update: str = _key("derivative-free", "prototree: leaves updated after every batch without "
                            "gradients (paper), or trained by gradient", choices=("derivative-free", "gradient"))
    log_probabilities: bool = _key(True, "prototree: routing in log space (numerically stable)")
    lr_leaves: float = _key(1e-3, "prototree: leaf learning rate (leaf_update gradient)", minimum=0)
    milestones: str | None = _key(None, "prototree: MultiStepLR epochs, comma-separated (× lr_gamma at "
                                  "each; null: no decay)")
    prune_threshold: float = _key(0.01, "prototree: prune the subtrees whose leaves all have max probability "
                                  "≤ this", minimum=0)
    # -- schedule (ProtoPNet's warm → joint → push → last layer, Chen et al. 2019) ------------
    epochs: int = _key(20, "warm + joint epochs", minimum=1, maximum=100_000)
    warm_epochs: int = _key(6, "warm-up epochs (backbone frozen unless warm_train_backbone)", minimum=0)
    warm_train_backbone: bool = _key(False, "also train the backbone in the warm stage (random init)")
    push_start: int | None = _key(12, "first push epoch (null: push only at the end)", minimum=0)
    push_every: int = _key(10, "push every N epochs after push_start", minimum=1)
    last_layer_epochs: int = _key(10, "last-layer epochs after each push", minimum=0, maximum=100_000)
    last_layer_data: str = _key("auto", "last-layer stage data: cached similarities of the un-augmented "
                                "training images, or the augmented training loader (ProtoPNet and the "
                                "Proto2Proto code); auto = augmented under fidelity reference, else cached",
                                choices=("auto", "cached", "augmented"))
    batch_size: int = _key(80, "training batch size (per process)", minimum=1, maximum=65_536)
    test_batch_size: int = _key(100, "evaluation batch size", minimum=1, maximum=65_536)
    lr_backbone: float = _key(2e-4, "joint-stage backbone learning rate", minimum=0)
    lr_add_on: float = _key(3e-3, "add-on learning rate", minimum=0)
    lr_prototypes: float = _key(3e-3, "prototype learning rate", minimum=0)
    lr_last_layer: float = _key(1e-4, "last-layer learning rate", minimum=0)
    weight_decay: float = _key(1e-3, "weight decay of backbone and add-on", minimum=0)
    lr_step_start: int | None = _key(16, "epoch of the first StepLR decay (null: no decay)", minimum=0)
    lr_step_size: int = _key(4, "StepLR: decay every N epochs", minimum=1)
    lr_gamma: float = _key(0.1, "StepLR (prototree: MultiStepLR) decay factor", minimum=0)
    lambda_clst: float = _key(0.8, "cluster cost weight (paper 0.8; reference code 1.0)")
    lambda_sep: float = _key(-0.08, "separation cost weight (negative)")
    lambda_l1: float = _key(1e-4, "off-class last-layer L1 weight", minimum=0)
    adversarial: str = _key("none", "adversarial training: none, or fgsm (fast FGSM, Wong et al. 2020)",
                            choices=("none", "fgsm"))
    adv_eps: float = _key(8 / 255, "FGSM training: L∞ radius in [0, 1] pixel units (e.g. 8/255)", minimum=0)
    adv_step: float = _key(10 / 255, "FGSM training: step size in [0, 1] pixel units (e.g. 10/255)", minimum=0)
    # -- runtime -----------------------------------------------------------------------------
    precision: str = _key("auto", "autocast precision of the backbone", choices=("auto", "bf16", "fp16", "fp32"))
    channels_last: bool = _key(True, "channels_last memory format for the backbone")
    compile: bool = _key(False, "torch.compile the backbone")
    deterministic: bool = _key(False, "deterministic algorithms (bit-identical reruns and resumes)")
    seed: int = _key(0, "random seed", minimum=0, maximum=SEED_MAX)
    log: str = _key("none", "training curves: every run writes metrics.csv; tensorboard also writes TensorBoard "
                    "events to RUN/tensorboard/ (needs the tensorboard extra)", choices=("none", "tensorboard"))
    eval_every: int = _key(1, "measure test accuracy every N training epochs (always after a push and "
                           "at the last epoch)", minimum=1)
    # -- distillation (Proto2Proto, Keswani et al. 2022; KD baselines) ------------------------
    teacher: str | None = _key(None, "teacher run (path, or name in the workdir)")
    method: str = _key("proto2proto", "distillation method", choices=("proto2proto", "hint", "rkd", "kd", "none"))
    lambda_global: float = _key(10.0, "weight of L_global (Eq. 5)", minimum=0)
    lambda_ppc: float = _key(10.0, "weight of L_ppc (Eq. 4)", minimum=0)
    tau_train: float = _key(100.0, "active-patch threshold τ_train (Eq. 1-3)", minimum=0)
    ppnet_loss: bool = _key(True, "include the ProtoPNet loss in stage 2")
    head: str = _key("copy", "student decision layer: new (init), teacher's copy, or teacher's frozen",
                     choices=("init", "copy", "frozen"))
    fidelity: str = _key("paper", "paper equations, or the public code's deviations", choices=("paper", "reference"))
    kd_weight: float = _key(1.0, "weight of the KD-baseline loss (hint, rkd, kd)", minimum=0)
    kd_temperature: float = _key(4.0, "temperature of Hinton KD", minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS: dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}


@functools.cache
def _type_hints() -> dict[str, Any]:
    """TrainConfig's resolved annotations (``get_type_hints`` is slow; configs are built often)."""
    return typing.get_type_hints(TrainConfig)


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(python type, optional?) of a field annotation such as ``int | None``."""
    hint = _type_hints()[annotation] if isinstance(annotation, str) else annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    if origin is Literal:
        return str, False
    return hint, False


def parse_number(text: str) -> float:
    """A float from ``"0.5"``, ``"1e-3"`` or a fraction ``"8/255"`` (pixel budgets); ValueError otherwise."""
    if "/" not in text:
        return float(text)
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den)
    except ZeroDivisionError:
        raise ValueError(f"division by zero in {text!r}") from None


def coerce_value(key: str, value: Any) -> Any:
    """Check and convert one value for ``key``; raise a one-line P2PError when it does not fit."""
    fld = KEYS[key]
    kind, optional = _base_type(fld.name)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise P2PError(f"config key '{key}' must not be null")
    try:
        if kind is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                out = value.lower() in ("true", "yes", "1")
            else:
                raise ValueError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = parse_number(value) if isinstance(value, str) else float(value)
        elif isinstance(value, (dict, list, tuple, set)):
            raise ValueError
        else:
            out = str(value)
    except (TypeError, ValueError, OverflowError):
        raise P2PError(f"config key '{key}' expects {'a ' + kind.__name__}, got {value!r}") from None
    if isinstance(out, float) and not math.isfinite(out):
        raise P2PError(f"config key '{key}' must be a finite number, got {out}")
    minimum, maximum = fld.metadata.get("min"), fld.metadata.get("max")
    if minimum is not None and isinstance(out, (int, float)) and out < minimum:
        raise P2PError(f"config key '{key}' must be ≥ {minimum}, got {out}")
    if maximum is not None and isinstance(out, (int, float)) and out > maximum:
        raise P2PError(f"config key '{key}' must be ≤ {maximum}, got {out}")
    choices = fld.metadata.get("choices")
    if choices and out not in choices:
        raise P2PError(f"config key '{key}' must be one of {', '.join(choices)}; got '{out}'"
                       f"{did_you_mean(str(out), choices)}")
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (a flat mapping of keys)."""
    path = Path(path)
    if not path.is_file():
        raise P2PError(f"config file not found: {path}")
    data = parse_yaml_mapping(path)
    return {} if data is None else data


def parse_yaml_mapping(path: Path) -> dict[str, Any] | None:
    """The YAML mapping in ``path`` (None when empty); a one-line P2PError when the file cannot
    be read, is not UTF-8, is not YAML or is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise P2PError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise P2PError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f":{line + 1}" if line is not None else ""
        raise P2PError(f"{path}{where}: not valid YAML") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise P2PError(f"{path}: expected a mapping of config keys at the top level")
    return data


def build_config(file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 *, source: str = "config") -> TrainConfig:
    """Defaults ← file values ← overrides (flags), each key validated.

    ``overrides`` entries that are ``None`` mean "flag not given" and are skipped.
    """
    values: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        if key not in KEYS:
            raise P2PError(f"{source}: unknown key '{key}'{did_you_mean(str(key), KEYS)}")
        values[key] = coerce_value(key, value)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in KEYS:
            raise P2PError(f"unknown option '{key}'{did_you_mean(key, KEYS)}")
        values[key] = coerce_value(key, value)
    cfg = TrainConfig(**values)
    if cfg.augment_jpeg > 1:
        raise P2PError(f"config key 'augment_jpeg' is a probability in [0, 1], got {cfg.augment_jpeg}")
    if cfg.warm_epochs > cfg.epochs:
        raise P2PError(f"warm_epochs ({cfg.warm_epochs}) exceeds epochs ({cfg.epochs})")
    if cfg.milestones is not None:
        parse_milestones(cfg.milestones)
    if cfg.dataset != "synthetic" and not cfg.data_root:
        raise P2PError(f"dataset '{cfg.dataset}' needs a data root (--data-root or data_root)")
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← the YAML file at ``path`` (when given) ← ``overrides`` (flags; ``None`` = not given)."""
    file_values = read_config_file(path) if path else {}
    return build_config(file_values, overrides, source=str(path) if path else "config")


def parse_milestones(text: str | None) -> list[int]:
    """``"10,20"`` → [10, 20]; a one-line P2PError for anything else."""
    if text is None or not str(text).strip():
        return []
    try:
        values = sorted(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise P2PError(f"config key 'milestones' expects comma-separated epochs like '10,20', got {text!r}") from None
    if any(v < 0 for v in values):
        raise P2PError(f"config key 'milestones' expects epochs ≥ 0, got {text!r}")
    return values


def config_from_dict(data: dict[str, Any], *, source: str) -> TrainConfig:
    """Rebuild a config saved in a run (ignores the run's bookkeeping keys)."""
    return build_config({k: v for k, v in data.items() if k in KEYS}, source=source)


RESUME_FREE_KEYS = frozenset({"workers", "cache_images", "test_batch_size", "log", "compile"})
"""Keys a resumed run may change: how data is loaded and logged, not what is trained."""


def first_difference(old: TrainConfig, new: TrainConfig, *, ignore: frozenset[str] = frozenset()
                     ) -> tuple[str, Any, Any] | None:
    """The first key (schema order) whose value differs between ``old`` and ``new``, as
    ``(key, old value, new value)``; None when they agree on every key outside ``ignore``."""
    a, b = old.to_dict(), new.to_dict()
    for key in a:
        if key not in ignore and a[key] != b[key]:
            return key, a[key], b[key]
    return None


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def with_overrides(cfg: TrainConfig | None, *, source: str = "run config", **overrides: Any) -> TrainConfig:
    """A run's config with command-line overrides (``None`` = not given), each value validated.

    This is the one place where commands that read a run (evaluate, push, prune, visualize,
    robustness) apply ``--dataset``, ``--data-root`` and friends. Choosing another dataset kind
    drops the recorded ``data_root`` unless a new one is given. Without a recorded config a
    ``dataset`` override is required.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if cfg is None:
        if "dataset" not in given:
            raise P2PError("no run config.yaml records the dataset; pass --dataset (and --data-root)")
        cfg = TrainConfig()
    values = cfg.to_dict()
    if "dataset" in given and given["dataset"] != cfg.dataset and "data_root" not in given:
        values["data_root"] = None
    values.update(given)
    return build_config(values, source=source)
