"""Loss functions on plain tensors: ProtoPNet, Proto2Proto and KD baselines, plus the method registry.

This layer imports nothing from ``cli``, ``workflows``, ``training``, ``models``, ``metrics`` or ``data``.
"""

from __future__ import annotations

from p2p_cli.losses.kd import HintRegressor, hint_loss, kd_loss, rkd_loss
from p2p_cli.losses.proto2proto import (
    FIDELITIES,
    active_patch_mask,
    global_loss,
    ppc_loss,
    transfer_losses,
)
from p2p_cli.losses.protopnet import cluster_cost, l1_off_class, protopnet_loss, separation_cost
from p2p_cli.losses.registry import DistillMethod, get_method, list_methods, register_method

__all__ = [
    "FIDELITIES",
    "DistillMethod",
    "HintRegressor",
    "active_patch_mask",
    "cluster_cost",
    "get_method",
    "global_loss",
    "hint_loss",
    "kd_loss",
    "l1_off_class",
    "list_methods",
    "ppc_loss",
    "protopnet_loss",
    "register_method",
    "rkd_loss",
    "separation_cost",
    "transfer_losses",
]
