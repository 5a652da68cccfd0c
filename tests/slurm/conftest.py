"""A real single-node SLURM cluster for these tests.

A machine where a SLURM configuration is visible (slurm/local_cluster.sh check: SLURM_CONF, /etc/slurm, ...)
is left alone: the tests submit to its cluster only when INVOLUTION_TESTS_USE_CLUSTER=1 says they may (and a
node is idle), and skip otherwise. Elsewhere (as root) slurm/local_cluster.sh starts a private cluster whose
configuration lives in its own state folder (SLURM_CONF points there for this session) and stops it at the
end. Under CI=true whatever keeps these tests from running (the private cluster not starting, no root, a
cluster not to be used) fails them instead: CI is green only if they ran.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "local_cluster.sh"
OPT_IN = "INVOLUTION_TESTS_USE_CLUSTER"


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the real-SLURM tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _idle_nodes() -> bool:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "idle" in result.stdout.split()


@pytest.fixture(scope="session")
def slurm_cluster():
    """The configuration file of the cluster this session started, or None for the machine's own cluster."""
    check = subprocess.run(["bash", str(SCRIPT), "check"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        configured = check.stderr.strip().removeprefix("[local_cluster] ")
        if os.environ.get(OPT_IN) != "1":
            unavailable(f"{configured}; the tests submit jobs to it only with {OPT_IN}=1")
        if not (shutil.which("sinfo") and _idle_nodes()):
            unavailable(f"{configured}; it has no idle node")
        yield None
        return
    if os.geteuid() != 0:
        unavailable("no SLURM cluster is configured here and starting one (slurm/local_cluster.sh) needs root")
    state = tempfile.mkdtemp(prefix="involution-slurm-")
    os.chmod(state, 0o755)  # the munge and mysql users reach their folders inside
    env = {**os.environ, "INVOLUTION_SLURM_STATE": state}
    result = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, env=env)
    if result.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120, env=env)
        unavailable(f"could not start a local SLURM cluster: {result.stderr.strip()[-2000:]}")
    os.environ["SLURM_CONF"] = f"{state}/etc/slurm.conf"
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        del os.environ["SLURM_CONF"]
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(state, ignore_errors=True)
