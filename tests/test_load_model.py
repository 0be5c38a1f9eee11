"""Compatibility with the published checkpoints (entry names and shapes, logits) and load_model on every
kind of weights file that should load; the broken and the malicious ones are in test_load_model_errors.py."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

import bisenet
from bisenet.checkpoint import atomic_save, save_inference_weights
from model_helpers import (ARCHS, AUX_PREFIXES, BATCH, REFERENCE_DIR, SIZE, eval_bn_train_heads,  # tests/ is on sys.path
                           make_input, max_rel_diff, random_state_dict, strip_aux)
from reference_impl import reference_forward


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


@pytest.fixture(scope="module")
def published():
    """Per arch: (random published-format state_dict, input, reference outputs [main, *aux])."""
    data = {}
    for arch in ARCHS:
        state = random_state_dict(arch)
        x = make_input(seed=7)
        data[arch] = (state, x, reference_forward(arch, state, x))
    return data


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


@pytest.mark.parametrize("wrap", ["state_dict_key", "model_state_dict_key", "module_prefix"])
def test_load_model_wrapped_published_state_dict(published, tmp_path, wrap):
    state, x, ref = published["bisenetv2"]
    obj = {"state_dict_key": {"state_dict": state}, "model_state_dict_key": {"model_state_dict": state, "epoch": 3},
           "module_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    with torch.no_grad():
        out = bisenet.load_model(path)(x)
    assert max_rel_diff(out, ref[0]) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_load_model_without_num_batches_tracked_gives_reference_logits(published, tmp_path, arch):
    # Converted and older checkpoints lack BatchNorm's step counters; torch's strict loader accepts that too.
    state, x, ref = published[arch]
    path = tmp_path / "converted.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    with torch.no_grad():
        assert max_rel_diff(bisenet.load_model(path)(x), ref[0]) < 1e-4


def test_load_model_aux_head_without_running_statistics_loads_and_infers_the_same(published, tmp_path):
    # Aux heads run only in training mode, where BatchNorm normalises with the batch's own statistics:
    # their running statistics are never used, so weights without them load as they are (no error).
    state, x, ref = published["bisenetv2"]
    stats = (".running_mean", ".running_var", ".num_batches_tracked")
    path = tmp_path / "aux_without_stats.pth"
    torch.save({k: v for k, v in state.items() if not (k.startswith("aux2.") and k.endswith(stats))}, path)
    model = bisenet.load_model(path)
    with torch.no_grad():
        assert max_rel_diff(model(x), ref[0]) < 1e-4
    assert torch.equal(model.state_dict()["aux2.conv_out.1.weight"], state["aux2.conv_out.1.weight"])  # the rest loads


def test_load_model_reads_legacy_torch_save_format(published, tmp_path):
    state, x, ref = published["bisenetv1"]
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with torch.no_grad():
        assert max_rel_diff(bisenet.load_model(path)(x), ref[0]) < 1e-4
