"""p2p: prototypical part networks and Proto2Proto interpretability distillation."""

__version__ = "0.1.0"
