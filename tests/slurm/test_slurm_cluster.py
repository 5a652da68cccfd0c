"""Through submitit's real SlurmExecutor on a local SLURM cluster: arrays, preemption and requeue, failures."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import submitit

from ablations import records
from ablations.config import load_config
from ablations.grid import expand, load_grid
from ablations.train import train
from slurm import launch, status
from slurm.job import TrainingJob

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]
REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "ablations" / "grids" / "smoke.yaml")
SYNTHETIC = REPO / "ablations" / "configs" / "synthetic.yaml"
SLURM = ["--executor", "slurm", "--cpus-per-task", "1", "--time", "30", "--wait-timeout", "10"]
# (--time above 10 min: submitit counts every USR2 as a time-out below that.)


def all_records(out_dir):
    return records.read_records(out_dir)[0]


def test_the_local_cluster_keeps_its_configuration_to_itself(slurm_cluster):
    if slurm_cluster is None:
        pytest.skip("the machine's own SLURM cluster is used")
    assert not Path("/etc/slurm/slurm.conf").exists()
    assert os.environ["SLURM_CONF"] == slurm_cluster and Path(slurm_cluster).is_file()
    assert subprocess.run(["sinfo", "-h"], capture_output=True, text=True).returncode == 0
    etc = Path(slurm_cluster).parent
    settings = dict(line.split("=", 1) for line in (etc / "slurm.conf").read_text().splitlines() if "=" in line)
    ports = [int(settings[key]) for key in ("SlurmctldPort", "SlurmdPort", "AccountingStoragePort")]
    assert not set(ports) & {6817, 6818, 6819}, ports
    password = (etc / "db_password").read_text().strip()
    assert len(password) >= 20 and (etc / "db_password").stat().st_mode & 0o077 == 0
    assert f"StoragePass={password}\n" in (etc / "slurmdbd.conf").read_text()


def test_sbatch_refusing_a_partition_is_one_line_and_leaves_nothing_pending(tmp_path):
    command = [sys.executable, "-m", "slurm.launch", SMOKE, "--out", str(tmp_path), *SLURM, "--partition", "nope"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "slurm.launch: error: sbatch failed: invalid partition specified: nope; Batch job submission failed: "
        "Invalid partition name specified; nothing was submitted"
    )
    assert all_records(tmp_path) == [] and list((tmp_path / "submissions").glob("*.json")) == []


def test_grid_as_a_job_array_then_nothing_new(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), *SLURM, "train.threads=1"]) == 0
    assert sorted(r.status for r in all_records(tmp_path)) == ["finished"] * 4
    manifest = json.loads(next((tmp_path / "submissions").glob("*.json")).read_text())
    array = {run["job_ids"][0].split("_")[0] for run in manifest["runs"]}
    assert len(array) == 1, "one job array"
    assert manifest["parameters"]["slurm_array_parallelism"] == 64
    assert {r.job_id for r in all_records(tmp_path)} == {run["job_ids"][0] for run in manifest["runs"]}
    capsys.readouterr()
    assert launch.main([SMOKE, "--out", str(tmp_path), *SLURM, "train.threads=1"]) == 0
    assert "0 to submit, 4 finished" in capsys.readouterr().out


def wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_preempted_job_requeues_and_ends_like_an_uninterrupted_run(tmp_path):
    overrides = ["data.synthetic.train_size=3072", "optim.epochs=3", "train.threads=1"]
    config = load_config(SYNTHETIC, overrides)
    uninterrupted = train(config, tmp_path / "reference", progress=False)

    executor = submitit.AutoExecutor(folder=tmp_path / "logs" / "%j", cluster="slurm", slurm_max_num_timeout=3)
    executor.update_parameters(timeout_min=30, cpus_per_task=1)
    job = executor.submit(TrainingJob([config], str(tmp_path / "runs")))
    record = lambda: records.read_record(tmp_path / "runs", uninterrupted.run_id)
    wait(lambda: record() is not None and len(record().epochs) >= 1, 300, "the first epoch")
    assert len(record().epochs) < 3, "finished before it could be preempted"
    # USR2, as SLURM sends before preemption (--signal): the job checkpoints and requeues itself. Not
    # submitit's job._interrupt(), whose extra SIGTERM can reach the `scontrol requeue` the handler starts.
    subprocess.check_call(["scancel", job.job_id, "--signal", "USR2"])
    wait(lambda: record().status == records.FINISHED, 300, "the requeued job to finish")
    wait(job.done, 120, "the job to end")
    assert job.result() == {uninterrupted.run_id: "finished"}
    resumed = record()
    for key in ("top1", "top5", "train_loss"):
        assert getattr(resumed, key) == getattr(uninterrupted, key), key
    log = Path(job.paths.stderr).read_text() + Path(job.paths.stdout).read_text()
    assert "requeu" in log.lower() or "checkpoint" in log.lower(), log[-2000:]


def test_crashing_jobs_are_reported_failed_without_hanging(tmp_path):
    args = [SMOKE, "--out", str(tmp_path), *SLURM, "data.synthetic.train_size=64", "optim.batch_size=200"]
    started = time.time()
    assert launch.main(args) == 1
    assert time.time() - started < 600
    report = status.report(tmp_path)
    assert "4 failed" in report and "exceeds the 64 training images" in report


def test_grid_cells_map_to_array_tasks_and_a_queued_array_is_not_submitted_twice(tmp_path, capsys):
    cells = expand(load_grid(SMOKE))
    args = [SMOKE, "--out", str(tmp_path), *SLURM, "--no-wait", "--array-parallelism", "1"]
    assert launch.main(args) == 0
    manifest = json.loads(next((tmp_path / "submissions").glob("*.json")).read_text())
    assert [run["run_id"] for run in manifest["runs"]] == [cell.run_id for cell in cells]
    assert [run["job_ids"][0].split("_")[1] for run in manifest["runs"]] == ["0", "1", "2", "3"]
    capsys.readouterr()
    assert launch.main(args) == 0  # squeue still lists the array's tasks (one runs at a time)
    out = capsys.readouterr().out
    assert "0 to submit" in out and "queued or running" in out and "finished" not in out.split("runs:")[1]
    wait(lambda: all(r.status == "finished" for r in all_records(tmp_path)), 600, "the array")


def test_two_tasks_train_with_torch_distributed_from_submitit(tmp_path):
    first = expand(load_grid(SMOKE), ["train.threads=1"])[0].run_id
    args = [SMOKE, "train.threads=1", "--out", str(tmp_path), *SLURM, "--tasks-per-node", "2", "--runs", first]
    assert launch.main(args) == 0
    (record,) = [r for r in all_records(tmp_path) if r.status == "finished"]
    assert record.hardware["processes"] == 2


def test_job_killed_without_a_result_is_reported_failed(tmp_path):
    """SIGKILL (as the OOM killer does) leaves no result file and a record saying running: sacct's FAILED
    state must end the wait and mark the run failed."""
    overrides = ["data.synthetic.train_size=3072", "optim.epochs=3", "train.threads=1"]
    cell = expand(load_grid(SMOKE), overrides)[0]

    def kill_when_training():
        wait(
            lambda: len(getattr(records.read_record(tmp_path, cell.run_id), "epochs", [])) >= 1,
            300,
            "the first epoch",
        )
        subprocess.run(["pkill", "-9", "-f", f"submitit.core._submit {tmp_path}"], check=False)

    killer = threading.Thread(target=kill_when_training)
    killer.start()
    assert launch.main([SMOKE, *overrides, "--out", str(tmp_path), *SLURM, "--runs", cell.run_id]) == 1
    killer.join()
    record = records.read_record(tmp_path, cell.run_id)
    assert record.status == "failed" and "without finishing the run" in record.error


def test_jobs_of_a_launcher_killed_right_after_sbatch_are_found_by_the_next_launch(tmp_path, monkeypatch, capsys):
    overrides = ["train.threads=1", "optim.epochs=50"]  # long enough to be still queued or running
    run = expand(load_grid(SMOKE), overrides)[0].run_id
    args = [SMOKE, *overrides, "--out", str(tmp_path), *SLURM, "--runs", run, "--no-wait"]
    real_submit = launch.submit

    def submit_then_die(*arguments):
        real_submit(*arguments)
        raise KeyboardInterrupt  # killed before it could record the job ids

    monkeypatch.setattr(launch, "submit", submit_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch.main(args)
    monkeypatch.setattr(launch, "submit", real_submit)
    capsys.readouterr()
    assert launch.main(args) == 0
    out = capsys.readouterr().out
    jobs = re.findall(r"queued or running \(job (\d+)", out)
    subprocess.run(["scancel", *jobs], check=False)
    assert "0 to submit, 1 queued or running" in out and jobs, out
