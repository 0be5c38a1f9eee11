"""The CUDA paths: training with fp16 and bf16 autocast, the CUDA backends' agreement, eval and
bench on the GPU. Skipped without a CUDA device; `bench/gpu_check.sh` runs them on a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.deploy import build_backend
from bisenet.deploy.bench import run_benchmark
from bisenet.deploy.images import read_folder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here; these run on a GPU machine (bench/gpu_check.sh)")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
SIZE = (256, 256)


def tiny_config(amp: str, iters: int) -> bisenet.Config:
    """The bundled example at 256x256 crops on the GPU, short."""
    return bisenet.load_config(CONFIG, {
        "data.root": str(EXAMPLE), "augment.crop_size": [256, 256], "train.max_iters": iters, "train.amp": amp,
        "train.warmup_iters": 10, "train.workers": 2, "train.device": "cuda", "train.eval_interval": iters,
        "train.checkpoint_interval": iters, "train.log_interval": iters,
    })


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> torch.nn.Module:
    """BiSeNetV2 trained 150 iterations on the GPU: logit margins that make agreement meaningful."""
    work_dir = tmp_path_factory.mktemp("cuda_trained")
    bisenet.train(tiny_config("fp16", 150), work_dir)
    return bisenet.load_model(work_dir / "last.pt").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = bisenet.load_config(CONFIG).data
    return torch.stack(read_folder(EXAMPLE / "val" / "images", SIZE, data.mean, data.std))


@pytest.mark.parametrize("amp", ["fp16", "bf16", "none"])
def test_training_on_cuda_writes_a_checkpoint_with_finite_loss(amp, tmp_path) -> None:
    result = bisenet.train(tiny_config(amp, 6), tmp_path)
    assert (tmp_path / "last.pt").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert result.iteration == 6 and result.stopped_by is None


def test_cuda_eager_agrees_with_cpu(model, images) -> None:
    with torch.no_grad():
        cpu = model.cpu()(images).argmax(1)
        gpu = model.cuda()(images.cuda()).argmax(1).cpu()
    model.cpu()
    assert (gpu == cpu).float().mean().item() >= 0.999


# amp and compile run in fp16 on CUDA: near-ties flip, as with bf16 on the CPU (same bounds as there).
AGREEMENT = {"eager": 0.999, "fold_bn": 0.999, "amp": 0.99, "compile": 0.99, "compile_graphs": 0.99, "onnxruntime": 0.999}


@pytest.mark.parametrize("name", list(AGREEMENT))
def test_cuda_backend_agrees_with_eager(name, model, images) -> None:
    with torch.no_grad():
        reference = model.cpu()(images).argmax(1)
    backend = build_backend(name, model, "cuda")
    # CUDA graphs: the first call warms up, the second records, only the third replays.
    for _ in range(3 if name == "compile_graphs" else 1):
        logits = backend(images.cuda())
    assert logits.device.type == "cuda" and logits.dtype == torch.float32
    agreement = (logits.argmax(1).cpu() == reference).float().mean().item()
    assert agreement >= AGREEMENT[name], f"{name}: agreement {agreement:.4f}"


def test_cuda_graphs_outputs_survive_the_next_call(model, images) -> None:
    # fp32, so no dtype cast hides a graph buffer handed out as the result.
    backend = build_backend("compile_graphs", model, "cuda", dtype="fp32")
    a, b = images[:1].cuda(), images[1:2].cuda()
    for _ in range(3):  # warm-up, recording, then replays
        replayed = backend(a)
    kept = replayed.clone()
    following = backend(b)
    assert not torch.equal(following, kept)  # the two inputs give different logits
    assert torch.equal(replayed, kept)


def test_eval_on_cuda_matches_cpu(model, tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    common = {"data_root": EXAMPLE, "list_file": EXAMPLE / "val.txt", "progress": False}
    cpu = bisenet.evaluate(CONFIG, path, device="cpu", **common)
    gpu = bisenet.evaluate(CONFIG, path, device="cuda", **common)
    assert abs(cpu["mIoU"] - gpu["mIoU"]) < 0.005


def test_bench_on_cuda_reports_cuda_memory() -> None:
    rows = run_benchmark(size=(512, 1024), device="cuda", backends=["eager", "amp"], warmup=2, iters=5)
    assert [r["backend"] for r in rows] == ["eager", "amp"]
    for row in rows:
        assert row["median_ms"] > 0 and row["peak_cuda_mb"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two GPUs needed: NCCL refuses two ranks on one GPU")
def test_torchrun_eval_on_two_gpus_matches_one(model, tmp_path) -> None:
    # Each rank joined the group on cuda:LOCAL_RANK, then re-resolved that name and refused it as an explicit index.
    import subprocess
    import sys

    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    common = [str(CONFIG), "--weights", str(path), "--data-root", str(EXAMPLE), "--list", "val.txt", "--device", "auto"]
    one = bisenet.evaluate(CONFIG, path, device="cuda", data_root=EXAMPLE, list_file=EXAMPLE / "val.txt", progress=False)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "bisenet", "eval", *common, "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["images"] == one["images"] and abs(two["mIoU"] - one["mIoU"]) < 0.005
