"""The benchmark scripts run end to end at tiny sizes (their numbers are measurements, not tested)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def invoke(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )


def run(script, *args):
    result = invoke(script, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_op_benchmark_checks_and_times_every_backend(tmp_path):
    out = run("op_bench.py", "--quick", "--batch", "1", "--repeats", "1", "--json", str(tmp_path / "op.json"))
    rows = json.loads((tmp_path / "op.json").read_text())["rows"]
    expected = [(1, "reference"), (1, "torch"), (2, "reference"), (2, "torch")]
    assert [(r["stride"], r["provider"]) for r in rows] == expected
    assert all(r["max_error"] < 1e-4 for r in rows if r["provider"] == "torch")
    assert "fwd+bwd x unfold" in out


def test_model_benchmark_compares_with_resnet(tmp_path):
    from involution.ops import cpp_ops

    run(
        "model_bench.py",
        "--size",
        "32",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--backends",
        "torch",
        *(["cpp"] if cpp_ops.available() else []),
        "--fused",
        "--json",
        str(tmp_path / "model.json"),
    )
    rows = json.loads((tmp_path / "model.json").read_text())["rows"]
    # The torch backend never fuses by default, so its unfused row would repeat the first; cpp fuses some layers.
    cpp = [("rednet50", f"cpp{label}", "eager") for label in ("", " fused", " unfused")] if cpp_ops.available() else []
    assert [(r["model"], r["backend"], r["mode"]) for r in rows] == [
        ("rednet50", "torch", "eager"),
        ("rednet50", "torch fused", "eager"),
        *cpp,
        ("resnet50", "-", "eager"),
    ]
    assert len({r["flops_g"] for r in rows if r["model"] == "rednet50"}) == 1


def test_cpu_goals_times_each_compiled_kernel_beside_a_depthwise_convolution():
    from involution.ops import cpp_ops

    if not cpp_ops.available():
        pytest.skip("no C++ compiler: the cpp backend is not built")
    lines = run("cpu_goals.py", "--parts", "kernels", "--repeats", "1").splitlines()
    assert " threads, torch " in lines[0], lines[0]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "cpu family" in cpuinfo.read_text():  # a model name alone can hide the generation
        assert "(family " in lines[0], lines[0]
    layers = [line for line in lines if line.startswith("  B")]
    assert len(layers) == 10
    for line in layers:
        assert all(f"{name} " in line for name in ("forward", "grad_input", "grad_kernel", "depthwise")), line


def test_cpu_goals_bounds_stand_ins_keep_shapes_and_run_the_kernel_generation_backward():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cpu_goals
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import torch

    from involution import Involution2d
    from involution.models import build_model

    def demo_model():
        options = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}
        return build_model("rednet26", kernel_size=7, group_channels=8, **options)

    def output_shapes(modules):
        shapes = []
        for m in modules:
            m.register_forward_hook(lambda module, args, out: shapes.append(out.shape) and None)
        return shapes

    images = torch.randn(2, 1, 28, 28).to(memory_format=torch.channels_last)
    real = demo_model()
    expected = output_shapes([m for m in real.modules() if isinstance(m, Involution2d)])
    real(images)
    for replacement in (cpu_goals.FreeAggregation, cpu_goals.FreeInvolution):
        model = cpu_goals.with_involutions_as(demo_model(), replacement)
        stand_ins = [m for m in model.modules() if isinstance(m, replacement)]
        kept = [m for m in model.modules() if isinstance(m, Involution2d)]
        assert kept == [m.involution for m in stand_ins if replacement is cpu_goals.FreeAggregation]
        shapes = output_shapes(stand_ins)
        model(images).sum().backward()
        assert shapes == expected
        assert all(m.conv2.conv.weight.grad is not None for m in kept)  # the generation's backward ran


def test_kernel_ab_compiles_each_version_and_compares_results(tmp_path):
    from involution.ops import cpp_ops

    if not cpp_ops.available():
        pytest.skip("no C++ compiler: the cpp backend is not built")
    source = REPO / "involution" / "ops" / "cpu_kernels.cpp"
    copy = tmp_path / "copy.cpp"
    copy.write_text(source.read_text())
    args = ["--shape", "2,16,9", "--groups", "2", "--rounds", "1"]
    for kernel in ("grad_kernel", "fused_grad_generation"):  # one build: the copy's text is the same
        lines = run("kernel_ab.py", kernel, str(source), str(copy), *args).splitlines()
        assert lines[1].startswith(f"# {kernel} B2 C16 9² K=7 G=2"), lines[1]
        assert [line.split()[0] for line in lines[2:]] == [str(source), str(copy)]
        assert all(line.endswith("largest difference 0") for line in lines[2:]), lines


@pytest.mark.parametrize(
    "args,message",
    [
        (["forward", "missing.cpp"], "kernel_ab: cannot read missing.cpp"),
        (["forward", "README.md"], "kernel_ab: README.md does not define the kernels' operator library"),
        (["forward", "README.md", "--groups", "5"], "--groups 5 does not divide the 64 channels"),
        (["fused_forward", "README.md", "--reduced", "0"], "--reduced must be positive"),
    ],
)
def test_kernel_ab_rejects_bad_input_in_one_line(args, message):
    result = invoke("kernel_ab.py", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_cpu_goals_fusion_part_times_each_distinct_layer_both_ways(monkeypatch):
    from involution.models import build_model
    from involution.ops import cpp_ops

    if not cpp_ops.available():
        pytest.skip("no C++ compiler: the cpp backend is not built")
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import cpu_goals

    options = {"stem": "small", "small_stem_stride": 2, "width": 16, "in_chans": 1, "num_classes": 10}
    model = build_model("rednet26", kernel_size=3, group_channels=8, **options)
    layers = cpu_goals.involution_layers(model, torch.randn(2, 1, 28, 28))
    assert [(layer.channels, layer.stride, size[-1]) for layer, size in layers] == [
        (16, 1, 14), (32, 2, 14), (32, 1, 7), (64, 2, 7), (64, 1, 4), (128, 2, 4),
    ]  # fmt: skip
    times = cpu_goals.fusion_times(*layers[0], repeats=1)
    assert set(times) == {(what, fused) for what in ("train", "infer") for fused in (False, True)}
