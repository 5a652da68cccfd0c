"""A real single-node SLURM cluster for these tests: used if one answers, else started (as root) with
slurm/local_cluster.sh and stopped at the end; the tests skip with the reason when neither works."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "local_cluster.sh"


def _answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "idle" in result.stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    if _answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster answers and starting one (slurm/local_cluster.sh) needs root")
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.skip(f"could not start a local SLURM cluster: {result.stderr.strip()[-2000:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
