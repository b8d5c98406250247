"""Where the benchmarks' JSON results go (``benchmarks/results/``, git-ignored), and how."""

from __future__ import annotations

import json
import os
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def write_result(result: dict, out: str | os.PathLike) -> pathlib.Path:
    """Write ``result`` as indented JSON to ``out`` (its folder made) and say where."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out
