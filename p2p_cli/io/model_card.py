"""The model card of a finished run: ``README.md`` in the Hugging Face Hub's model-card format.

YAML front matter (``library_name: p2p``, ``tags``, ``datasets``, ``metrics``, ``pipeline_tag``
and ``base_model`` when the model derives from one on the Hub), then: what the model is
(architecture, prototypes), its teacher (a Proto2Proto student, Keswani et al., CVPR 2022),
the training configuration and curve summary, the evaluation table when one was run, the
explanation figure, how to use it with one command, and the citations of the methods it uses
(ProtoPNet, Chen et al., NeurIPS 2019; Proto2Proto; ProtoTree, Nauta et al., CVPR 2021;
ProtoPShare, Rymarczyk et al., KDD 2021).

:func:`render_model_card` is pure text from the run's records (no torch);
:func:`read_card_inputs` gathers those records from a run directory (the weights' metadata is
read from the safetensors header alone) and :func:`write_model_card` writes the card.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_text
from p2p_cli.io.citations import CITATIONS, PAPERS

README = "README.md"
EVALUATION_JSON = "evaluation.json"
FIGURE = "figures/explanation.png"
MARKER = "<!-- p2p model card: `p2p hub push` regenerates this file while this line is here -->"
"""A card that still holds this line was written by p2p and may be regenerated; remove it to keep edits."""



@dataclass(frozen=True)
class ArchCard:
    """How a card describes an architecture: its name, its paper (a key of :data:`CITATIONS`) and the
    extra rows of the Model section as ``(label, model_config key)``."""

    title: str
    paper: str
    rows: tuple[tuple[str, str], ...] = ()


ARCHITECTURES = {"protopnet": ArchCard("ProtoPNet", "protopnet"),
                 "prototree": ArchCard("ProtoTree", "prototree", (("tree depth", "depth"),))}
"""Per ``arch`` (the model registry's key); an unknown arch is described as a ProtoPNet."""
DATASET_IDS = {"synthetic": "p2p-synthetic", "cub": "CUB-200-2011", "cars": "stanford-cars"}
TRAINING_KEYS = ("dataset", "image_size", "crop_bbox", "augment", "repeats", "backbone", "pretrained",
                 "prototypes_per_class", "prototype_depth", "epochs", "warm_epochs", "push_start", "push_every",
                 "last_layer_epochs", "last_layer_data", "batch_size", "lr_backbone", "lr_add_on", "lr_prototypes",
                 "lr_last_layer",
                 "lambda_clst", "lambda_sep", "lambda_l1", "method", "lambda_global", "lambda_ppc", "tau_train",
                 "head", "fidelity", "precision", "seed")


@dataclass
class CardInputs:
    """What a card is made of: the run's records (all plain data).

    Attributes:
        name: the run's name (the card's title).
        config: ``config.yaml`` as written (including ``command``, ``teacher_run``, ``pruning``).
        meta: the metadata of ``model.safetensors`` (``arch``, ``model_config``, ``class_names``,
            ``num_prototypes``, ``teacher``, ``method``, ``test_acc`` …).
        metrics: the training records (``metrics.jsonl``), one dict per epoch and stage.
        evaluation: a ``p2p evaluate --json`` report that includes this run, or None.
        figure: path of the explanation figure relative to the run directory, or None.
        repo_id: the Hub repository (``ORG/NAME``) the card is published to, or None.
        base_model: the Hub model this one derives from, or None (then taken from a teacher
            loaded as ``hf-hub:``).
    """

    name: str
    config: dict[str, Any]
    meta: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    figure: str | None = None
    repo_id: str | None = None
    base_model: str | None = None

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch") or self.config.get("arch") or "protopnet")

    @property
    def arch_card(self) -> ArchCard:
        return ARCHITECTURES.get(self.arch, ARCHITECTURES["protopnet"])

    @property
    def teacher(self) -> dict[str, Any] | None:
        rec = self.config.get("teacher_run") or self.meta.get("teacher")
        return rec if isinstance(rec, dict) else None

    @property
    def method(self) -> str | None:
        """The distillation method of a student (``none`` for a baseline), else None."""
        if self.teacher is None:
            return None
        return str(self.meta.get("method") or self.config.get("method") or "proto2proto")

    @property
    def pruning(self) -> dict[str, Any] | None:
        rec = self.config.get("pruning") or self.meta.get("pruning")
        return rec if isinstance(rec, dict) else None


def papers(inputs: CardInputs) -> list[str]:
    """Keys of :data:`CITATIONS` that the run's methods come from, in citation order."""
    out = [inputs.arch_card.paper]
    if inputs.method == "proto2proto":
        out.append("proto2proto")
    if inputs.pruning and inputs.pruning.get("method") == "protopshare":
        out.append("protopshare")
    return out


def dataset_id(config: dict[str, Any]) -> str:
    kind = str(config.get("dataset") or "synthetic")
    if kind in DATASET_IDS:
        return DATASET_IDS[kind]
    root = config.get("data_root")
    return Path(str(root)).name if root else kind


_HF_CACHE_PATH = re.compile(r"models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]")


def hub_base_model(inputs: CardInputs) -> str | None:
    """``base_model``: given explicitly, else the teacher's Hub repository when the teacher was
    loaded from the Hub (an ``hf-hub:`` reference, or a path inside the Hugging Face cache,
    ``…/models--ORG--NAME/snapshots/…``); None for a model trained from scratch or from a local teacher."""
    if inputs.base_model:
        return inputs.base_model
    teacher = inputs.teacher or {}
    for key in ("hub", "ref", "path", "name"):
        value = str(teacher.get(key) or "")
        if value.startswith("hf-hub:"):
            return value[len("hf-hub:"):].split("@", 1)[0]
        found = _HF_CACHE_PATH.search(value)
        if found:
            return f"{found.group(1)}/{found.group(2)}"
    return None


def front_matter(inputs: CardInputs) -> dict[str, Any]:
    """The card's YAML metadata (the Hub's model-card fields)."""
    tags = ["p2p", "interpretability", "prototypical-part-network", inputs.arch, "image-classification"]
    if inputs.method == "proto2proto":
        tags += ["proto2proto", "knowledge-distillation"]
    elif inputs.method and inputs.method != "none":
        tags += ["knowledge-distillation", inputs.method]
    if inputs.pruning:
        tags += ["pruning", str(inputs.pruning.get("method") or "pruned")]
    metrics = ["accuracy"]
    if inputs.evaluation:
        row = _eval_row(inputs)
        metrics += [m for m in ("aap", "ajs", "pms") if row and row.get(m) is not None]
    data: dict[str, Any] = {"library_name": "p2p", "pipeline_tag": "image-classification",
                            "tags": list(dict.fromkeys(tags)), "datasets": [dataset_id(inputs.config)],
                            "metrics": metrics}
    base = hub_base_model(inputs)
    if base:
        data["base_model"] = base
    return data


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _eval_row(inputs: CardInputs) -> dict[str, Any] | None:
    models = (inputs.evaluation or {}).get("models") or {}
    return models.get(inputs.name)


def _model_section(inputs: CardInputs) -> list[str]:
    mc = inputs.meta.get("model_config") or {}
    classes = inputs.meta.get("class_names") or []
    m = inputs.meta.get("num_prototypes")
    size = inputs.config.get("image_size")
    rows = [("architecture", PAPERS[inputs.arch_card.paper]),
            ("backbone", mc.get("backbone")), ("prototypes", m),
            ("prototype shape", f"{mc.get('prototype_depth')}×1×1" if mc.get("prototype_depth") else None),
            ("classes", len(classes) or mc.get("num_classes")), ("input", f"{size}×{size} RGB, ImageNet mean/std"
                                                                  if size else None),
            ("add-on", mc.get("add_on")), ("feature stride", mc.get("feature_stride"))]
    rows += [(label, mc.get(key)) for label, key in inputs.arch_card.rows]
    lines = ["## Model", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
    lines += ["", "Every prediction is explained by its prototypes: learned parts, each projected onto a patch of a "
              "training image (`prototypes.json` records which), compared with every patch of the input "
              "(“this looks like that”)."]
    if classes:
        shown = ", ".join(str(c) for c in classes[:10]) + (f", … ({len(classes)} in all)" if len(classes) > 10 else "")
        lines += ["", f"Classes: {shown}."]
    return lines


def _teacher_section(inputs: CardInputs) -> list[str]:
    t = inputs.teacher
    if t is None:
        return []
    method = inputs.method
    how = ("distilled with Proto2Proto (Keswani et al., CVPR 2022): the student's prototypes and patch "
           "embeddings are trained to match the teacher's (global explanation loss and patch-prototype "
           "correspondence loss, Eq. 3-6)" if method == "proto2proto" else
           "trained without transfer from the teacher (a baseline student)" if method == "none" else
           f"distilled with `{method}`")
    lines = ["## Teacher", "", f"This student was {how}.", "", "| | |", "|---|---|",
             f"| teacher | {t.get('name')} |", f"| teacher backbone | {t.get('backbone')} |",
             f"| teacher weights (sha256 prefix) | `{t.get('weights_hash')}` |"]
    for key in ("head", "fidelity"):
        if inputs.meta.get(key):
            lines.append(f"| {key} | {inputs.meta[key]} |")
    return lines


def _training_section(inputs: CardInputs) -> list[str]:
    cfg = inputs.config
    lines = ["## Training", "", f"Trained with `p2p {cfg.get('command', 'train-teacher')}` "
             f"(p2p {cfg.get('p2p_version', inputs.meta.get('p2p_version', '?'))}); the full configuration is "
             "`config.yaml`, the reproducibility record `environment.json`, the curves `metrics.csv`.", ""]
    shown = {k: cfg[k] for k in TRAINING_KEYS if k in cfg}
    if inputs.teacher is None:
        for key in ("method", "lambda_global", "lambda_ppc", "tau_train", "head", "fidelity"):
            shown.pop(key, None)
    if shown:
        lines += ["```yaml", yaml.safe_dump(shown, sort_keys=False).rstrip(), "```", ""]
    if inputs.pruning:
        p = inputs.pruning
        lines += [f"Pruned with `{p.get('method')}` from {p.get('prototypes_before')} to {p.get('prototypes_after')} "
                  f"prototypes (source run {(p.get('source') or {}).get('name')}).", ""]
    stages: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for rec in inputs.metrics:
        stage = str(rec.get("stage", "?"))
        stages[stage] = rec
        counts[stage] = counts.get(stage, 0) + 1
    if stages:
        lines += ["| stage | rows | last loss | last train acc | last test acc |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {counts[s]} | {_num(r.get('total'))} | {_num(r.get('train_acc'))} | "
                  f"{_num(r.get('test_acc'))} |" for s, r in stages.items()]
        lines.append("")
    acc = inputs.meta.get("test_acc")
    if acc is None and inputs.metrics:
        acc = inputs.metrics[-1].get("test_acc")
    if acc is not None:
        lines.append(f"Final test accuracy: **{_num(acc)}**.")
    return lines


def _evaluation_section(inputs: CardInputs) -> list[str]:
    report = inputs.evaluation
    if not report or not report.get("models"):
        return []
    tau = report.get("headline_tau")
    lines = ["## Evaluation", "",
             f"`p2p evaluate` on the {report.get('split', 'test')} split ({report.get('num_images', '?')} images"
             f"{', fidelity ' + str(report['fidelity']) if report.get('fidelity') else ''}); AAP and AJS at the "
             f"headline τ = {tau}, PMS as in Proto2Proto (Keswani et al., CVPR 2022, Sec. 4). The teacher "
             "scores AJS = PMS = 1 by definition.", "",
             f"| model | role | accuracy | AAP(τ={tau}) | AJS(τ={tau}) | PMS |", "|---|---|---|---|---|---|"]
    for name, row in report["models"].items():
        label = f"**{name}**" if name == inputs.name else name
        aap = (row.get("aap") or {}).get(str(tau)) if isinstance(row.get("aap"), dict) else None
        ajs = (row.get("ajs") or {}).get(str(tau)) if isinstance(row.get("ajs"), dict) else None
        lines.append(f"| {label} | {row.get('role', '')} | {_num(row.get('acc'))} | {_num(aap, 2)} | "
                     f"{_num(ajs)} | {_num(row.get('pms'))} |")
    return lines


def _usage_section(inputs: CardInputs) -> list[str]:
    ref = f"hf-hub:{inputs.repo_id}" if inputs.repo_id else inputs.name
    return ["## How to use", "", "With p2p installed, one command classifies a folder of images and names, "
            "per image, the prototypes that decided (similarity and location):", "", "```bash",
            f"p2p predict --model {ref} photos/ --top-k 5 --csv predictions.csv", "```", "",
            "Explain one image with the prototypes' source patches: "
            f"`p2p visualize --model {ref} --image photo.jpg`. To run the model without p2p, export it "
            f"(`p2p export {ref} --format onnx`) and see `docs/deploy.md` in the p2p repository."]


def render_model_card(inputs: CardInputs) -> str:
    """The card's text: front matter, then the sections (see the module docstring)."""
    head = yaml.safe_dump(front_matter(inputs), sort_keys=False, allow_unicode=True)
    kind = inputs.arch_card.title
    backbone = (inputs.meta.get("model_config") or {}).get("backbone", "?")
    what = f"A {kind} with a {backbone} backbone"
    if inputs.method == "proto2proto" and inputs.teacher:
        what += f", distilled with Proto2Proto from the teacher `{inputs.teacher.get('name')}`"
    elif inputs.method and inputs.teacher:
        what += f", a student of `{inputs.teacher.get('name')}` (method `{inputs.method}`)"
    parts: list[list[str]] = [
        [f"# {inputs.name}", "", MARKER, "",
         f"{what}, trained on {dataset_id(inputs.config)} with p2p: an interpretable image classifier that "
         "explains every prediction with prototypical parts."],
        _model_section(inputs), _teacher_section(inputs), _training_section(inputs), _evaluation_section(inputs)]
    if inputs.figure:
        parts.append(["## Explanation", "", f"![Explanation of a test image]({inputs.figure})", "",
                      "The top prototypes of the predicted class: where each activates on the image, and the "
                      "training patch it was projected onto."])
    parts.append(_usage_section(inputs))
    cites = papers(inputs)
    parts.append(["## Citation", "", "This model implements " + ", ".join(PAPERS[p] for p in cites) + ":", "",
                  "```bibtex", "\n\n".join(CITATIONS[p] for p in cites), "```"])
    body = "\n\n".join("\n".join(p) for p in parts if p)
    return f"---\n{head}---\n\n{body}\n"


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (``{}`` when there is none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    if end < 0:
        raise P2PError("model card: the YAML front matter is not closed by '---'")
    data = yaml.safe_load(text[4:end + 1])
    return data if isinstance(data, dict) else {}


def safetensors_metadata(path: str | Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file from its JSON header (8-byte little-endian
    length, then the header), values JSON-decoded where they are JSON; no tensor is read."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(fh.read(n))
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        raise P2PError(f"{path}: not a readable safetensors file") from None
    out: dict[str, Any] = {}
    for key, value in (header.get("__metadata__") or {}).items():
        try:
            out[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            out[key] = value
    return out


def read_card_inputs(run_path: str | Path, *, evaluation: dict[str, Any] | None = None, figure: str | None = None,
                     repo_id: str | None = None, base_model: str | None = None) -> CardInputs:
    """Gather a finished run's records for its card. ``evaluation`` defaults to the run's
    ``evaluation.json`` and ``figure`` to ``figures/explanation.png``, when present."""
    run = Path(run_path)
    config_path, model_path = run / "config.yaml", run / "model.safetensors"
    if not model_path.is_file() or not config_path.is_file():
        raise P2PError(f"'{run}' is not a finished p2p run (needs model.safetensors and config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise P2PError(f"{config_path}: not valid YAML") from None
    metrics_path = run / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
        if metrics_path.is_file() else []
    if evaluation is None and (run / EVALUATION_JSON).is_file():
        evaluation = json.loads((run / EVALUATION_JSON).read_text(encoding="utf-8"))
    if figure is None and (run / FIGURE).is_file():
        figure = FIGURE
    return CardInputs(name=run.name, config=config if isinstance(config, dict) else {},
                      meta=safetensors_metadata(model_path), metrics=metrics, evaluation=evaluation, figure=figure,
                      repo_id=repo_id, base_model=base_model)


def is_generated(path: str | Path) -> bool:
    """True when ``path`` is missing or is a card p2p wrote and nobody claimed (the marker is there)."""
    path = Path(path)
    return not path.exists() or MARKER in path.read_text(encoding="utf-8", errors="replace")


def write_model_card(run_path: str | Path, **kwargs: Any) -> Path:
    """Write ``<run>/README.md`` from :func:`read_card_inputs` (keyword arguments pass through)."""
    path = Path(run_path) / README
    atomic_write_text(path, render_model_card(read_card_inputs(run_path, **kwargs)))
    return path
