"""benchmarks/gpu_check.sh fails when one of its stages fails (checked without a GPU: a stand-in python)."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Succeeds at everything the check runs, except the stages whose arguments contain $FAIL.
FAKE_PYTHON = """#!/bin/sh
case "$*" in
    *"$FAIL"*) echo "forced failure" >&2; exit 1 ;;
esac
"""


def gpu_check(tmp_path, fail):
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out"), "FAIL": fail}
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_failing_stage_fails_the_check(tmp_path):
    result = gpu_check(tmp_path, "--dtype float32")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "- op_fp32: exit 1" in result.stdout and result.stdout.strip().endswith("FAILED: op_fp32")


def test_the_check_passes_when_every_stage_passes(tmp_path):
    result = gpu_check(tmp_path, "no stage has this argument")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout
