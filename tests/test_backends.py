"""Inference backends: one contract, label agreement with fp32 eager on the bundled images."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.deploy import BACKENDS, build_backend, fold_batchnorm
from bisenet.deploy.images import read_folder
from bisenet.errors import BisenetError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
SIZE = (128, 128)
TRAIN_ITERS = 60
RUN_SLOW = os.environ.get("BISENET_SLOW_TESTS") == "1"  # torch.compile takes minutes on 2 cores


@pytest.fixture(scope="session")
def images() -> dict[str, torch.Tensor]:
    """The bundled train (calibration) and val (agreement) images, normalised, at SIZE."""
    data = bisenet.load_config(CONFIG).data
    return {split: torch.stack(read_folder(EXAMPLE / split / "images", SIZE, data.mean, data.std))
            for split in ("train", "val")}


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> torch.nn.Module:
    """BiSeNetV2 trained on the bundled example by `bisenet.train` (short, but a real checkpoint).

    128x128 crops at a quarter to three quarters of the 512-px tiles, so the SIZE-px val
    images (a quarter scale) look like what it learnt; a trained model's logit margins are
    what makes bf16 and int8 agreement meaningful (random weights sit near ties).
    """
    cfg = bisenet.load_config(CONFIG, {
        "data.root": str(EXAMPLE), "augment.crop_size": [128, 128], "augment.scale_range": [0.25, 0.75],
        "train.max_iters": TRAIN_ITERS, "train.warmup_iters": 10, "train.workers": 0, "train.device": "cpu",
        "train.eval_interval": 0, "train.checkpoint_interval": TRAIN_ITERS, "train.log_interval": TRAIN_ITERS,
    })
    work_dir = tmp_path_factory.mktemp("trained")
    bisenet.train(cfg, work_dir)
    return bisenet.load_model(work_dir / "last.pt").eval()


@pytest.fixture(scope="session")
def reference(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(images["val"]).argmax(1)


def test_reference_labels_are_not_degenerate(reference) -> None:
    shares = torch.bincount(reference.flatten(), minlength=5) / reference.numel()
    assert (shares > 0.02).sum() >= 3, shares


# Bounds: fp32-equivalent backends must agree; bf16 and int8 round, so near-ties flip. Measured
# on this trained model (1 thread): amp 0.9969, compile 0.9969, int8 0.9961, int8_compile 0.9928.
AGREEMENT = {"eager": 1.0, "fold_bn": 0.999, "onnxruntime": 0.999, "amp": 0.99, "int8": 0.985, "compile": 0.99,
             "int8_compile": 0.98, "openvino": 0.99, "int8_openvino": 0.98}
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
HAS_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
NEEDS_OPENVINO = pytest.mark.skipif(not HAS_OPENVINO, reason="needs OpenVINO and NNCF (pip install openvino nncf)")


@pytest.mark.skipif(not HAS_TORCHAO, reason="needs torchao (pip install torchao)")
def test_int8_compile_quantises_activations_to_7_bits_only_without_vnni() -> None:
    from bisenet.deploy.quantize import quantize_pt2e
    from bisenet.runtime import cpu_has_vnni

    # A small conv stack: exporting BiSeNetV2 twice took 90 s; the range choice is the same.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1)).eval()

    def activation_ranges(reduce_range: bool | None) -> set:
        graph = quantize_pt2e(net, [torch.randn(1, 3, 64, 64)], reduce_range=reduce_range).graph
        return {n.args[3:5] for n in graph.nodes if "quantize_per_tensor" in str(n.target)}

    # Without VNNI the u8 x s8 pair sums saturate int16 unless activations stay below 128.
    assert activation_ranges(None) == {(0, 255) if cpu_has_vnni() else (0, 127)}
    assert activation_ranges(False) == {(0, 255)}


@pytest.fixture(scope="session")
def int8_openvino(model, images):
    """One int8_openvino build for the tests that inspect it: several NNCF quantisations in one
    process have crashed it (SIGSEGV, seen only in the full suite), so each extra one runs in a
    subprocess."""
    return build_backend("int8_openvino", model, "cpu", calibration=list(images["train"][:6].split(1)))


@pytest.mark.parametrize("name", [
    "eager", "fold_bn", "onnxruntime", "amp", "int8",
    pytest.param("int8_compile", marks=pytest.mark.skipif(not HAS_TORCHAO, reason="needs torchao (pip install torchao)")),
    pytest.param("openvino", marks=NEEDS_OPENVINO),
    pytest.param("int8_openvino", marks=NEEDS_OPENVINO),
    pytest.param("compile", marks=[pytest.mark.slow, pytest.mark.skipif(not RUN_SLOW, reason="set BISENET_SLOW_TESTS=1")]),
])
def test_backend_agrees_with_eager(name, model, images, reference, request) -> None:
    if name == "int8_openvino":
        backend = request.getfixturevalue("int8_openvino")
    else:
        opts = {"calibration": list(images["train"][:6].split(1))} if name.startswith("int8") else {}
        backend = build_backend(name, model, "cpu", **opts)
    assert backend.name == name
    logits = backend(images["val"])
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert logits.shape == (len(images["val"]), 5, *SIZE)
    agreement = (logits.argmax(1) == reference).float().mean().item()
    assert agreement >= AGREEMENT[name], f"{name}: agreement {agreement:.4f}"


def test_dynamic_backends_take_other_sizes_and_batches(model) -> None:
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        ref = model(x)
    out = build_backend("onnxruntime", model)(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-3


def test_backends_refuse_options_they_do_not_take_and_sizes_the_model_does_not(model) -> None:
    # A misspelt option used to be dropped silently (amp then ran its default dtype).
    with pytest.raises(BisenetError, match=r"the amp backend takes no option dtpye='fp16' \(did you mean 'dtype'\?\)"):
        build_backend("amp", model, dtpye="fp16")
    with pytest.raises(BisenetError, match=r"the eager backend takes no option calibration='x'; its options: none"):
        build_backend("eager", model, calibration="x")
    with pytest.raises(ValueError, match=r"multiples of 32, got 100x100; pad or resize to 128x128"):
        build_backend("onnxruntime", model)(torch.randn(1, 3, 100, 100))  # not onnxruntime's broadcast failure


def test_int8_calibrates_from_a_folder(model, images, reference) -> None:
    data = bisenet.load_config(CONFIG).data
    backend = build_backend("int8", model, calibration=EXAMPLE / "train" / "images", size=SIZE,
                            mean=data.mean, std=data.std, limit=4)
    agreement = (backend(images["val"]).argmax(1) == reference).float().mean().item()
    assert agreement >= AGREEMENT["int8"]


def test_int8_kernels_compute_what_the_quantised_graph_means(model, images, tmp_path) -> None:
    """The int8 kernels against the same QDQ graph run op by op in float: without VNNI, s8
    weights saturate onnxruntime's int16 sums, so quantize_onnx picks u8 weights there."""
    import onnxruntime as ort

    from bisenet.deploy.export import export_onnx, ort_session
    from bisenet.deploy.quantize import onnx_float_nodes, quantize_onnx
    from bisenet.runtime import cpu_has_vnni

    export_onnx(model, tmp_path / "fp32.onnx", *SIZE, dynamic=True, check=False)
    info = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", list(images["train"][:6].split(1)),
                         keep_fp32=onnx_float_nodes(model))
    assert info["unsigned_weights"] == (not cpu_has_vnni())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusion into int8 kernels
    in_float = ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    feed = {"input": images["val"].numpy()}
    simulated = in_float.run(None, feed)[0].argmax(1)
    fused = ort_session(tmp_path / "int8.onnx").run(None, feed)[0].argmax(1)
    assert (simulated == fused).mean() >= 0.995, f"int8 kernels agree with their graph on {(simulated == fused).mean():.2%}"


