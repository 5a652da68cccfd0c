"""Bad input to train_net and slurm.detectron2_launch is refused in the launching process, before a training
process starts or a job is queued, with one line naming the problem; jobs sharing a node meet at distinct ports."""

import importlib
import json
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("detectron2", reason="Detectron2 is not installed: `make detection` builds and installs it")

import torch  # noqa: E402

from ablations.config import ConfigError  # noqa: E402
from detectron2_ext import train_net  # noqa: E402
from detectron2_ext.config import CONFIG_DIR  # noqa: E402
from involution import build_model  # noqa: E402
from slurm import detectron2_launch  # noqa: E402

MASK_RCNN = str(CONFIG_DIR / "fashion_coco" / "mask_rcnn_red50_fpn.yaml")
RETINANET = str(CONFIG_DIR / "retinanet_red50_fpn_1x.yaml")
SEMANTIC_FPN = str(CONFIG_DIR / "fashion_coco" / "semantic_fpn_red50.yaml")
TINY = ["MODEL.REDNET.NAME", "rednet26", "DATASETS.TRAIN", '("tiny_coco_train",)', "DATASETS.TEST", "()"]


def prepare(config: str, *opts: str, dataset_dirs=(), flags=()):
    arguments = ["--config-file", config, *flags, *(f"--dataset-dir={d}" for d in dataset_dirs), *TINY, *opts]
    return train_net.prepare(train_net.get_args_parser().parse_args(arguments))


def test_a_good_config_passes(tiny_coco):
    assert prepare(MASK_RCNN, dataset_dirs=[tiny_coco]).DATASETS.TRAIN == ("tiny_coco_train",)


@pytest.mark.parametrize("key", ["TRAIN", "TEST"])
def test_an_unregistered_dataset_is_named(tiny_coco, key):
    with pytest.raises(ConfigError, match=rf"DATASETS.{key}: no dataset named 'tiny_coco_trian' .*tiny_coco_train"):
        prepare(MASK_RCNN, f"DATASETS.{key}", '("tiny_coco_trian",)')


def test_an_evaluation_needs_only_the_test_datasets(tiny_coco):
    evaluation = ["DATASETS.TRAIN", '("coco_2017_train",)', "DATASETS.TEST", '("tiny_coco_val",)']
    prepare(MASK_RCNN, *evaluation, flags=["--eval-only"])


def test_a_dataset_whose_files_are_missing_is_named():
    with pytest.raises(ConfigError, match=r"DATASETS.TRAIN: coco_2017_train reads .*instances_train2017.json"):
        prepare(MASK_RCNN, "DATASETS.TRAIN", '("coco_2017_train",)', "MODEL.ROI_HEADS.NUM_CLASSES", "80")


@pytest.mark.parametrize(
    "config, key, classes",
    [(MASK_RCNN, "MODEL.ROI_HEADS.NUM_CLASSES", 10), (RETINANET, "MODEL.RETINANET.NUM_CLASSES", 10),
     (SEMANTIC_FPN, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 11)],
)  # fmt: skip
def test_a_class_count_that_is_not_the_datasets_is_named(tiny_coco, config, key, classes):
    semantic = ["DATASETS.TRAIN", '("tiny_coco_sem_seg_train",)'] if "SEM_SEG" in key else []
    message = rf"{key} is 3 but tiny_coco\S* has {classes} classes .*: set {key} {classes}$"
    with pytest.raises(ConfigError, match=message):
        prepare(config, key, "3", *semantic)


@pytest.mark.parametrize("missing", ["id", "name"])
def test_a_category_without_id_or_name_is_named(tiny_coco, tmp_path, missing):
    folder = shutil.copytree(tiny_coco, tmp_path / "shop")
    annotation_file = folder / "annotations" / "instances_val.json"
    content = json.loads(annotation_file.read_text())
    del content["categories"][2][missing]
    annotation_file.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=rf"instances_val.json: .*categories\[2\] lacks {missing} "):
        prepare(MASK_RCNN, dataset_dirs=[folder])


