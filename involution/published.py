"""The published numbers: results/paper/<table>.csv (imagenet, coco, cityscapes) in a clone of the repository.

The one reader of those files (the complexity tables and `analysis` use it). Plain csv, so that `involution`
imports without pandas. Every row carries its `source` (where a reader can open it) and `recipe`.
"""

import csv
from pathlib import Path
from typing import Optional

PAPER_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"
NUMERIC = ("params_m", "flops_g", "top1", "top5", "box_ap", "mask_ap", "miou")


def published_rows(table: str) -> list[dict]:
    """The rows of results/paper/<table>.csv: numbers as floats, empty cells as None; [] when the package is
    installed without the repository's results/."""
    path = PAPER_DIR / f"{table}.csv"
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [
            {key: (float(value) if key in NUMERIC else value) if value != "" else None for key, value in row.items()}
            for row in csv.DictReader(file)
        ]


def published_complexity(registry_name: str) -> Optional[dict]:
    """Published params (M), FLOPs (G) and source of a registered model, or None (not listed)."""
    for row in published_rows("imagenet"):
        if row["registry_name"] == registry_name:
            return {"params_m": row["params_m"], "flops_g": row["flops_g"], "source": row["source"]}
    return None
