"""The real-SLURM tests' fixture: it leaves a cluster it finds alone unless told to use it, and under CI=true it
fails where the tests cannot run (checked with a SLURM configuration made visible through SLURM_CONF)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cluster_tests(tmp_path, **env):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=someone-elses\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "INVOLUTION_TESTS_USE_CLUSTER")}
    environment.update(SLURM_CONF=str(conf), **env)
    command = [sys.executable, "-m", "pytest", "tests/slurm/test_slurm_cluster.py", "-p", "no:cacheprovider"]
    command += ["-rs", "-k", "keeps_its_configuration"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)


def test_a_visible_cluster_is_not_used_without_opting_in(tmp_path):
    result = run_cluster_tests(tmp_path)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
    assert "the tests submit jobs to it only with INVOLUTION_TESTS_USE_CLUSTER=1" in result.stdout


def test_under_ci_tests_that_cannot_run_fail(tmp_path):
    result = run_cluster_tests(tmp_path, CI="true")
    assert result.returncode == 1 and "1 error" in result.stdout, result.stdout
    assert "CI=true and the real-SLURM tests cannot run: a SLURM configuration is visible here" in result.stdout
