"""The run record schema, unreadable files, and the run lock."""

import json
import subprocess
import sys
import time

import pytest

from ablations import records


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
