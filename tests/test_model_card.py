"""The model card (README.md in the Hub's format) rendered from a run's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import save_tensors
from p2p_cli.io.model_card import (
    MARKER,
    CardInputs,
    is_generated,
    parse_front_matter,
    read_card_inputs,
    render_model_card,
    safetensors_metadata,
    write_model_card,
)

TEACHER_META = {"format": "p2p-model", "arch": "protopnet", "p2p_version": "0.1.0", "stage": "final",
                "model_config": {"backbone": "resnet34", "num_classes": 3, "prototypes_per_class": 2,
                                 "prototype_depth": 64, "add_on": "regular", "feature_stride": 32},
                "class_names": ["a", "b", "c"], "num_prototypes": 6, "test_acc": 0.8}
TEACHER_RUN = {"name": "teacher", "path": "/runs/teacher", "weights_hash": "abcdef0123456789", "backbone": "resnet34"}
CONFIG = {"schema_version": 1, "p2p_version": "0.1.0", "command": "train-teacher", "argv": ["train-teacher"],
          "dataset": "cub", "data_root": "/data/CUB_200_2011", "image_size": 224, "backbone": "resnet34",
          "epochs": 10, "push_start": None, "seed": 3, "method": "proto2proto", "lambda_global": 10.0}
METRICS = [{"epoch": 1, "stage": "warm", "total": 2.0, "train_acc": 0.4, "test_acc": 0.3, "seconds": 1.0},
           {"epoch": 2, "stage": "joint", "total": 1.5, "train_acc": 0.6, "test_acc": 0.5, "seconds": 1.0},
           {"epoch": 2, "stage": "push", "push_distance": 0.1, "test_acc": 0.45},
           {"epoch": 2, "stage": "last_layer", "ll_epoch": 1, "total": 1.2, "train_acc": 0.7, "test_acc": 0.8}]
REPORT = {"taus": ["0.1", "inf"], "teacher": "teacher", "headline_tau": "0.1", "split": "test", "num_images": 90,
          "fidelity": "paper",
          "models": {"teacher": {"acc": 0.8, "aap": {"0.1": 8.2, "inf": 9.0}, "ajs": {"0.1": 1.0, "inf": 1.0},
                                 "pms": 1.0, "role": "teacher"},
                     "student": {"acc": 0.877, "aap": {"0.1": 12.34, "inf": 13.0}, "ajs": {"0.1": 0.4, "inf": 0.66},
                                 "pms": 0.751, "role": "student"}}}


def student_inputs(**kw) -> CardInputs:
    meta = {**TEACHER_META, "model_config": {**TEACHER_META["model_config"], "backbone": "resnet18"},
            "teacher": TEACHER_RUN, "method": "proto2proto", "head": "copy", "fidelity": "paper"}
    config = {**CONFIG, "command": "distill", "backbone": "resnet18", "teacher_run": TEACHER_RUN}
    return CardInputs(name="student", config=config, meta=meta, metrics=METRICS, **kw)


def card_parts(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_teacher_card_front_matter_and_sections():
    text = render_model_card(CardInputs(name="teacher", config=CONFIG, meta=TEACHER_META, metrics=METRICS))
    meta, body = card_parts(text)
    assert meta["library_name"] == "p2p" and meta["pipeline_tag"] == "image-classification"
    assert {"p2p", "protopnet", "interpretability"} <= set(meta["tags"])
    assert "proto2proto" not in meta["tags"] and "base_model" not in meta  # trained from scratch, no teacher
    assert meta["datasets"] == ["CUB-200-2011"] and meta["metrics"] == ["accuracy"]
    assert body.index("## Model") < body.index("## Training") < body.index("## How to use") < body.index("## Citation")
    assert "## Teacher" not in body and "## Evaluation" not in body and "## Explanation" not in body
    assert "| prototypes | 6 |" in body and "| backbone | resnet34 |" in body
    assert "method:" not in body  # distillation keys only for students
    assert "push_start: null" in body and "seed: 3" in body
    assert "| last_layer | 1 | 1.200 | 0.700 | 0.800 |" in body and "Final test accuracy: **0.800**" in body
    assert "p2p predict --model teacher" in body
    assert "@inproceedings{chen2019looks" in body and "keswani2022proto2proto" not in body
    assert MARKER in body


def test_student_card_has_teacher_evaluation_figure_and_all_citations():
    text = render_model_card(student_inputs(evaluation=REPORT, figure="figures/explanation.png",
                                            repo_id="org/student"))
    meta, body = card_parts(text)
    assert {"proto2proto", "knowledge-distillation"} <= set(meta["tags"])
    assert meta["metrics"] == ["accuracy", "aap", "ajs", "pms"]
    assert "## Teacher" in body and "`abcdef0123456789`" in body and "distilled with Proto2Proto" in body
    assert "| **student** | student | 0.877 | 12.34 | 0.400 | 0.751 |" in body
    assert "| teacher | teacher | 0.800 | 8.20 | 1.000 | 1.000 |" in body
    assert "AAP(τ=0.1)" in body
    assert "![Explanation of a test image](figures/explanation.png)" in body
    assert "p2p predict --model hf-hub:org/student" in body
    assert "@inproceedings{chen2019looks" in body and "@inproceedings{keswani2022proto2proto" in body
    assert "method: proto2proto" in body


def test_base_model_is_the_hub_teacher():
    hub_teacher = {**TEACHER_RUN, "path": "/root/.cache/huggingface/hub/models--org--big-teacher/snapshots/abc"}
    inputs = student_inputs()
    inputs.config["teacher_run"] = hub_teacher
    assert card_parts(render_model_card(inputs))[0]["base_model"] == "org/big-teacher"
    assert card_parts(render_model_card(student_inputs(base_model="org/explicit")))[0]["base_model"] == "org/explicit"


def test_prototree_and_protopshare_citations():
    tree = CardInputs(name="tree", config={**CONFIG, "arch": "prototree"},
                      meta={**TEACHER_META, "arch": "prototree",
                            "model_config": {"backbone": "resnet18", "num_classes": 3, "depth": 3}})
    _, body = card_parts(render_model_card(tree))
    assert "nauta2021neural" in body and "chen2019looks" not in body and "| tree depth | 3 |" in body
    pruned = student_inputs()
    pruned.config["pruning"] = {"method": "protopshare", "prototypes_before": 6, "prototypes_after": 3,
                                "source": {"name": "student"}}
    meta, body = card_parts(render_model_card(pruned))
    assert "rymarczyk2021protopshare" in body and "from 6 to 3 prototypes" in body
    assert {"pruning", "protopshare"} <= set(meta["tags"])


def test_huggingface_modelcard_parses_it():
    card = ModelCard(render_model_card(student_inputs(evaluation=REPORT, repo_id="org/student")))
    data = card.data.to_dict()
    assert data["library_name"] == "p2p" and "proto2proto" in data["tags"] and data["datasets"] == ["CUB-200-2011"]
    assert "## Citation" in card.text


def fake_run(path: Path) -> Path:
    path.mkdir(parents=True)
    save_tensors(path / "model.safetensors", {"w": torch.zeros(2)}, TEACHER_META)
    (path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    return path


def test_write_model_card_from_a_run_directory(tmp_path):
    run = fake_run(tmp_path / "teacher")
    assert safetensors_metadata(run / "model.safetensors")["model_config"]["backbone"] == "resnet34"
    inputs = read_card_inputs(run)
    assert inputs.name == "teacher" and inputs.metrics == METRICS and inputs.evaluation is None
    assert inputs.figure is None
    (run / "figures").mkdir()
    (run / "figures" / "explanation.png").write_bytes(b"png")
    (run / "evaluation.json").write_text(json.dumps({**REPORT, "models": {
        "teacher": REPORT["models"]["teacher"]}}))
    path = write_model_card(run, repo_id="org/teacher")
    text = path.read_text()
    assert parse_front_matter(text)["metrics"] == ["accuracy", "aap", "ajs", "pms"]
    assert "figures/explanation.png" in text and "## Evaluation" in text
    assert is_generated(path)
    path.write_text("# mine\n")
    assert not is_generated(path)
    assert is_generated(run / "nothing.md")


def test_errors(tmp_path):
    with pytest.raises(P2PError, match="not a finished p2p run"):
        read_card_inputs(tmp_path)
    (tmp_path / "x.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(P2PError, match="not a readable safetensors file"):
        safetensors_metadata(tmp_path / "x.safetensors")
    with pytest.raises(P2PError, match="not closed"):
        parse_front_matter("---\nlibrary_name: p2p\n")
    assert parse_front_matter("# no front matter") == {}
