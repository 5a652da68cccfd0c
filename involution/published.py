"""The published numbers (results/paper/*.csv in a clone of the repository)."""

import csv
from pathlib import Path
from typing import Optional

PAPER_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"


def published_complexity(registry_name: str) -> Optional[dict]:
    """Published params (M), FLOPs (G) and source of a registered model, or None (not listed, or the
    package is installed without the repository's results/)."""
    path = PAPER_DIR / "imagenet.csv"
    if not path.exists():
        return None
    with path.open() as table:
        for row in csv.DictReader(table):
            if row["registry_name"] == registry_name:
                return {"params_m": float(row["params_m"]), "flops_g": float(row["flops_g"]), "source": row["source"]}
    return None
