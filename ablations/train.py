"""One training run: config -> model -> training loop -> checkpoints -> run record.

    python -m ablations.train CONFIG.yaml --out DIR [key=value ...]

Runs alone, under torchrun (several processes: DistributedDataParallel), or inside a submitit job whose
launcher sets the torch.distributed environment. The run id is a hash of the resolved config; the record
is DIR/<run_id>.json and the checkpoint DIR/<run_id>/checkpoint.pt, written atomically after every epoch.
Started again, a run resumes from its checkpoint and ends with the same metrics as an uninterrupted one
(each epoch reseeds every random source from the seed and the epoch number); a finished run returns its
record at once.
"""

import argparse
import contextlib
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from involution.complexity import count_flops, count_params
from involution.models import build_model

from . import cli, records
from .config import ConfigError, RunConfig, load_config, to_dict
from .data import build_splits

CHECKPOINT = "checkpoint.pt"


@dataclass
class Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process() -> Process:
    """Rank and world size from the torch.distributed environment (torchrun, or the submitit launcher)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank, world_size, device)


class ShardSampler(Sampler):
    """Every world_size-th index from rank: each example evaluated exactly once across processes."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def autocast_dtype(config: RunConfig, device: torch.device) -> Optional[torch.dtype]:
    amp = config.train.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def warmup_cosine(optim, steps_per_epoch: int):
    """Learning-rate factor per step: linear warm-up from warmup_start_factor, then cosine to min_lr (per step,
    or with optim.cosine_by_epoch as mmcv's epoch-based CosineAnnealing with its warm-up on top)."""
    total = optim.epochs * steps_per_epoch
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    floor = optim.min_lr / optim.lr_per_256  # as a fraction of the peak (scaled alike, so batch-independent)

    def cosine(progress: float) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def warmup_scale(step: int) -> float:
        return optim.warmup_start_factor + (1 - optim.warmup_start_factor) * step / warmup

    def by_epoch(step: int) -> float:
        rate = cosine((step // steps_per_epoch) / optim.epochs)
        return rate * warmup_scale(step) if step < warmup else rate

    def by_step(step: int) -> float:
        return warmup_scale(step) if step < warmup else cosine((step - warmup) / max(1, total - warmup))

    return by_epoch if optim.cosine_by_epoch else by_step


def all_reduce_sum(values: list[float], process: Process) -> list[float]:
    if process.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Every random source of an epoch (augmentation, dropout, data order) from (seed, epoch, rank)."""
    torch.manual_seed((seed * 1_000_003 + epoch) * 1009 + rank)


class Trainer:
    def __init__(
        self, config: RunConfig, out_dir, process: Process, progress: bool = True, job_id: Optional[str] = None
    ):
        self.config, self.process, self.progress, self.job_id = config, process, progress, job_id
        self.resolved = to_dict(config)
        self.run_id = records.run_id(self.resolved)
        self.out_dir = Path(out_dir)
        self.checkpoint_path = records.checkpoint_dir(self.out_dir, self.run_id) / CHECKPOINT
        self.complexity = {"params": None, "flops": None, "input_size": None}
        self.history: list[dict] = []
        self.wall_time = 0.0
        self.peak_memory_measured = False
        self.git_commit = git_commit()  # once: the record is rewritten every epoch

    def build(self) -> None:
        """Data, model, optimizer and schedule (inside run(), so that a failure here is recorded)."""
        config, process = self.config, self.process
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        torch.use_deterministic_algorithms(config.train.deterministic, warn_only=True)
        # Deterministic mode would also fill every new tensor with NaN first (a check for kernels that read memory
        # they did not write; none here does: the same metrics and weights to the bit without it), a few % of a step.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = not config.train.deterministic
        torch.manual_seed(config.train.seed)

        self.splits = build_splits(config.data, config.train.seed)
        self.model = build_model(
            config.model.name,
            in_chans=self.splits.channels,
            num_classes=self.splits.num_classes,
            official_init=config.train.official_init,
            **config.model.options,
        ).to(process.device)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        input_size = (self.splits.channels, self.splits.image_size, self.splits.image_size)
        self.complexity = {
            "params": count_params(self.model),
            "flops": count_flops(self.model, input_size),
            "input_size": list(input_size),
        }
        self.network = self.model
        if process.world_size > 1:
            self.network = DistributedDataParallel(
                self.model, device_ids=[process.device] if process.device.type == "cuda" else None
            )

        optim = config.optim
        global_batch = optim.batch_size * process.world_size
        self.sampler = DistributedSampler(
            self.splits.train, process.world_size, process.rank, shuffle=True, seed=config.train.seed
        )
        self.train_loader = DataLoader(
            self.splits.train,
            optim.batch_size,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            drop_last=True,
            pin_memory=process.device.type == "cuda",
            persistent_workers=False,
        )
        self.val_loader = DataLoader(
            self.splits.val,
            optim.batch_size,
            num_workers=config.data.num_workers,
            sampler=ShardSampler(len(self.splits.val), process.rank, process.world_size),
        )
        if len(self.train_loader) == 0:
            raise ValueError(
                f"optim.batch_size={optim.batch_size} exceeds the {len(self.splits.train)} training images"
            )
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=optim.lr_per_256 * global_batch / 256,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(optim, len(self.train_loader)))
        self.amp_dtype = autocast_dtype(config, process.device)
        self.scaler = torch.amp.GradScaler(process.device.type, enabled=self.amp_dtype == torch.float16)

    # -- state -------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "wall_time": self.wall_time,
            "world_size": self.process.world_size,
        }
        records.atomic_write(self.checkpoint_path, lambda f: torch.save(state, f))

    def read_checkpoint(self) -> Optional[dict]:
        """The last epoch's state, if any; ConfigError if it was trained by another number of processes:
        the global batch, and with it the learning rate and the steps per epoch, would change mid-run."""
        if not self.checkpoint_path.exists():
            return None
        state = torch.load(self.checkpoint_path, map_location=self.process.device, weights_only=True)
        trained_by = state.get("world_size", self.process.world_size)
        if trained_by != self.process.world_size:
            raise ConfigError(
                f"run {self.run_id}: its checkpoint was trained by {trained_by} processes, this job has "
                f"{self.process.world_size}; resume it with {trained_by} (the global batch depends on it)"
            )
        return state

    def load_checkpoint(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.wall_time = state["history"], state["wall_time"]

    def record(self, status: str, error: Optional[str] = None) -> records.RunRecord:
        """The run's record now, keeping what the launcher wrote (grid membership) and any error."""
        on_disk = records.read_record(self.out_dir, self.run_id)
        last = self.history[-1] if self.history else {}
        return records.RunRecord(
            run_id=self.run_id,
            status=status,
            config=self.resolved,
            grids=on_disk.grids if on_disk else {},
            job_id=self.job_id or (on_disk.job_id if on_disk else None),
            model=self.config.model.name,
            params=self.complexity["params"],
            flops=self.complexity["flops"],
            flops_convention="paper (mmcv-style multiply-adds, incl. the involution aggregation) per image at "
            + "x".join(map(str, self.complexity["input_size"] or ["?"])),
            top1=last.get("top1"),
            top5=last.get("top5"),
            train_loss=last.get("train_loss"),
            epochs=self.history,
            epochs_planned=self.config.optim.epochs,
            images_per_s=(sum(e["images_per_s"] for e in self.history) / len(self.history)) if self.history else None,
            peak_memory_mib=peak_memory_mib(self.process.device) if self.peak_memory_measured else None,
            wall_time_s=self.wall_time,
            git_commit=self.git_commit,
            hardware={
                **hardware(self.process.device, self.process.world_size),
                "peak_memory": PEAK_MEMORY_MEASURE[self.process.device.type],
            },
            error=error,
        )

    def write_record(self, status: str, error: Optional[str] = None) -> records.RunRecord:
        record = self.record(status, error)
        if self.process.is_main:
            records.write_record(self.out_dir, record)
        return record

    # -- loop --------------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.process.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def to_device(self, images, labels):
        images = images.to(self.process.device, non_blocking=True)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.process.device, non_blocking=True)

    def train_epoch(self, epoch: int) -> dict:
        self.network.train()
        self.sampler.set_epoch(epoch)
        self.splits.train.set_epoch(epoch)
        loss_sum = correct = seen = 0.0
        start = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.config.optim.epochs}",
            leave=False,
            disable=not (self.progress and self.process.is_main),
            mininterval=1 if sys.stderr.isatty() else 30,
        )
        for images, labels in bar:
            images, labels = self.to_device(images, labels)
            with self.autocast():
                logits = self.network(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=self.config.optim.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            rate = seen * self.process.world_size / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", img_s=f"{rate:.0f}", refresh=False
            )
        loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], self.process)
        seconds = time.perf_counter() - start
        return {
            "train_loss": loss_sum / seen,
            "train_top1": 100 * correct / seen,
            "images_per_s": seen / seconds,
            "train_seconds": seconds,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.network.eval()
        loss_sum = top1 = top5 = seen = 0.0
        for images, labels in self.val_loader:
            images, labels = self.to_device(images, labels)
            with self.autocast():
                logits = self.network(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (best[:, 0] == labels).sum().item()
            top5 += (best == labels[:, None]).any(dim=1).sum().item()
            seen += len(labels)
        loss_sum, top1, top5, seen = all_reduce_sum([loss_sum, top1, top5, seen], self.process)
        return {"val_loss": loss_sum / seen, "top1": 100 * top1 / seen, "top5": 100 * top5 / seen}

    def run(self) -> records.RunRecord:
        existing = records.read_record(self.out_dir, self.run_id)
        if records.is_finished(existing):
            return existing
        with self.claim():
            existing = records.read_record(self.out_dir, self.run_id)
            if records.is_finished(existing):  # by the job that held it a moment ago
                return existing
            state = self.read_checkpoint()  # before the try: a refused resume leaves the record as it is
            self.peak_memory_measured = reset_peak_memory(self.process.device)
            try:
                self.build()
                if state:
                    self.load_checkpoint(state)
                self.write_record(records.RUNNING)
                for epoch in range(len(self.history), self.config.optim.epochs):
                    seed_epoch(self.config.train.seed, epoch, self.process.rank)
                    start = time.perf_counter()
                    metrics = {"epoch": epoch + 1, **self.train_epoch(epoch), **self.evaluate()}
                    self.wall_time += time.perf_counter() - start
                    self.history.append(metrics)
                    if self.process.is_main:
                        self.save_checkpoint()
                        print(
                            f"[{self.run_id}] epoch {epoch + 1}: loss {metrics['train_loss']:.4f}, "
                            f"top1 {metrics['top1']:.2f}%, {metrics['images_per_s']:.0f} img/s",
                            flush=True,
                        )
                    self.write_record(records.RUNNING)
            except Exception:
                self.write_record(records.FAILED, error=traceback.format_exc(limit=20))
                raise
            return self.write_record(records.FINISHED)

    @contextlib.contextmanager
    def claim(self):
        """The run's lock, held by the main process for the whole run (RunBusy on every process if another
        job holds it): two jobs never train into one checkpoint."""
        if not self.process.is_main:
            busy = all_reduce_sum([0.0], self.process)[0]
            if busy:
                raise records.RunBusy(f"run {self.run_id} is being trained by another job")
            yield
            return
        holder = f"host {platform.node()}, pid {os.getpid()}" + (f", job {self.job_id}" if self.job_id else "")
        try:
            with records.claim(self.out_dir, self.run_id, holder):
                all_reduce_sum([0.0], self.process)
                yield
        except records.RunBusy:
            all_reduce_sum([1.0], self.process)
            raise


def git_commit() -> Optional[str]:
    """The repository's commit, with "-dirty" when there are uncommitted changes; None outside a clone."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def hardware(device: torch.device, world_size: int) -> dict:
    info = {
        "device": str(device),
        "processes": world_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# What peak_memory_mib measures, in the record (hardware.peak_memory): each run's own peak, by the main process.
PEAK_MEMORY_MEASURE = {
    "cuda": "torch.cuda.max_memory_allocated since the run (re)started",
    "cpu": "peak resident set size (VmHWM) of the process since the run (re)started",
}
_PROC_STATUS, _PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> bool:
    """Start measuring the run's own peak: a worker training several runs would otherwise report, for each,
    the largest of all so far. On CPU, writing 5 to clear_refs resets Linux's RSS high-water mark; False
    where that is impossible (no /proc): the peak is then not recorded."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    (line,) = [line for line in _PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024  # kB


def train(config: RunConfig, out_dir, progress: bool = True, job_id: Optional[str] = None) -> records.RunRecord:
    """Train (or resume, or return the finished record of) one run; returns its record. RunBusy if
    another process is training the same run."""
    return Trainer(config, out_dir, setup_process(), progress, job_id).run()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train and evaluate one model; write its run record.", add_help=False)
    parser.add_argument("config", help="YAML run config, e.g. ablations/configs/fashion_mnist.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.epochs=3 model.name=resnet26")
    parser.add_argument("--out", required=True, help="results directory: DIR/<run_id>.json and DIR/<run_id>/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> records.RunRecord:
    parser = argparse.ArgumentParser(parents=[get_args_parser()])
    args = parser.parse_intermixed_args(argv)
    config = load_config(args.config, args.overrides)
    record = train(config, args.out, progress=not args.no_progress)
    print(
        f"[{record.run_id}] {record.status}: {record.model} top1 {record.top1:.2f}% "
        f"top5 {record.top5:.2f}% -> {records.record_path(args.out, record.run_id)}"
    )
    return record


if __name__ == "__main__":
    cli.run(main, "ablations.train")
