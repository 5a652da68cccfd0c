"""Each run records its own peak memory, not the worst of every run its process trained before."""

from pathlib import Path

import torch

from ablations.config import load_config
from ablations.train import train

SYNTHETIC = Path(__file__).resolve().parents[2] / "ablations" / "configs" / "synthetic.yaml"


def resident_mib() -> float:
    (line,) = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


def test_a_run_after_a_larger_one_in_the_same_process_reports_its_own_peak(tmp_path):
    before = resident_mib()
    big = torch.ones(256 * 2**20)  # 1 GiB, every page touched: what a larger earlier run leaves as the peak
    del big
    record = train(load_config(SYNTHETIC, ["optim.epochs=1"]), tmp_path, progress=False)
    assert record.hardware["peak_memory"].startswith("peak resident set size (VmHWM)")
    assert 0 < record.peak_memory_mib < before + 512, (before, record.peak_memory_mib)