@NEEDS_OPENVINO
def test_openvino_takes_other_sizes_and_batches(model) -> None:
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    out = build_backend("openvino", model, precision="f32")(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-3


@NEEDS_OPENVINO
def test_int8_openvino_keeps_the_sensitive_convolutions_in_float(model, int8_openvino) -> None:
    from bisenet.deploy.openvino import float_node_names

    backend = int8_openvino
    runtime = backend.request.get_compiled_model().get_runtime_model()
    # The runtime graph names each executed node after the original ones and records its precision.
    kinds = {op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()}
    assert backend.float_modules in (model.openvino_float_modules, model.openvino_float_modules_fast)
    kept = float_node_names([n for n in kinds if "Conv" in n], backend.float_modules)
    assert {n for n in kept if n.startswith("/head/conv_out")}, "the classifier conv was not found by name"
    assert all(kinds[n] != "u8" and kinds[n] != "i8" for n in kept), {n: kinds[n] for n in kept}
    assert any(kinds[n] in ("u8", "i8") for n in kinds if n.startswith("/head/conv/")), "the head's 3x3 conv is not int8"


FALLBACK_SCRIPT = """
import sys, torch, bisenet
from bisenet.deploy import build_backend
model = bisenet.load_model(sys.argv[1]).eval()
calibration = list(torch.load(sys.argv[2]).split(1))
safe = build_backend("int8_openvino", model, calibration=calibration, min_agreement=1.01)  # no set can pass
print(safe.float_modules == model.openvino_float_modules, 0.9 <= safe.calibration_agreement <= 1.0)
"""


@NEEDS_OPENVINO
def test_int8_openvino_keeps_the_faster_float_set_only_if_it_agrees(model, images, int8_openvino, tmp_path) -> None:
    fast, safe = model.openvino_float_modules_fast, model.openvino_float_modules
    assert int8_openvino.float_modules == (fast if int8_openvino.calibration_agreement >= 0.99 else safe)
    # The fallback (two quantisations) in a fresh process, see the int8_openvino fixture.
    torch.save(images["train"][:2].clone(), tmp_path / "calibration.pt")
    weights = tmp_path / "model.pt"
    torch.save({"arch": "bisenetv2", "num_classes": 5, "model": model.state_dict()}, weights)
    result = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT, str(weights), str(tmp_path / "calibration.pt")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["True", "True"], result.stdout


def test_float_node_names_match_module_paths() -> None:
    from bisenet.deploy.openvino import float_node_names

    nodes = ["/detail/S1/S1.0/conv/Conv", "/detail/S1/S1.1/conv/Conv", "/head/conv_out.1/Conv/WithoutBiases",
             "/head/conv/conv/Conv", "/segment/S1S2/conv/conv/Conv", "/segment/S1S2/fuse/conv/Conv", "/bga/left1/left1.2/Conv"]
    kept = float_node_names(nodes, ("head.conv_out", "bga", "segment.S1S2.conv", "detail.S1.0"))
    assert float_node_names(nodes, ("segment",)) == nodes[4:6]
    assert kept == ["/detail/S1/S1.0/conv/Conv", "/head/conv_out.1/Conv/WithoutBiases", "/segment/S1S2/conv/conv/Conv",
                    "/bga/left1/left1.2/Conv"]


@pytest.mark.parametrize("name", ["int8", "int8_compile", "int8_openvino"])
def test_int8_without_calibration_names_the_fix(model, name) -> None:
    with pytest.raises(BisenetError, match="calibration"):
        build_backend(name, model)


def test_unknown_backend_lists_the_valid_ones(model) -> None:
    with pytest.raises(BisenetError) as info:
        build_backend("tensorrt", model)
    message = str(info.value)
    assert "tensorrt" in message and all(name in message for name in BACKENDS)


def test_cuda_on_a_cpu_machine_names_the_fix(model) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BisenetError, match="--device cpu"):
        build_backend("eager", model, "cuda")


