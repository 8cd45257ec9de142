"""Explanations of trained prototypical part networks, as arrays and numbers (and the figures
built from them):

* :mod:`~p2p_cli.explain.local` — ProtoPNet's local explanation of one image (Chen et al. 2019,
  Fig. 2): top-k prototypes by contribution = similarity × last-layer weight;
* :mod:`~p2p_cli.explain.tree_path` — a ProtoTree's greedy decision path (Nauta et al. 2021);
* :mod:`~p2p_cli.explain.sources` — a prototype's source patch from ``prototypes.json``;
* :mod:`~p2p_cli.explain.matching` — Hungarian-matched teacher and student prototypes
  (Proto2Proto, Keswani et al. 2022, Algorithm 1 and Fig. 4);
* :mod:`~p2p_cli.explain.images` — reading images, model inputs, dataset regions and parts;
* :mod:`~p2p_cli.explain.panels`, :mod:`~p2p_cli.explain.gallery`, :mod:`~p2p_cli.explain.sections`
  — figure columns, JSON records and HTML sections for ``p2p visualize``.
"""
