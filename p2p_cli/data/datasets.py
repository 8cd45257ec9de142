"""Old home of the dataset code, now split into :mod:`p2p_cli.data.index` (types, errors),
:mod:`p2p_cli.data.readers` (one reader per layout) and :mod:`p2p_cli.data.images` (decoding,
geometry, ``ImageDataset``); the old names stay importable from here until callers move."""

from p2p_cli.data.images import (  # re-export: remove after merge
    ImageDataset,
    crop_box,
    file_sha256,
    image_dims,
    input_geometry,
    load_image,
    load_image_array,
    open_rgb,
    parts_in_input,
)
from p2p_cli.data.index import (  # re-export: remove after merge
    Box,
    DataError,
    DatasetIndex,
    Issue,
    Part,
    Sample,
    unwrap_worker_error,
)
from p2p_cli.data.readers import IMAGE_EXTENSIONS, KINDS, load_index, scan_index  # re-export: remove after merge
from p2p_cli.data.readers.cub import CUB_REQUIRED  # re-export: remove after merge

__all__ = [
    "CUB_REQUIRED", "IMAGE_EXTENSIONS", "KINDS", "Box", "DataError", "DatasetIndex", "ImageDataset", "Issue",
    "Part", "Sample", "crop_box", "file_sha256", "image_dims", "input_geometry", "load_image", "load_image_array",
    "load_index", "open_rgb", "parts_in_input", "scan_index", "unwrap_worker_error",
]
