"""Shared test setup: offline hub, a per-session data cache, and a tiny training config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CONFIG = """\
dataset: synthetic
synthetic_classes: 3
synthetic_train_per_class: 6
synthetic_test_per_class: 3
synthetic_image_size: 48
image_size: 32
cache_images: true
workers: 0
backbone: resnet18
feature_stride: 16
prototype_depth: 8
prototypes_per_class: 2
epochs: 3
warm_epochs: 1
warm_train_backbone: true
push_start: null
last_layer_epochs: 2
batch_size: 6
test_batch_size: 9
lr_backbone: 1.0e-3
lr_step_start: null
precision: fp32
deterministic: true
"""


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated synthetic data is cached once per test session, outside the user's cache."""
    path = tmp_path_factory.mktemp("p2p-cache")
    os.environ["P2P_CACHE_DIR"] = str(path)
    return path


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path
