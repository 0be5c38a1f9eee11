"""Model tests: one shared contract for every architecture, then compatibility with the
published checkpoints (names, shapes, logits), weights files, backbone loading, init, info.

Inputs stay small (64x96, batch 2) so the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bisenet
from bisenet.checkpoint import atomic_save, save_inference_weights
from bisenet.cli import main as cli_main
from bisenet.errors import CheckpointError
from reference_impl import reference_forward  # tests/ is on sys.path (pytest rootdir import)

REFERENCE_DIR = Path("/work/shared/reference")
SIZE = (64, 96)  # H, W: multiples of 32, not square
BATCH = 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convs run faster and steadier on one thread when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_input(batch: int = BATCH, size: tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def eval_bn_train_heads(model: nn.Module) -> nn.Module:
    """Train mode (so aux heads run) with every BatchNorm and Dropout in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()
    return model


@torch.no_grad()
def calibrate_bn(model: nn.Module, steps: int = 3) -> nn.Module:
    """Set BN running stats from a few train-mode forwards (cumulative average), then eval."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for step in range(steps):
        model(make_input(seed=100 + step))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the reference's scale (at least 1)."""
    return ((a.float() - b.float()).abs().max() / b.abs().max().clamp(min=1.0)).item()


# ============================================================================ contract
class ModelContract:
    """The behaviour every model promises; subclass once per architecture."""

    arch: str
    num_aux: int

    def make_model(self, num_classes: int = 19, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return bisenet.build_model(self.arch, num_classes)

    def test_attributes(self):
        model = self.make_model()
        assert model.num_classes == 19
        assert len(model.aux_heads) == self.num_aux
        assert set(model.aux_heads) <= set(model.head_modules)
        names = {name for name, _ in model.named_children()}
        assert set(model.head_modules) <= names

    def test_train_outputs(self):
        model = self.make_model().train()
        outputs = model(make_input())
        assert isinstance(outputs, tuple)
        assert len(outputs) == 1 + self.num_aux
        for out in outputs:
            assert out.shape == (BATCH, 19, *SIZE)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all()
            assert out.requires_grad

    def test_low_resolution_outputs_upsample_to_the_train_outputs(self):
        # upsample=False (what training uses) returns each head's logits at its own stride;
        # bilinear upsampling to the input size gives exactly the default outputs.
        model = self.make_model().train()
        x = make_input()
        torch.manual_seed(3)  # same dropout masks in both passes
        full = model(x)
        torch.manual_seed(3)
        low = model(x, upsample=False)
        assert len(low) == len(full)
        for a, b in zip(low, full):
            assert a.shape[-2] < SIZE[0] and SIZE[0] % a.shape[-2] == 0
            up = F.interpolate(a, size=SIZE, mode="bilinear", align_corners=False)
            torch.testing.assert_close(up, b, rtol=1e-4, atol=1e-4)

    def test_eval_output(self):
        model = self.make_model().eval()
        x = make_input()
        with torch.no_grad():
            out = model(x)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (BATCH, 19, *SIZE)
        assert torch.isfinite(out).all()
        # The eval output is the main head of the train-mode tuple (BN/dropout deterministic).
        with torch.no_grad():
            main = eval_bn_train_heads(model)(x)[0]
        torch.testing.assert_close(out, main)

    def test_backward(self):
        model = self.make_model().train()
        # Zero-initialised BN weights would block the gradient of the layers behind them;
        # open them so that every parameter must receive a non-zero gradient.
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(module.weight)
        x = make_input()
        target = torch.randint(0, 19, (BATCH, *SIZE), generator=torch.Generator().manual_seed(1))
        outputs = model(x)
        loss = sum(F.cross_entropy(out, target) for out in outputs)
        loss.backward()
        assert torch.isfinite(loss)
        bn_params = {
            id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
        }
        zero_bn = []
        for name, param in model.named_parameters():
            assert param.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
            if id(param) not in bn_params:
                assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
            elif param.grad.abs().sum() == 0:
                zero_bn.append(name)
        # A BN shift feeding a 1x1 conv + train-mode BN on a 1x1 map (V2's context embedding)
        # gets an exactly-zero gradient by construction: that BN removes any batch-constant shift.
        assert len(zero_bn) <= 1, zero_bn

    def test_aux_heads_get_gradient_from_aux_loss_only(self):
        model = self.make_model().train()
        main, *aux = model(make_input())
        sum(out.mean() for out in aux).backward()
        for head in model.aux_heads:
            grads = [p.grad for p in getattr(model, head).parameters()]
            assert all(g is not None and g.abs().sum() > 0 for g in grads), head

    @pytest.mark.parametrize(("size", "padded"), [((65, 96), "96x96"), ((64, 100), "64x128"), ((48, 48), "64x64")])
    @pytest.mark.parametrize("train", [True, False])
    def test_odd_sizes_rejected(self, size, padded, train):
        model = self.make_model().train(train)
        with pytest.raises(ValueError, match=padded) as info:
            model(torch.zeros(1, 3, *size))
        assert "32" in str(info.value)

    def test_state_dict_round_trip(self, tmp_path):
        model = calibrate_bn(self.make_model(seed=1))
        with torch.no_grad():
            for param in model.parameters():  # move every weight away from its init
                param.add_(torch.randn_like(param) * 0.01)
        path = tmp_path / "weights.pth"
        torch.save(model.state_dict(), path)
        restored = self.make_model(seed=2)
        restored.load_state_dict(torch.load(path, weights_only=True))
        restored.eval()
        x = make_input()
        with torch.no_grad():
            assert torch.equal(model(x), restored(x))
            for a, b in zip(eval_bn_train_heads(model)(x), eval_bn_train_heads(restored)(x)):
                assert torch.equal(a, b)

    def test_other_num_classes(self):
        model = self.make_model(num_classes=7)
        assert model.num_classes == 7
        outputs = model.train()(make_input())
        assert len(outputs) == 1 + self.num_aux
        assert all(out.shape == (BATCH, 7, *SIZE) for out in outputs)
        with torch.no_grad():
            assert model.eval()(make_input()).shape == (BATCH, 7, *SIZE)

    def test_channels_last_matches_contiguous(self):
        model = calibrate_bn(self.make_model())
        x = make_input()
        with torch.no_grad():
            expected = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
        assert out.shape == expected.shape
        assert max_rel_diff(out, expected) < 1e-4

    def test_bf16_autocast_cpu(self):
        model = calibrate_bn(self.make_model())
        x = make_input()
        with torch.no_grad():
            expected = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                # The logits' dtype is whatever autocast gives the final bilinear upsampling.
                probe = F.interpolate(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16), scale_factor=2, mode="bilinear")
        assert out.dtype == probe.dtype
        assert out.shape == (BATCH, 19, *SIZE)
        assert torch.isfinite(out).all()
        agreement = (out.float().argmax(1) == expected.argmax(1)).float().mean().item()
        assert agreement > 0.85, f"bf16 and fp32 argmax agree on only {agreement:.1%} of pixels"
        # Autocast in train mode too: every output finite and at input resolution.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model.train()(x)
        assert len(outputs) == 1 + self.num_aux
        assert all(o.shape == (BATCH, 19, *SIZE) and torch.isfinite(o).all() for o in outputs)

    def test_batch_size_one_train(self):
        """Batch 1 in train mode either works or fails with an error that names the fix.

        The 1x1 global-context features leave one value per channel for BatchNorm; PyTorch's
        own 'Expected more than 1 value per channel' is not an error a user can act on.
        """
        model = self.make_model().train()
        try:
            outputs = model(make_input(batch=1))
        except ValueError as exc:
            assert "batch" in str(exc).lower(), f"unhelpful error for batch 1 in train mode: {exc}"
            return
        assert len(outputs) == 1 + self.num_aux
        assert all(o.shape == (1, 19, *SIZE) and torch.isfinite(o).all() for o in outputs)

    def test_batch_size_one_eval(self):
        model = self.make_model().eval()
        with torch.no_grad():
            out = model(make_input(batch=1))
        assert out.shape == (1, 19, *SIZE)