def test_cuda_graphs_on_the_cpu_names_the_fix(model) -> None:
    with pytest.raises(BisenetError, match=r"needs --device cuda \(device='cuda' in Python\); on CPU use compile"):
        build_backend("compile_graphs", model, "cpu")


@pytest.mark.parametrize("arch", ["bisenetv1", "bisenetv2"])
def test_fold_batchnorm_removes_every_used_bn_and_keeps_the_output(arch) -> None:
    torch.manual_seed(0)
    net = bisenet.build_model(arch, 3).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    folded = fold_batchnorm(net)
    prefixes = tuple(f"{name}." for name in net.aux_heads)
    # Left: BNs in the aux heads (not run in eval mode) and BNs that follow no conv.
    left = [n for n, m in folded.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and not n.startswith(prefixes)]
    assert left == (["segment.S5_5.bn"] if arch == "bisenetv2" else [])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (folded(x) - net(x)).abs().max() < 1e-3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_folded_copy_survives_fp16_with_trained_size_variances() -> None:
    # Trained BiSeNetV2 BNs have running variances above 1e5, past fp16's range: a plain
    # .half() zeroes those channels. A BN after a ReLU is not folded, so its statistics are absorbed.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(8)).eval()
    with torch.no_grad():
        net[0].weight.mul_(300)
        net[2].running_mean.fill_(300.0)
        net[2].running_var.fill_(4e5)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        naive = copy.deepcopy(net).half()(x.half()).float()
        safe = fold_batchnorm(net).half()(x.half()).float()
    scale = ref.abs().max()
    assert (naive - ref).abs().max() > 0.1 * scale  # the failure this guards against
    assert (safe - ref).abs().max() < 1e-2 * scale


def test_device_auto_is_taken_by_build_backend_and_build_runner_as_by_segmenter() -> None:
    # Segmenter and the CLI took 'auto'; build_backend said "not a device name", build_runner raised torch's RuntimeError.
    from bisenet.deploy import backends
    from bisenet.engine import distributed
    from bisenet.evaluation import build_runner
    from bisenet.predict import Segmenter

    assert backends.resolve_device is distributed.resolve_device  # one device resolver, not two that disagree
    net = bisenet.build_model("bisenetv2", 5).eval()
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert build_backend("eager", net, "auto").device.type == expected.type
    assert build_runner(net, "fold_bn", "auto").device.type == expected.type
    assert Segmenter(net, 5, device="auto").device.type == expected.type
    with pytest.raises(BisenetError, match=r"^device 'gpu': not a device name; pass auto, cpu or cuda\[:N\]$"):
        build_runner(net, "eager", "gpu")


def test_calibration_from_files_needs_the_models_mean_and_std(model) -> None:
    # Without them the int8 ranges were fitted to ImageNet-normalised input the model never sees, silently.
    with pytest.raises(BisenetError, match=r"the int8 backend reads calibration images from files: pass mean= and std="):
        build_backend("int8", model, calibration=EXAMPLE / "train" / "images", size=SIZE, limit=1)
