"""The callable each submitit job runs: one training run, requeued on preemption or time-out.

submitit pickles it, runs it on the node, and on preemption or time-out (SIGUSR2 before the limit) calls
``checkpoint()``, whose default resubmits the same callable: the requeued job then resumes the run from
its last epoch checkpoint (ablations.train resumes by itself), so the final metrics are those of an
uninterrupted run. With several tasks (GPUs or nodes) it sets up torch.distributed from submitit's
JobEnvironment first.
"""

import submitit

from ablations.config import RunConfig
from ablations.train import train


class TrainingJob(submitit.helpers.Checkpointable):
    def __init__(self, config: RunConfig, out_dir: str):
        self.config = config
        self.out_dir = str(out_dir)

    def __call__(self) -> dict:
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for torch.distributed; every task sees all the
            # node's GPUs and picks cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        record = train(self.config, self.out_dir, progress=False)
        return {key: record[key] for key in ("run_id", "status", "top1", "top5")}
