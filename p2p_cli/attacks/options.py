"""The names of the robustness attacks and their choices, importable without torch (the CLI's help)."""

ATTACKS = ("head-on-stomach", "jpeg")
"""``head-on-stomach`` (Hoffmann et al. 2021 §3, Eq. 2-3) and ``jpeg`` (§4, App. D.2)."""
REGIONS = ("target", "image")
"""Where the head-on-stomach perturbation δ may be non-zero: the cells outside the original best
match (``target``) or anywhere (``image``, Eq. 3 literally)."""
