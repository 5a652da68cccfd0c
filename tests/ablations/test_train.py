"""One training run end to end: the record, resuming after a kill, several processes, the Fashion-MNIST target."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ablations import records, train
from ablations.config import load_config, to_dict
from ablations.data import build_splits
from involution.models import build_model

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "ablations" / "configs" / "synthetic.yaml"
RECORD_KEYS = {
    "run_id",
    "status",
    "model",
    "params",
    "flops",
    "top1",
    "top5",
    "epochs",
    "config",
    "git_commit",
    "flops_convention",
    "train_loss",
    "images_per_s",
    "peak_memory_mib",
    "wall_time_s",
    "hardware",
}


def run_cli(out, *overrides, **popen):
    command = [sys.executable, "-m", "ablations.train", str(SYNTHETIC), "--out", str(out), "--no-progress", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def test_synthetic_run_writes_a_complete_record(tmp_path):
    record = train.main([str(SYNTHETIC), "--out", str(tmp_path), "--no-progress"])
    assert all(getattr(record, key) is not None for key in RECORD_KEYS)
    assert record.status == "finished" and record.model == "rednet26" and record.version == records.SCHEMA_VERSION
    assert len(record.epochs) == 2 and record.epochs[-1]["top1"] == record.top1
    assert record.top1 > 50  # 4 classes: chance is 25%
    assert record.params > 0 and record.flops > 0 and "3x12x12" in record.flops_convention
    on_disk = json.loads(records.record_path(tmp_path, record.run_id).read_text())
    assert on_disk == record.to_dict()
    assert (tmp_path / record.run_id / "checkpoint.pt").exists()
    # A finished run is not trained again.
    again = train.main([str(SYNTHETIC), "--out", str(tmp_path), "--no-progress"])
    assert again == record


def test_top1_and_top5_are_those_of_the_saved_model(tmp_path):
    """On 8 classes, so that top-5 can miss; recomputed from the checkpoint by ranking the true class."""
    config = load_config(SYNTHETIC, ["data.synthetic.num_classes=8", "optim.epochs=1"])
    record = train.train(config, tmp_path, progress=False)
    splits = build_splits(config.data, config.train.seed)
    model = build_model(config.model.name, in_chans=3, num_classes=8, **config.model.options)
    model.load_state_dict(torch.load(tmp_path / record.run_id / "checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        logits = model.eval()(torch.stack([image for image, _ in splits.val]))
    labels = torch.stack([label for _, label in splits.val])
    above = (logits > logits.gather(1, labels[:, None])).sum(1)  # classes ranked above the true one
    assert record.top1 == pytest.approx(100 * (above == 0).float().mean().item())
    assert record.top5 == pytest.approx(100 * (above < 5).float().mean().item())
    assert record.top1 < record.top5 < 100


def test_a_resume_at_another_world_size_is_refused(tmp_path):
    config = load_config(SYNTHETIC, ["optim.epochs=1"])
    record = train.train(config, tmp_path, progress=False)
    checkpoint = tmp_path / record.run_id / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["world_size"] == 1
    # As if a job of 2 processes had trained it and been preempted before writing "finished".
    torch.save({**state, "world_size": 2}, checkpoint)
    records.write_record(tmp_path, records.RunRecord(record.run_id, records.RUNNING, record.config))
    before = records.record_path(tmp_path, record.run_id).read_text()
    command = [sys.executable, "-m", "ablations.train", str(SYNTHETIC), "--out", str(tmp_path), "optim.epochs=1"]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ablations.train: error: run {record.run_id}: its checkpoint was trained by 2 processes, this job has 1; "
        "resume it with 2 (the global batch depends on it)"
    )
    assert records.record_path(tmp_path, record.run_id).read_text() == before


def test_grid_values_and_job_id_survive_training(tmp_path):
    config = load_config(SYNTHETIC)
    run = records.run_id(to_dict(config))
    records.write_record(tmp_path, records.RunRecord(run, records.PENDING, to_dict(config), {"smoke": {"k": 3}}))
    record = train.train(config, tmp_path, progress=False, job_id="42_3")
    assert record.grids == {"smoke": {"k": 3}} and record.job_id == "42_3"
    assert records.read_record(tmp_path, run) == record


def test_a_run_held_by_another_process_is_not_touched(tmp_path):
    config = load_config(SYNTHETIC)
    run = records.run_id(to_dict(config))
    records.write_record(tmp_path, records.RunRecord(run, records.RUNNING, to_dict(config), {"smoke": {}}))
    before = records.record_path(tmp_path, run).read_text()
    with records.claim(tmp_path, run, "host h, pid 1, job 9"):
        with pytest.raises(records.RunBusy, match="being trained by host h, pid 1, job 9"):
            train.train(config, tmp_path, progress=False)
    assert records.record_path(tmp_path, run).read_text() == before
    assert not (tmp_path / run / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        ([str(SYNTHETIC), "optim.epochs=three"], "ablations.train: error: optim.epochs: expected int, got str 'three'"),
        (["missing.yaml"], "ablations.train: error: config file not found: missing.yaml"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    command = [sys.executable, "-m", "ablations.train", *args, "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tmp_path):
    # Long enough epochs to kill one in the middle: 3 epochs of 3072 images.
    overrides = ["data.synthetic.train_size=3072", "optim.epochs=3"]
    uninterrupted = run_cli(tmp_path / "a", *overrides)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stdout.read().decode()

    interrupted = run_cli(tmp_path / "b", *overrides)
    deadline = time.time() + 600
    record_file = None
    while time.time() < deadline and interrupted.poll() is None:
        found = list((tmp_path / "b").glob("*.json"))
        if found and json.loads(found[0].read_text())["epochs"]:
            record_file = found[0]
            break
        time.sleep(0.05)
    assert record_file is not None, "the run ended before its first epoch was recorded"
    time.sleep(0.5)  # into the second epoch
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait(timeout=60)
    killed = json.loads(record_file.read_text())
    assert killed["status"] == "running" and len(killed["epochs"]) < 3, "killed too late to test a resume"

    resumed = run_cli(tmp_path / "b", *overrides)
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()
    a = json.loads(next((tmp_path / "a").glob("*.json")).read_text())
    b = json.loads(record_file.read_text())
    assert b["status"] == "finished"
    for key in ("top1", "top5", "train_loss"):
        assert a[key] == b[key], key
    assert [e["val_loss"] for e in a["epochs"]] == [e["val_loss"] for e in b["epochs"]]


@pytest.mark.slow
def test_two_processes_with_torchrun(tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29731",
        "-m",
        "ablations.train",
        str(SYNTHETIC),
        "--out",
        str(tmp_path),
        "--no-progress",
        "optim.batch_size=16",
        "train.threads=1",
    ]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["status"] == "finished" and record["hardware"]["processes"] == 2
    assert record["top1"] > 50


@pytest.mark.slow
def test_fashion_mnist_small_rednet_reaches_89_percent(tmp_path):
    """The offline default config. It reached 90.23% on one machine and 89.98% on another with the same seed
    (floating-point sums differ across CPUs): the bound leaves four times that spread below both."""
    config = load_config(REPO / "ablations" / "configs" / "fashion_mnist.yaml")
    record = train.train(config, tmp_path, progress=False)
    assert record.top1 >= 89.0, record.epochs


def test_loader_workers_do_not_change_an_augmented_run(tmp_path):
    """Two epochs of augmented Fashion-MNIST training (the evaluation, 10,000 images, left out for speed)."""
    overrides = ["data.augment=true", "data.train_subset=256", "optim.batch_size=64", "model.options.width=8"]
    fashion = REPO / "ablations" / "configs" / "fashion_mnist.yaml"
    runs = []
    for workers in (0, 2):
        config = load_config(fashion, [*overrides, f"data.num_workers={workers}"])
        trainer = train.Trainer(config, tmp_path, train.Process(0, 1, torch.device("cpu")), progress=False)
        trainer.build()
        losses = []
        for epoch in (0, 1):  # the second epoch draws other augmentations than the first
            train.seed_epoch(config.train.seed, epoch, rank=0)
            losses.append(trainer.train_epoch(epoch)["train_loss"])
        runs.append((trainer.run_id, losses, trainer.model.state_dict()))
    (id0, losses0, weights0), (id2, losses2, weights2) = runs
    assert id0 == id2 and losses0 == losses2
    assert all(torch.equal(weights0[name], weights2[name]) for name in weights0)