def test_a_classification_checkpoint_for_a_detection_stem_is_named(tiny_coco, tmp_path):
    checkpoint = tmp_path / "rednet26_imagenet.pth"
    torch.save({"model": build_model("rednet26", stem_kernel_size=3).state_dict()}, checkpoint)  # ablations.train's
    with pytest.raises(ConfigError, match=r"its stem involution has K=3 .* this backbone's has K=7"):
        prepare(MASK_RCNN, "MODEL.REDNET.PRETRAINED", str(checkpoint))
    prepare(MASK_RCNN, "MODEL.REDNET.PRETRAINED", str(checkpoint), "MODEL.REDNET.STEM_KERNEL_SIZE", "3")


def test_two_dataset_folders_with_one_name_are_refused(tiny_coco, tmp_path):
    first = shutil.copytree(tiny_coco, tmp_path / "a" / "shop")
    second = shutil.copytree(tiny_coco, tmp_path / "b" / "shop")
    with pytest.raises(ConfigError, match=r"--dataset-dir: .*a/shop and .*b/shop both register as shop_<split>"):
        prepare(MASK_RCNN, dataset_dirs=[first, second])


def test_several_machines_need_an_address(tiny_coco):
    with pytest.raises(ConfigError, match="--dist-url"):
        prepare(MASK_RCNN, flags=["--num-machines", "2"])


def test_the_launcher_checks_before_submitting(tiny_coco, tmp_path, monkeypatch):
    def submit(*_):
        raise AssertionError("a job was submitted")

    monkeypatch.setattr(detectron2_launch, "make_executor", submit)
    with pytest.raises(ConfigError, match="DATASETS.TRAIN: no dataset named 'tiny_coco_trian'"):
        detectron2_launch.main(
            ["--config-file", MASK_RCNN, "--executor", "local", *TINY, "DATASETS.TRAIN", '("tiny_coco_trian",)']
        )


@pytest.mark.parametrize(
    "command, expected",
    [(["detectron2_ext/train_net.py", "--config-file", RETINANET, "MODEL.RETINANET.NUM_CLASES", "3"],
      "train_net: error: Non-existent key: MODEL.RETINANET.NUM_CLASES"),
     (["-m", "slurm.detectron2_launch", "--config-file", RETINANET, "DATASETS.TRAIN", '("cocoo_2017_train",)'],
      "slurm.detectron2_launch: error: DATASETS.TRAIN: no dataset named 'cocoo_2017_train' is registered")],
    ids=["train_net", "detectron2_launch"],
)  # fmt: skip
def test_command_lines_print_one_line(tmp_path, command, expected):
    result = subprocess.run(
        [sys.executable, *command, "OUTPUT_DIR", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(expected)
    assert not list(tmp_path.iterdir())  # nothing queued, nothing written


def test_jobs_sharing_a_node_meet_at_distinct_ports(monkeypatch):
    """Two single-node multi-GPU jobs on one node: the second, started while the first listens, gets another
    port (Detectron2's default is one fixed port per user)."""
    started = []
    detectron2_launcher = importlib.import_module("detectron2.engine.launch")
    monkeypatch.setattr(detectron2_launcher.mp, "start_processes", lambda *_, args, **__: started.append(args[4]))
    environment = SimpleNamespace(num_nodes=1, node=0, job_id="17", hostnames=["node1"])
    monkeypatch.setattr(detectron2_launch.submitit, "JobEnvironment", lambda: environment)

    def run_job():
        args = detectron2_launch.get_args_parser().parse_args(["--config-file", MASK_RCNN])
        args.num_gpus = 2
        detectron2_launch.Detectron2Job(args)()
        host, port = started[-1].removeprefix("tcp://").rsplit(":", 1)
        return host, int(port)

    host, first_port = run_job()
    with socket.socket() as first_job:  # the first job's rendezvous, still listening
        first_job.bind(("", first_port))
        first_job.listen()
        assert run_job() != (host, first_port)
