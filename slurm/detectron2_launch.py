"""Launch detectron2_ext/train_net.py through submitit: on SLURM (multi-GPU, multi-node), locally or in-process.

    python -m slurm.detectron2_launch --config-file detectron2_ext/configs/mask_rcnn_red50_fpn_1x.yaml \\
        --executor slurm --partition gpu --nodes 1 --gpus-per-node 8 --time 1440 [KEY VALUE ...]

Takes train_net's arguments and the launcher's executor/SLURM options (slurm.launch); what train_net checks
(config, datasets, classes, backbone checkpoint) is checked before submitting. One task per node runs
Detectron2's launcher, which starts a process per GPU; they meet at a free port of the node, or at the first
node's address at a port derived from the job id when there are several nodes. The job always
resumes: preempted or timed out, it is requeued (up to --max-requeues times) and continues from the last
checkpoint in OUTPUT_DIR; a fresh OUTPUT_DIR starts from MODEL.WEIGHTS. Submitit's logs go to
OUTPUT_DIR/submitit/.
"""

import zlib
from pathlib import Path

import submitit

from ablations import cli
from detectron2_ext import train_net

from .launch import add_executor_arguments, make_executor


class Detectron2Job(submitit.helpers.Checkpointable):
    """train_net on the node(s) of a submitit job; requeued by submitit's Checkpointable on preemption."""

    def __init__(self, args):
        self.args = args

    def __call__(self):
        args = self.args
        args.resume = True  # the last checkpoint in OUTPUT_DIR if there is one (after a requeue), else MODEL.WEIGHTS
        environment = submitit.JobEnvironment()
        args.num_machines, args.machine_rank = environment.num_nodes, environment.node
        if environment.num_nodes > 1:
            port = 20000 + zlib.crc32(str(environment.job_id).encode()) % 20000
            args.dist_url = f"tcp://{environment.hostnames[0]}:{port}"
        else:  # other jobs may share the node: a free port of it, not Detectron2's fixed per-user one
            args.dist_url = "auto"
        train_net.launch(train_net.main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, (args,))


def get_args_parser():
    parser = train_net.get_args_parser()
    parser.description = "Run detectron2_ext/train_net.py as a (requeueable) submitit job."
    add_executor_arguments(parser)
    parser.add_argument("--no-wait", action="store_true", help="return right after submission")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    cfg = train_net.prepare(args)  # bad configs, datasets and checkpoints fail here, before submission
    args.num_gpus = max(1, args.gpus_per_node)  # train_net's processes per node
    args.tasks_per_node = 1  # Detectron2 starts the per-GPU processes itself
    args.name = f"d2-{Path(args.config_file).stem}"
    executor, _ = make_executor(args, Path(cfg.OUTPUT_DIR) / "submitit")
    job = executor.submit(Detectron2Job(args))
    print(f"submitted job {job.job_id} ({args.executor}); logs in {Path(cfg.OUTPUT_DIR) / 'submitit'}")
    if args.no_wait:
        return 0
    job.result()
    print(f"job {job.job_id} finished; checkpoints and metrics in {cfg.OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    cli.run(main, "slurm.detectron2_launch")