class TestBiSeNetV1(ModelContract):
    arch = "bisenetv1"
    num_aux = 2


class TestBiSeNetV2(ModelContract):
    arch = "bisenetv2"
    num_aux = 4


# ============================================================================ reference listings
def read_listing(arch: str) -> tuple[str, "OrderedDict[str, tuple[tuple[int, ...], str]]"]:
    lines = (REFERENCE_DIR / f"{arch}_state_dict.txt").read_text().splitlines()
    entries = OrderedDict()
    for line in lines[1:]:
        if not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        entries[name] = (tuple(int(d) for d in re.findall(r"\d+", shape)), dtype)
    return lines[0], entries


def header_numbers(header: str) -> tuple[int, int, int]:
    """(entries, training params, eval params) from the listing's comment line."""
    m = re.search(r"([\d,]+) state_dict entries, ([\d,]+) parameters; in eval mode ([\d,]+)", header)
    assert m, header
    return tuple(int(g.replace(",", "")) for g in m.groups())


AUX_PREFIXES = {"bisenetv1": ("conv_out16.", "conv_out32."), "bisenetv2": ("aux2.", "aux3.", "aux4.", "aux5_4.")}
ARCHS = ("bisenetv1", "bisenetv2")


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_reference_listing(arch):
    header, listing = read_listing(arch)
    n_entries, n_train, n_eval = header_numbers(header)
    # The listing is self-consistent with its header.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = {k: v for k, v in listing.items() if not k.endswith(buffers)}
    assert len(listing) == n_entries
    assert sum(torch.Size(s).numel() for s, _ in params.values()) == n_train
    assert sum(torch.Size(s).numel() for k, (s, _) in params.items() if not k.startswith(AUX_PREFIXES[arch])) == n_eval

    model = bisenet.build_model(arch, 19)
    ours = OrderedDict((k, (tuple(v.shape), str(v.dtype))) for k, v in model.state_dict().items())
    missing = [k for k in listing if k not in ours]
    extra = [k for k in ours if k not in listing]
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    mismatched = {k: (ours[k], listing[k]) for k in listing if ours[k] != listing[k]}
    assert not mismatched, mismatched
    assert list(ours) == list(listing), "entry order differs from the published state_dict"
    assert sum(p.numel() for p in model.parameters()) == n_train
    aux = tuple(f"{h}." for h in model.aux_heads)
    assert aux == AUX_PREFIXES[arch]
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith(aux)) == n_eval


