"""The launcher with the debug (in-process) and local (subprocess) executors, and the status report."""

import json
from pathlib import Path

from ablations import records
from slurm import launch, status

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "ablations" / "grids" / "smoke.yaml")


def statuses(out_dir):
    return sorted(r["status"] for r in status.run_records(out_dir))


def test_debug_executor_runs_the_grid_then_skips_it(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--executor", "debug"]) == 0
    assert statuses(tmp_path) == ["finished"] * 4
    manifest = json.loads(next((tmp_path / "submissions").glob("*.json")).read_text())
    assert manifest["executor"] == "debug" and len(manifest["runs"]) == 4
    assert {run["run_id"] for run in manifest["runs"]} == {r["run_id"] for r in status.run_records(tmp_path)}
    capsys.readouterr()
    assert launch.main([SMOKE, "--out", str(tmp_path), "--executor", "debug"]) == 0
    assert "4 skipped (finished or running), 0 to submit" in capsys.readouterr().out
    assert len(list((tmp_path / "submissions").glob("*.json"))) == 1


def test_dry_run_submits_nothing(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--dry-run"]) == 0
    assert "4 to submit" in capsys.readouterr().out
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_local_executor_runs_subprocesses_two_at_a_time(tmp_path):
    assert (
        launch.main(
            [
                SMOKE,
                "--out",
                str(tmp_path),
                "--executor",
                "local",
                "--parallel",
                "2",
                "--wait-timeout",
                "10",
                "train.threads=1",
            ]
        )
        == 0
    )
    assert statuses(tmp_path) == ["finished"] * 4
    assert all(r["hardware"]["threads"] == 1 for r in status.run_records(tmp_path))


def test_failed_runs_are_reported_with_their_log_and_resubmitted_alone(tmp_path, capsys):
    # batch 200 passes validation but exceeds the 4x64-image training set of the smoke runs at run time.
    args = [
        SMOKE,
        "--out",
        str(tmp_path),
        "--executor",
        "local",
        "--parallel",
        "4",
        "--wait-timeout",
        "10",
        "data.synthetic.train_size=64",
        "optim.batch_size=200",
    ]
    assert launch.main(args) == 1
    assert statuses(tmp_path) == ["failed"] * 4
    report = status.report(tmp_path)
    assert "4 failed" in report and "optim.batch_size=200 exceeds the 64 training images" in report
    assert "log tail:" in report and "line" in report.split("log tail:")[1]  # the traceback's end
    failed = status.run_records(tmp_path)[0]["run_id"]
    capsys.readouterr()
    assert launch.main(args + ["--runs", failed, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 to submit" in out and failed in out


def test_status_cli(tmp_path, capsys):
    records.write_record(
        tmp_path,
        {
            "run_id": "abc",
            "status": "running",
            "model": "rednet26",
            "epochs": [{"top1": 50.0}],
            "epochs_planned": 4,
            "top1": 50.0,
        },
    )
    status.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "1 running" in out and "abc  running   rednet26   epochs 1/4  top1  50.00%" in out
