"""Readers for the real dataset layouts: re-id (``reid``) and reconstruction (``recon``).

Each reader returns ``(records, summary)``; see :mod:`mirror3d.data.records`.
"""

from mirror3d.data.readers.recon import (
    RECON_READERS,
    market_hq_image_path,
    read_atr,
    read_cub,
    read_image_folder,
    read_market_hq,
    read_recon,
)
from mirror3d.data.readers.reid import (
    REID_READERS,
    parse_reid_name,
    read_cuhk03_np,
    read_dukemtmc,
    read_market1501,
    read_msmt17,
    read_reid,
)

__all__ = [
    "RECON_READERS",
    "REID_READERS",
    "market_hq_image_path",
    "parse_reid_name",
    "read_atr",
    "read_cub",
    "read_cuhk03_np",
    "read_dukemtmc",
    "read_image_folder",
    "read_market1501",
    "read_market_hq",
    "read_msmt17",
    "read_recon",
    "read_reid",
]
