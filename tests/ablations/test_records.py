"""The run record schema, unreadable files, and the run lock."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations import records
from ablations.grid import expand, load_grid
from analysis.collect import collect
from slurm import status

REPO = Path(__file__).resolve().parents[2]


def test_record_round_trip_keeps_every_field(tmp_path):
    record = records.RunRecord("abc", records.RUNNING, {"optim": {"epochs": 2}}, {"g": {"k": 3}}, job_id="7_1")
    records.write_record(tmp_path, record)
    again = records.read_record(tmp_path, "abc")
    assert again == record and again.version == records.SCHEMA_VERSION and again.updated


def test_old_records_are_read_and_told_apart(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"run_id": "old", "status": "pending", "grid_values": {"k": 3}}))
    record = records.read_record(tmp_path, "old")
    assert record.version == 1 and record.grids == {"": {"k": 3}}


def test_unreadable_records_are_named_not_fatal(tmp_path):
    records.write_record(tmp_path, records.RunRecord("good", records.FINISHED, {}))
    (tmp_path / "truncated.json").write_text('{"run_id": "truncated", "stat')
    (tmp_path / "other.json").write_text("[1, 2]")
    found, problems = records.read_records(tmp_path)
    assert [r.run_id for r in found] == ["good"]
    assert sorted(str(p).split(":")[0].rsplit("/", 1)[1] for p in problems) == ["other.json", "truncated.json"]
    with pytest.raises(records.RecordError, match="truncated.json: unreadable record"):
        records.read_record(tmp_path, "truncated")


def test_a_run_is_held_by_one_process_at_a_time_and_freed_when_it_dies(tmp_path):
    with records.claim(tmp_path, "r1", "host h, pid 1"):
        assert records.is_claimed(tmp_path, "r1")
        with pytest.raises(records.RunBusy, match="run r1 is being trained by host h, pid 1"):
            with records.claim(tmp_path, "r1", "second"):
                pass
    assert not records.is_claimed(tmp_path, "r1")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ablations import records\n"
            f"with records.claim({str(tmp_path)!r}, 'r2', 'child'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    assert records.is_claimed(tmp_path, "r2")
    holder.kill()  # SIGKILL: no clean-up code runs, the kernel drops the lock
    holder.wait()
    time.sleep(0.1)
    assert not records.is_claimed(tmp_path, "r2")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("grids", None, "grids: expected a mapping, got None"),
        ("grids", {"kernel": 3}, "grids: 'kernel': expected a mapping of axis values"),
        ("version", "2", "version: expected an integer, got '2'"),
        ("status", "done", "status: expected one of pending, running, finished, failed, got 'done'"),
        ("top1", "90.1", "top1: expected a number or null, got '90.1'"),
        ("epochs", {}, "epochs: expected a list, got {}"),
        ("config", [], "config: expected a mapping, got []"),
    ],
)
def test_records_with_fields_of_the_wrong_type_are_named_not_fatal(tmp_path, field, value, message):
    records.write_record(tmp_path, records.RunRecord("good", records.FINISHED, {}))
    bad = {**records.RunRecord("bad", records.FINISHED, {}).to_dict(), field: value}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    found, problems = records.read_records(tmp_path)
    assert [r.run_id for r in found] == ["good"]
    assert [str(p) for p in problems] == [f"{tmp_path / 'bad.json'}: {message}"]


def test_a_launch_adding_a_grid_is_not_lost_to_a_job_rewriting_the_record(tmp_path):
    stale = records.RunRecord("r", records.RUNNING, {}, {"a": {"k": 3}})
    records.write_record(tmp_path, stale)
    records.add_memberships(tmp_path, {"r": {"b": {"k": 3}}, "not-launched": {"b": {"k": 5}}})
    stale.epochs = [{"epoch": 1}]  # a job's next write, built before the launch added grid b
    records.write_record(tmp_path, stale)
    again = records.read_record(tmp_path, "r")
    assert again.grids == {"a": {"k": 3}, "b": {"k": 3}} and again.epochs == [{"epoch": 1}]
    assert not records.record_path(tmp_path, "not-launched").exists()


def test_the_record_schema_and_configs_import_without_torch_or_the_models():
    code = "import sys, ablations.records, ablations.config; print(sorted({'torch', 'involution'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_old_and_broken_records_never_crash_collect_status_or_launch(tmp_path):
    smoke = REPO / "ablations" / "grids" / "smoke.yaml"
    cell = expand(load_grid(smoke))[0]
    v1 = {"run_id": "0123456789ab", "status": "finished", "grid_values": {"k": 3}, "config": {}, "top1": 80.0}
    (tmp_path / "0123456789ab.json").write_text(json.dumps(v1))
    broken = {**records.RunRecord(cell.run_id, records.FINISHED, {}).to_dict(), "version": "2"}
    (tmp_path / f"{cell.run_id}.json").write_text(json.dumps(broken))
    collection = collect([tmp_path])
    assert list(collection.runs.run_id) == ["0123456789ab"]
    assert [why for why, _ in collection.skipped] == ["unreadable"]
    report = status.report(tmp_path)
    assert "0123456789ab  finished" in report and f"unreadable: {tmp_path / cell.run_id}.json: version" in report
    command = [sys.executable, "-m", "slurm.launch", str(smoke), "--out", str(tmp_path), "--dry-run"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"slurm.launch: error: {tmp_path / cell.run_id}.json: version: expected an integer, got '2'"
    ]


def test_detection_fields_are_optional_and_their_non_result_keys_leave_ids_alone(tmp_path):
    old = {"run_id": "0123456789ab", "status": "finished", "config": {}, "top1": 80.0, "version": 2}
    (tmp_path / "0123456789ab.json").write_text(json.dumps(old))
    record = records.read_record(tmp_path, "0123456789ab")
    assert record.box_ap is None and record.miou is None and record.headline() == "top1 80.00%"
    record.top1, record.box_ap, record.mask_ap = None, 9.05, 8.4
    assert record.headline() == "box AP 9.05, mask AP 8.40"
    config = {"kind": "detectron2", "source": {"config_file": "a.yaml"}, "detectron2": {"SEED": 0, "OUTPUT_DIR": "x"}}
    moved = {**config, "source": {"config_file": "b.yaml"}, "detectron2": {"SEED": 0, "OUTPUT_DIR": "y"}}
    assert records.run_id(config) == records.run_id(moved)
    assert records.run_id(config) != records.run_id({**config, "detectron2": {"SEED": 1, "OUTPUT_DIR": "x"}})
