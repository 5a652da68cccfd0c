"""The callable each submitit job runs: its training runs one after the other, requeued on preemption.

On SLURM every array task trains one run; locally each of the --parallel workers gets the whole list and
trains whatever no other worker holds (each run's lock, ablations.records.claim), so at most --parallel
runs train at once even after the launcher has returned. A run that has finished, or failed (after the
launcher marked it pending: a peer worker failed it), is not trained again by the same launch. A run held
by another job is left to it: the job ends normally, and the launcher does not mark the run failed.

submitit pickles the job, runs it on the node, and on preemption or time-out (SIGUSR2 before the limit)
calls ``checkpoint()``, whose default resubmits the same callable: the requeued job then resumes the run
from its last epoch checkpoint (ablations.train resumes by itself), so the final metrics are those of an
uninterrupted run. With several tasks (GPUs or nodes) it sets up torch.distributed from submitit's
JobEnvironment first.
"""

import submitit

from ablations import detection, records
from ablations.config import RunConfig, to_dict
from ablations.train import train


class TrainingJob(submitit.helpers.Checkpointable):
    def __init__(self, configs: list[RunConfig | detection.DetectionConfig], out_dir: str):
        self.configs = list(configs)
        self.out_dir = str(out_dir)

    def __call__(self) -> dict:
        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for torch.distributed; every task sees all the
            # node's GPUs and picks cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        outcome, errors = {}, {}
        for config in self.configs:
            run = records.run_id(to_dict(config))
            record = records.read_record(self.out_dir, run)
            if records.is_finished(record) or (record and record.status == records.FAILED):
                outcome[run] = record.status
                continue
            try:
                train_run = detection.train if isinstance(config, detection.DetectionConfig) else train
                outcome[run] = train_run(config, self.out_dir, progress=False, job_id=environment.job_id).status
            except records.RunBusy:
                outcome[run] = "held by another job"
            except Exception as error:  # recorded as failed by train(); go on with the other runs
                if len(self.configs) == 1:
                    raise
                outcome[run], errors[run] = records.FAILED, f"{type(error).__name__}: {error}"
        if errors:
            raise RuntimeError("runs failed: " + "; ".join(f"{run}: {error}" for run, error in errors.items()))
        return outcome
