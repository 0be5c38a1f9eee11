"""BiSeNetV1's ImageNet ResNet-18 backbone: torchvision-format files, the hub cache, the errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import bisenet
from bisenet.errors import CheckpointError


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
        return
    # No error: only fine when the weights really arrived (a network); else a silent random init.
    if not list((tmp_path / "hub" / "checkpoints").glob("resnet18-*.pth")):
        pytest.fail("offline pretrained='imagenet' raised nothing and downloaded nothing: a silent random init?")
    pytest.skip("the ResNet-18 download succeeded: network available")


def test_v2_takes_no_pretrained_backbone():
    with pytest.raises(ValueError, match="null"):
        bisenet.build_model("bisenetv2", 19, pretrained="imagenet")
