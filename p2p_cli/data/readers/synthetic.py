"""The built-in synthetic dataset: the CUB-200-2011 layout, generated on demand.

With a data root, the folder written by ``p2p data synthesize`` is read with the CUB reader.
Without one, :func:`p2p_cli.data.synthetic.ensure_synthetic` generates (once, cached) the
dataset for the given parameters and that folder is read.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from p2p_cli.data.readers.common import Reader
from p2p_cli.data.readers.cub import read_cub


def _generate(**params: Any) -> Path:
    from p2p_cli.data.synthetic import ensure_synthetic  # numpy/PIL rendering: only when needed

    return ensure_synthetic(**params)


READER = Reader(partial(read_cub, name="synthetic"), generate=_generate,
                root_hint=" (create it with 'p2p data synthesize')")
