"""Built-in configurations of the synthetic CPU pipeline (the quickstart's presets).

``fast`` is the schedule of ``examples/synthetic-fast.yaml`` (a test keeps the two equal): it
trains the paper's pipeline on 2 CPU cores in minutes. ``full`` doubles the data and the epochs
for a more stable comparison; ``tiny`` is a smoke test of the pipeline. :data:`ABLATIONS` are the
rows of Proto2Proto's Table 4 (Keswani et al., CVPR 2022) beyond the full method.
"""

from __future__ import annotations

from typing import Any

from p2p_cli.errors import P2PError, did_you_mean

SYNTHETIC_FAST: dict[str, Any] = {
    "dataset": "synthetic",
    "image_size": 112,
    "cache_images": True,
    "workers": 0,
    "backbone": "resnet18",
    "feature_stride": 16,
    "prototype_depth": 64,
    "prototypes_per_class": 10,
    "epochs": 10,
    "warm_epochs": 1,
    "warm_train_backbone": True,
    "push_start": None,
    "last_layer_epochs": 20,
    "batch_size": 32,
    "test_batch_size": 100,
    "lr_backbone": 1.0e-3,
    "lr_add_on": 3.0e-3,
    "lr_prototypes": 3.0e-3,
    "lr_last_layer": 1.0e-3,
    "lr_step_start": None,
    "precision": "auto",
    "channels_last": True,
    "lambda_global": 10,
    "lambda_ppc": 10,
    "tau_train": 100,
}

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"config": SYNTHETIC_FAST, "teacher": "resnet34", "student": "resnet18"},
    "full": {"config": {**SYNTHETIC_FAST, "synthetic_train_per_class": 200, "synthetic_test_per_class": 80,
                        "epochs": 20, "warm_epochs": 2},
             "teacher": "resnet34", "student": "resnet18"},
}


# A smoke test of the whole pipeline in well under a minute (numbers mean nothing at this size).
PRESETS["tiny"] = {
    "config": {**SYNTHETIC_FAST, "synthetic_classes": 3, "synthetic_train_per_class": 6,
               "synthetic_test_per_class": 3, "synthetic_image_size": 48, "image_size": 32, "prototype_depth": 8,
               "prototypes_per_class": 2, "epochs": 3, "last_layer_epochs": 2, "batch_size": 6,
               "test_batch_size": 9, "precision": "fp32"},
    "teacher": "resnet18", "student": "resnet18",
}


# The paper's Table 4 rows beyond the full method: (run suffix, label, config overrides).
ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ppc-only", "L_ppnet + L_ppc", {"lambda_global": 0.0}),
    ("global-only", "L_ppnet + L_global", {"lambda_ppc": 0.0}),
    ("head-init", "L_ppnet + L_ppc + L_global, new head", {"head": "init"}),
    ("head-frozen", "L_ppnet + L_ppc + L_global, teacher's head frozen", {"head": "frozen"}),
    ("no-ppnet", "L_ppc + L_global, teacher's head frozen (no L_ppnet)", {"head": "frozen", "ppnet_loss": False}),
)


def role_configs(preset: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teacher's and the students' config keys: ``config`` updated by the preset's optional
    ``teacher_config`` and ``student_config`` (e.g. each backbone's own pretrained weights)."""
    base = preset["config"]
    return {**base, **preset.get("teacher_config", {})}, {**base, **preset.get("student_config", {})}


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise P2PError(f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