# ============================================================================ published format
def random_state_dict(arch: str, num_classes: int = 19, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Every entry random: He-scaled conv weights, BN affine near 1/0, positive random variances."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, value in bisenet.build_model(arch, num_classes).state_dict().items():
        shape = value.shape
        if name.endswith("num_batches_tracked"):
            state[name] = torch.randint(1, 100_000, (), generator=g, dtype=torch.long)
        elif name.endswith("running_mean"):
            state[name] = torch.randn(shape, generator=g) * 0.1
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        elif value.dim() == 4:
            state[name] = torch.randn(shape, generator=g) * (2.0 / value[0].numel()) ** 0.5
        elif name.endswith("weight"):
            state[name] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:
            state[name] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def published():
    """Per arch: (random published-format state_dict, input, reference outputs [main, *aux])."""
    data = {}
    for arch in ARCHS:
        state = random_state_dict(arch)
        x = make_input(seed=7)
        data[arch] = (state, x, reference_forward(arch, state, x))
    return data


def strip_aux(arch: str, state: dict) -> OrderedDict:
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(AUX_PREFIXES[arch]))


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_outputs_are_not_degenerate(arch, published):
    _, _, ref = published[arch]
    assert len(ref) == 1 + len(AUX_PREFIXES[arch])
    for out in ref:
        assert out.shape == (BATCH, 19, *SIZE)
        assert torch.isfinite(out).all()
        spatial = (out - out.mean(dim=(2, 3), keepdim=True)).std()
        assert spatial > 1e-2 * out.abs().max()
        assert out.argmax(1).unique().numel() > 1


