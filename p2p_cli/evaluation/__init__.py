"""The evaluation algorithms behind ``p2p evaluate``.

* :mod:`~p2p_cli.evaluation.options` — metric names, τ thresholds, :class:`EvalOptions`
  (imports neither torch nor numpy);
* :mod:`~p2p_cli.evaluation.activations` — the arrays of one pass and the streaming pass that
  computes them; :mod:`~p2p_cli.evaluation.images` — the split's images, batch by batch;
* :mod:`~p2p_cli.evaluation.cache` — the activation cache and activations files;
  :mod:`~p2p_cli.evaluation.collect` — every model's arrays on a split, from the cache or one pass;
* :mod:`~p2p_cli.evaluation.report` — every metric from the arrays, in the JSON shape;
* :mod:`~p2p_cli.evaluation.selection` — which runs are teacher, baseline and students.

Nothing is imported here, so ``import p2p_cli.evaluation.options`` stays light.
"""
