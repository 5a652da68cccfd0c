"""The launcher with the debug (in-process) and local (subprocess) executors, and the status report."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ablations import records
from ablations.grid import expand, load_grid
from slurm import launch, manifests, plan, status
from slurm.manifests import latest_submissions

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "ablations" / "grids" / "smoke.yaml")
LOCAL = ["--executor", "local", "--wait-timeout", "10", "train.threads=1"]
# Long enough (seconds per run) to look at the runs while they train.
SLOWER = ["data.synthetic.train_size=2048", "optim.epochs=3"]


def all_records(out_dir):
    return records.read_records(out_dir)[0]


def statuses(out_dir):
    return sorted(r.status for r in all_records(out_dir))


def wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_debug_executor_runs_the_grid_then_skips_it(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--executor", "debug"]) == 0
    assert statuses(tmp_path) == ["finished"] * 4
    manifest = json.loads(next((tmp_path / "submissions").glob("*.json")).read_text())
    assert manifest["executor"] == "debug" and len(manifest["runs"]) == 4
    assert {run["run_id"] for run in manifest["runs"]} == {r.run_id for r in all_records(tmp_path)}
    # The grid values and the job that trained each run survive training's rewrites of the record.
    cells = {cell.run_id: cell for cell in expand(load_grid(SMOKE))}
    for record in all_records(tmp_path):
        assert record.grids == {"smoke": cells[record.run_id].values}
        assert record.job_id == latest_submissions(tmp_path)[record.run_id].job_ids[0]
    capsys.readouterr()
    assert launch.main([SMOKE, "--out", str(tmp_path), "--executor", "debug"]) == 0
    assert "4 runs: 0 to submit, 4 finished" in capsys.readouterr().out
    assert len(list((tmp_path / "submissions").glob("*.json"))) == 1


def test_moving_data_or_changing_workers_and_threads_reruns_nothing(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--executor", "debug"]) == 0
    capsys.readouterr()
    moved = ["data.root=/moved", "data.num_workers=2", "train.threads=1"]
    assert launch.main([SMOKE, *moved, "--out", str(tmp_path), "--executor", "debug"]) == 0
    assert "0 to submit, 4 finished" in capsys.readouterr().out


def test_cells_shared_by_two_grids_run_once_and_keep_both_memberships(tmp_path):
    other = tmp_path / "other.yaml"  # kernel size 3 at lr 0.2 is also a smoke cell
    other.write_text(f"base: {REPO / 'ablations' / 'configs' / 'synthetic.yaml'}\naxes: {{optim.lr_per_256: [0.2]}}\n")
    out = tmp_path / "out"
    assert launch.main([SMOKE, str(other), "--out", str(out), "--executor", "debug"]) == 0
    shared = [r for r in all_records(out) if len(r.grids) == 2]
    assert len(all_records(out)) == 4 and len(shared) == 1
    assert shared[0].grids == {"smoke": {"model.options.kernel_size": 3, "optim.lr_per_256": 0.2}, "other": {
        "optim.lr_per_256": 0.2}}  # fmt: skip


def test_dry_run_submits_nothing(tmp_path, capsys):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--dry-run"]) == 0
    assert "4 to submit (4 new)" in capsys.readouterr().out
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_local_executor_runs_subprocesses_two_at_a_time(tmp_path):
    assert launch.main([SMOKE, "--out", str(tmp_path), "--parallel", "2", *LOCAL]) == 0
    assert statuses(tmp_path) == ["finished"] * 4
    assert all(r.hardware["threads"] == 1 for r in all_records(tmp_path))
    assert len({r.job_id for r in all_records(tmp_path)}) == 2, "two worker jobs shared the four runs"


def running_now(out_dir) -> int:
    return sum(records.is_claimed(out_dir, r.run_id) for r in all_records(out_dir))


def test_no_wait_keeps_the_parallel_limit_and_a_second_launch_submits_nothing(tmp_path, capsys):
    args = [SMOKE, *SLOWER, "--out", str(tmp_path), "--parallel", "2", "--no-wait", *LOCAL]
    assert launch.main(args) == 0
    capsys.readouterr()
    # Relaunching while the first launch's runs are queued or running submits nothing.
    assert launch.main(args) == 0
    assert "4 runs: 0 to submit, 4 queued or running" in capsys.readouterr().out
    assert len(list((tmp_path / "submissions").glob("*.json"))) == 1
    most = 0
    deadline = time.time() + 600
    while statuses(tmp_path) != ["finished"] * 4 and time.time() < deadline:
        most = max(most, running_now(tmp_path))
        time.sleep(0.05)
    assert statuses(tmp_path) == ["finished"] * 4
    assert most == 2, f"at most --parallel 2 runs at once, saw {most}"


def test_a_run_whose_job_died_is_resubmitted(tmp_path, capsys):
    first = expand(load_grid(SMOKE), [*SLOWER, "train.threads=1"])[0].run_id
    args = [SMOKE, *SLOWER, "--out", str(tmp_path), "--runs", first, *LOCAL]
    assert launch.main([*args, "--no-wait"]) == 0
    (worker,) = latest_submissions(tmp_path)[first].job_ids
    wait(lambda: getattr(records.read_record(tmp_path, first), "epochs", None), 300, "the first epoch")
    # SIGKILL the job (its training process, then submitit's controller), as the OOM killer would.
    subprocess.run(["pkill", "-KILL", "-P", worker], check=True)
    os.kill(int(worker), signal.SIGKILL)
    wait(lambda: not records.is_claimed(tmp_path, first), 30, "the killed job's lock to go")
    assert records.read_record(tmp_path, first).status == records.RUNNING  # what the dead job left
    assert "its jobs have ended without finishing it" in status.report(tmp_path)
    capsys.readouterr()
    assert launch.main(args) == 0
    out = capsys.readouterr().out
    assert "1 to submit (1 its job ended without finishing), 3 not selected by --runs" in out
    record = records.read_record(tmp_path, first)
    assert record.status == records.FINISHED and len(record.epochs) == 3


def test_failed_runs_are_reported_with_their_log_and_resubmitted_alone(tmp_path, capsys):
    # batch 200 passes validation but exceeds the 4x64-image training set of the smoke runs at run time.
    args = [SMOKE, "--out", str(tmp_path), "--parallel", "4", *LOCAL]
    args += ["data.synthetic.train_size=64", "optim.batch_size=200"]
    assert launch.main(args) == 1
    assert statuses(tmp_path) == ["failed"] * 4
    report = status.report(tmp_path)
    assert "4 failed" in report and "optim.batch_size=200 exceeds the 64 training images" in report
    assert "log tail:" in report and "line" in report.split("log tail:")[1]  # the traceback's end
    failed = all_records(tmp_path)[0].run_id
    capsys.readouterr()
    assert launch.main(args + ["--runs", failed, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 to submit (1 failed before), 3 not selected by --runs" in out and failed in out


def test_status_cli(tmp_path, capsys):
    record = records.RunRecord("abc", "running", {}, {"smoke": {"k": 3}}, model="rednet26", epochs_planned=4)
    record.epochs, record.top1 = [{"top1": 50.0}], 50.0
    records.write_record(tmp_path, record)
    (tmp_path / "broken.json").write_text("{")
    status.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "1 running" in out and "abc  running   rednet26   epochs 1/4  top1 50.00%" in out
    assert "smoke: {'k': 3}" in out and "unreadable:" in out and "broken.json" in out


def test_status_shows_a_detection_runs_iterations_and_ap(tmp_path, capsys):
    record = records.RunRecord("det", "finished", {}, {"coco": {}}, model="Mask R-CNN RedNet-50")
    record.iterations, record.box_ap, record.mask_ap = 120, 9.1, 8.4
    records.write_record(tmp_path, record)
    status.main([str(tmp_path)])
    assert "iterations 120  box AP 9.10, mask AP 8.40" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["nonexistent.yaml"], "slurm.launch: error: grid file not found: nonexistent.yaml"),
        ([SMOKE, "--runs", "feedbeef"], "slurm.launch: error: --runs: not cells of these grids: feedbeef"),
        ([SMOKE, "--parallel", "0"], "slurm.launch: error: --parallel must be at least 1, got 0"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    command = [sys.executable, "-m", "slurm.launch", *args, "--out", str(tmp_path), "--dry-run"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == message


def first_run(*overrides):
    return expand(load_grid(SMOKE), list(overrides))[0].run_id


def test_two_launches_at_once_submit_each_run_once_and_none_fails(tmp_path, monkeypatch, capsys):
    """The second launch waits for the first to have submitted, then finds its run queued or running."""
    run = first_run(*SLOWER, "train.threads=1")
    args = [SMOKE, *SLOWER, "--out", str(tmp_path), "--runs", run, "--no-wait", *LOCAL]
    submitting, go = threading.Event(), threading.Event()
    real_submit = launch.submit

    def slow_first_submit(*arguments):
        if not submitting.is_set():
            submitting.set()
            go.wait(60)
        return real_submit(*arguments)

    monkeypatch.setattr(launch, "submit", slow_first_submit)
    first = threading.Thread(target=launch.main, args=(args,))
    first.start()
    submitting.wait(60)
    second = threading.Thread(target=launch.main, args=(args,))
    second.start()
    time.sleep(2)  # the second launch is now planning, or waiting for the first
    go.set()
    first.join(120)
    second.join(120)
    out = capsys.readouterr().out
    assert "waiting for the launch of host" in out and f"pid {os.getpid()}" in out
    submitted = [r["run_id"] for path in (tmp_path / "submissions").glob("*.json")
                 for r in json.loads(path.read_text())["runs"]]  # fmt: skip
    assert submitted == [run]
    wait(lambda: records.read_record(tmp_path, run).status in ("finished", "failed"), 600, "the run")
    assert records.read_record(tmp_path, run).status == "finished"


def test_a_launcher_killed_right_after_submitting_leaves_its_intent(tmp_path, monkeypatch, capsys):
    """The manifest names the runs before submission: the next launch finds their jobs instead of submitting
    them again."""
    run = first_run(*SLOWER, "train.threads=1")
    args = [SMOKE, *SLOWER, "--out", str(tmp_path), "--runs", run, *LOCAL]
    real_submit = launch.submit

    def submit_then_die(*arguments):
        real_submit(*arguments)
        raise KeyboardInterrupt  # killed before it could record the job ids

    monkeypatch.setattr(launch, "submit", submit_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch.main(args)
    monkeypatch.setattr(launch, "submit", real_submit)
    (manifest,) = (tmp_path / "submissions").glob("*.json")
    assert [r["job_ids"] for r in json.loads(manifest.read_text())["runs"]] == [None]
    capsys.readouterr()
    assert launch.main([*args, "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "0 to submit, 1 queued or running" in out
    wait(lambda: records.read_record(tmp_path, run).status == "finished", 600, "the run")


def test_a_job_finding_its_run_held_elsewhere_leaves_it_unfailed(tmp_path, capsys):
    run = first_run()
    with records.claim(tmp_path, run, "the test"):
        assert launch.main([SMOKE, "--out", str(tmp_path), "--runs", run, "--executor", "debug"]) == 0
        assert records.read_record(tmp_path, run).status == records.PENDING
    assert "1 run(s) are trained by another job or launch" in capsys.readouterr().out


def write_slurm_submission(out_dir, run, job="4242"):
    """A run pending in a SLURM job (as a launch on a cluster leaves it)."""
    records.write_record(out_dir, records.RunRecord(run, records.PENDING, {}))
    path = manifests.write_intent(Path(out_dir), [], [], "slurm", {}, [{"run_id": run, "grids": {}}])
    manifests.record_jobs(path, [[job]])


def fake_command(folder, name, script):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("#!/bin/sh\n" + script)
    (folder / name).chmod(0o755)


def test_squeue_missing_is_one_line_and_force_resubmit_goes_on(tmp_path):
    run = first_run()
    write_slurm_submission(tmp_path, run)
    command = [sys.executable, "-m", "slurm.launch", SMOKE, "--out", str(tmp_path), "--dry-run"]
    env = {**os.environ, "PATH": str(tmp_path / "empty")}  # no squeue
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "slurm.launch: error: squeue not found: cannot tell whether the runs' SLURM jobs still live; "
        "relaunch with --force-resubmit once you know its jobs have ended"
    )
    forced = subprocess.run([*command, "--force-resubmit"], cwd=REPO, capture_output=True, text=True, env=env)
    assert forced.returncode == 0, forced.stderr
    assert f"{run}  would submit (its job ended without finishing)" in forced.stdout


def test_squeue_timing_out_is_one_error_in_launch_and_status(tmp_path, monkeypatch):
    run = first_run()
    write_slurm_submission(tmp_path, run)
    fake_command(tmp_path / "bin", "squeue", "sleep 30\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(plan, "SQUEUE_TIMEOUT_S", 0.5)
    with pytest.raises(plan.JobStateUnknown, match="squeue did not answer within 0.5 s"):
        launch.main([SMOKE, "--out", str(tmp_path), "--dry-run"])
    assert "squeue did not answer within 0.5 s" in status.report(tmp_path)


def test_sbatch_refusing_the_jobs_is_one_line_and_leaves_nothing_pending(tmp_path):
    fake_command(tmp_path / "bin", "sbatch", "echo 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    fake_command(tmp_path / "bin", "srun", "exit 1\n")  # submitit's SLURM executor wants one; never run here
    out = tmp_path / "out"
    command = [sys.executable, "-m", "slurm.launch", SMOKE, "--out", str(out), "--executor", "slurm"]
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run([*command, "--partition", "nope"], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 2
    expected = "slurm.launch: error: sbatch failed: invalid partition specified: nope; nothing was submitted"
    assert result.stderr.strip() == expected
    assert all_records(out) == [] and list((out / "submissions").glob("*.json")) == []
