"""A real single-node SLURM cluster for these tests.

A machine with its own SLURM configuration is left alone: its cluster is used when a node is idle,
otherwise the tests skip saying so. Elsewhere (as root) slurm/local_cluster.sh starts a private cluster
whose configuration lives in its own state folder (SLURM_CONF points there for this session) and stops
it at the end.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "local_cluster.sh"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def _idle_nodes() -> bool:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "idle" in result.stdout.split()


@pytest.fixture(scope="session")
def slurm_cluster():
    """The configuration file of the cluster this session started, or None for the machine's own cluster."""
    configured = os.environ.get("SLURM_CONF") or (str(SYSTEM_CONF) if SYSTEM_CONF.exists() else None)
    if configured:
        if shutil.which("sinfo") and _idle_nodes():
            yield None
            return
        pytest.skip(f"the SLURM cluster configured here ({configured}) has no idle node; not starting another")
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster is configured here and starting one (slurm/local_cluster.sh) needs root")
    state = tempfile.mkdtemp(prefix="involution-slurm-")
    os.chmod(state, 0o755)  # the munge and mysql users reach their folders inside
    env = {**os.environ, "INVOLUTION_SLURM_STATE": state}
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120, env=env)
        pytest.skip(f"could not start a local SLURM cluster: {result.stderr.strip()[-2000:]}")
    os.environ["SLURM_CONF"] = f"{state}/etc/slurm.conf"
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        del os.environ["SLURM_CONF"]
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(state, ignore_errors=True)