@pytest.mark.parametrize("explicit", [False, True], ids=["inferred", "explicit"])
@pytest.mark.parametrize("with_aux", [True, False], ids=["with_aux", "without_aux"])
@pytest.mark.parametrize("arch", ARCHS)
def test_published_state_dict_gives_reference_logits(arch, with_aux, explicit, published, tmp_path):
    state, x, ref = published[arch]
    saved = state if with_aux else strip_aux(arch, state)
    path = tmp_path / "published.pth"
    torch.save(saved, path)
    kwargs = {"arch": arch, "num_classes": 19} if explicit else {}
    model = bisenet.load_model(path, **kwargs)
    assert not model.training
    assert model.num_classes == 19
    assert type(model).__name__.lower() == arch
    with torch.no_grad():
        main = model(x)
    assert max_rel_diff(main, ref[0]) < 1e-4
    loaded = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(loaded[k], v), k
    if with_aux:
        with torch.no_grad():
            outputs = eval_bn_train_heads(model)(x)
        assert len(outputs) == len(ref)
        for i, (out, expected) in enumerate(zip(outputs, ref)):
            assert max_rel_diff(out, expected) < 1e-4, f"output {i}"


# ============================================================================ load_model
def test_load_model_from_our_checkpoint_dict(tmp_path):
    model = bisenet.build_model("bisenetv2", 7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    model.train()
    outputs = model(make_input())
    sum(out.mean() for out in outputs).backward()
    optimizer.step()
    scheduler.step()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "iteration": 1,
        "rng": {"seed": 0, "torch": torch.get_rng_state()},
        "config": {"model": {"arch": "bisenetv2", "num_classes": 7}, "train": {"lr": 0.005}},
        "arch": "bisenetv2",
        "num_classes": 7,
        "best_miou": None,
    }
    path = tmp_path / "ckpt" / "last.pth"
    atomic_save(ckpt, path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["last.pth"]
    loaded = bisenet.load_model(path)
    assert not loaded.training and loaded.num_classes == 7
    assert isinstance(loaded, bisenet.models.BiSeNetV2)
    x = make_input()
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_load_model_from_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    state = random_state_dict("bisenetv1", num_classes=5, seed=3)
    model = bisenet.build_model("bisenetv1", 5)
    model.load_state_dict(state)
    path = tmp_path / "model.safetensors"
    save_inference_weights(model, path, "bisenetv1")
    with safetensors.safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        assert handle.get_tensor("conv_out.conv_out.weight").dtype == torch.float16
        assert handle.get_tensor("conv_out.conv.bn.running_var").dtype == torch.float32  # may exceed fp16
        assert handle.metadata() == {"arch": "bisenetv1", "num_classes": "5"}
    assert not any(k.startswith(AUX_PREFIXES["bisenetv1"]) for k in keys)
    loaded = bisenet.load_model(path)
    assert isinstance(loaded, bisenet.models.BiSeNetV1) and loaded.num_classes == 5 and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    # Equal to the reference on the fp16-rounded weights (BN statistics stay fp32).
    rounded = {k: v.half().float() if v.is_floating_point() and "running_" not in k else v
               for k, v in strip_aux("bisenetv1", state).items()}
    x = make_input()
    with torch.no_grad():
        out = loaded(x)
    assert max_rel_diff(out, reference_forward("bisenetv1", rounded, x)[0]) < 1e-4


@pytest.mark.parametrize("wrap", ["state_dict_key", "module_prefix"])
def test_load_model_wrapped_published_state_dict(published, tmp_path, wrap):
    state, x, ref = published["bisenetv2"]
    obj = {"state_dict": state} if wrap == "state_dict_key" else {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    with torch.no_grad():
        out = bisenet.load_model(path)(x)
    assert max_rel_diff(out, ref[0]) < 1e-4


def test_load_model_corrupt_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    model = bisenet.build_model("bisenetv2", 3)
    path = tmp_path / "model.safetensors"
    save_inference_weights(model, path, "bisenetv2")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        bisenet.load_model(path)


@pytest.fixture(scope="module")
def published_files(published, tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    paths = {}
    for arch in ARCHS:
        paths[arch] = folder / f"{arch}.pth"
        torch.save(published[arch][0], paths[arch])
    return paths


@pytest.mark.parametrize(
    ("arch", "forced", "entry"),
    [("bisenetv2", "bisenetv1", "detail.S1.0.conv.weight"), ("bisenetv1", "bisenetv2", "cp.resnet.conv1.weight")],
)
def test_load_model_wrong_arch_names_entry(published_files, arch, forced, entry):
    with pytest.raises(CheckpointError, match=re.escape(entry)):
        bisenet.load_model(published_files[arch], arch=forced)


@pytest.mark.parametrize(
    ("arch", "entry", "shape"),
    [("bisenetv2", "head.conv_out.1.weight", (7, 1024, 1, 1)), ("bisenetv1", "conv_out.conv_out.weight", (7, 256, 1, 1))],
)
def test_load_model_wrong_num_classes_names_entry_and_shape(published_files, arch, entry, shape):
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(published_files[arch], num_classes=7)
    message = str(info.value)
    assert entry in message
    assert str(shape) in message


@pytest.mark.parametrize("keep", [0, 0.5])
def test_load_model_truncated_file(published_files, tmp_path, keep):
    data = published_files["bisenetv2"].read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        bisenet.load_model(path)


def test_load_model_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        bisenet.load_model(tmp_path / "nope.pth")


def test_load_model_missing_entries(published, tmp_path):
    state = OrderedDict(published["bisenetv1"][0])
    del state["ffm.bn.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape("ffm.bn.running_var")):
        bisenet.load_model(path)


@pytest.mark.parametrize(
    "obj",
    [nn.Linear(4, 2).state_dict(), {"model": nn.Conv2d(3, 8, 3).state_dict()}, torch.zeros(3), [1, 2, 3]],
    ids=["linear", "conv_in_model", "tensor", "list"],
)
def test_load_model_not_bisenet(tmp_path, obj):
    path = tmp_path / "other.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError):
        bisenet.load_model(path)


class Payload:
    """Unpickling this would run a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("wrap", ["bare", "in_state_dict", "in_checkpoint"])
def test_load_model_refuses_pickled_code(tmp_path, wrap):
    marker = tmp_path / "pwned"
    payload = Payload(marker)
    obj = {
        "bare": payload,
        "in_state_dict": {"detail.S1.0.conv.weight": torch.zeros(1), "evil": payload},
        "in_checkpoint": {"model": {}, "arch": "bisenetv2", "extra": payload},
    }[wrap]
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError):
        bisenet.load_model(path)
    assert not marker.exists(), "loading a weights file ran code from it"


def test_pickle_payload_is_live(tmp_path):
    """The payload above really does run code when unpickled without weights_only."""
    marker = tmp_path / "live"
    path = tmp_path / "evil.pth"
    torch.save(Payload(marker), path)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ============================================================================ V1 ImageNet backbone
def torchvision_resnet18_state(seed: int = 0, with_num_batches: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """A state_dict with torchvision's resnet18 names and shapes (incl. fc.*), random values."""
    g = torch.Generator().manual_seed(seed)
    trunk = bisenet.models.bisenetv1.ResNet18().state_dict()
    state = OrderedDict()
    for name, value in trunk.items():
        if name.endswith("num_batches_tracked"):
            if with_num_batches:
                state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(value.shape, generator=g)
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_torchvision_resnet18_names():
    names = list(torchvision_resnet18_state())
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer1.0.conv1.weight" in names and "layer4.0.downsample.1.running_var" in names
    assert len([n for n in names if not n.endswith("num_batches_tracked")]) == 102


@pytest.mark.parametrize("with_num_batches", [True, False])
def test_v1_pretrained_backbone_from_file(tmp_path, with_num_batches):
    state = torchvision_resnet18_state(with_num_batches=with_num_batches)
    path = tmp_path / "resnet18-5c106cde.pth"
    torch.save(state, path)
    model = bisenet.build_model("bisenetv1", 19, pretrained=str(path))
    for name, value in state.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        assert torch.equal(model.state_dict()[f"cp.resnet.{name}"], value), name
    assert not any(k.startswith("fc.") or ".fc." in k for k in model.state_dict())
    # The same through the method, on an existing model.
    other = bisenet.build_model("bisenetv1", 19)
    other.load_pretrained_backbone(str(path))
    assert torch.equal(other.cp.resnet.conv1.weight, state["conv1.weight"])


def test_v1_pretrained_bad_path_names_fix(tmp_path):
    with pytest.raises(CheckpointError) as info:
        bisenet.build_model("bisenetv1", 19, pretrained=str(tmp_path / "missing.pth"))
    message = str(info.value)
    assert "missing.pth" in message and "not found" in message
    assert "null" in message and "resnet18" in message


def test_v1_pretrained_not_a_resnet(tmp_path):
    path = tmp_path / "resnet18-bad.pth"
    torch.save(nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match="ResNet-18"):
        bisenet.build_model("bisenetv1", 19, pretrained=str(path))


def test_v1_pretrained_imagenet_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip("torch.hub dir is pinned by torch.hub.set_dir; TORCH_HOME is ignored")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = torchvision_resnet18_state(seed=5)
    torch.save(state, cache / "resnet18-f37072fd.pth")
    model = bisenet.build_model("bisenetv1", 19, pretrained="imagenet")
    assert torch.equal(model.cp.resnet.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_v1_pretrained_imagenet_offline_names_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip("torch.hub dir is pinned by torch.hub.set_dir; TORCH_HOME is ignored")
    try:
        bisenet.build_model("bisenetv1", 19, pretrained="imagenet")
    except CheckpointError as exc:
        message = str(exc)
        assert "download" in message
        assert "null" in message and "random init" in message
        assert "resnet18" in message
    else:
        pytest.skip("the ResNet-18 download succeeded: network available")


def test_v2_takes_no_pretrained_backbone():
    with pytest.raises(ValueError, match="null"):
        bisenet.build_model("bisenetv2", 19, pretrained="imagenet")


# ============================================================================ V2 initialisation
def test_v2_initialisation():
    torch.manual_seed(0)
    model = bisenet.build_model("bisenetv2", 19)
    zero_bn = re.compile(r"^segment\.(S3|S4|S5_4)\.\d+\.conv2\.1$")
    n_zero = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach()
            fan_out = w.shape[0] * w[0, 0].numel()
            if w.numel() >= 256:
                expected = (2.0 / fan_out) ** 0.5
                assert abs(w.std().item() / expected - 1) < 0.25, (name, w.std().item(), expected)
                assert abs(w.mean().item()) < 0.25 * expected, name
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, nn.BatchNorm2d):
            expected_weight = 0.0 if zero_bn.match(name) else 1.0
            n_zero += expected_weight == 0.0
            assert torch.all(module.weight == expected_weight), name
            assert torch.count_nonzero(module.bias) == 0, name
            assert torch.count_nonzero(module.running_mean) == 0 and torch.all(module.running_var == 1), name
    assert n_zero == 2 + 2 + 4  # one per GE layer in S3, S4, S5_4


# ============================================================================ info / build_model
@pytest.mark.parametrize(
    ("arch", "numbers"),
    [
        ("bisenetv2", ("3,358,627", "5,231,487", "49.2")),
        ("bisenetv1", ("13,275,539", "13,425,721", "59.2")),
    ],
)
def test_info_cli(arch, numbers, capsys):
    torch.set_num_threads(max(1, os.cpu_count() or 1))  # one 512x1024 forward: use every core
    try:
        code = cli_main(["info", "--arch", arch, "--num-classes", "19", "--size", "512x1024"])
    finally:
        torch.set_num_threads(1)
    out = capsys.readouterr().out
    assert code == 0
    assert arch in out and "512x1024" in out
    for number in numbers:
        assert number in out, f"{number} not in:\n{out}"


def test_build_model_unknown_arch_lists_valid():
    with pytest.raises(ValueError) as info:
        bisenet.build_model("bisenetv3", 19)
    message = str(info.value)
    assert "bisenetv3" in message and "bisenetv1" in message and "bisenetv2" in message


@pytest.mark.parametrize("num_classes", [0, -3, 2.5])
def test_build_model_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        bisenet.build_model("bisenetv2", num_classes)
