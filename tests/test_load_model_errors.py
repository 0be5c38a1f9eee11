"""load_model on broken, foreign and malicious weights files: the CheckpointError each gets, naming the file and
what is wrong, and pickled code never run (the files that load are in test_load_model.py)."""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import bisenet
from bisenet.checkpoint import save_inference_weights
from bisenet.errors import CheckpointError
from model_helpers import ARCHS, random_state_dict  # tests/ is on sys.path


@pytest.fixture(scope="module")
def states():
    """Per arch: the random published-format state_dict of test_load_model.py's `published` (no reference run)."""
    return {arch: random_state_dict(arch) for arch in ARCHS}


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
def published_files(states, tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    paths = {}
    for arch in ARCHS:
        paths[arch] = folder / f"{arch}.pth"
        torch.save(states[arch], paths[arch])
    return paths


@pytest.mark.parametrize(("arch", "forced", "held", "other"), [("bisenetv2", "bisenetv1", "BiSeNetV2", "BiSeNetV1"),
                                                               ("bisenetv1", "bisenetv2", "BiSeNetV1", "BiSeNetV2")])
def test_load_model_wrong_arch_says_which_arch_the_file_holds(published_files, arch, forced, held, other):
    # It named the first foreign entry ("unexpected entry 'bga.conv.1.num_batches_tracked' for BiSeNetV1").
    path = published_files[arch]
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path, arch=forced)
    assert str(info.value) == (f"{path}: this file holds {held} weights, not {other}; pass arch='{arch}' "
                               f"(or --arch {arch}), or leave it out to read it from the file")


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


@pytest.mark.parametrize(("content", "says"), [(b"", "is empty"), (b"# notes\n", "not a PyTorch weights file")])
def test_load_model_empty_or_foreign_file_says_what_it_is(tmp_path, content, says):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=says) as info:
        bisenet.load_model(path)
    assert str(path) in str(info.value)


def test_load_model_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        bisenet.load_model(tmp_path / "nope.pth")


def test_load_model_folder_empty_state_dict_and_bad_arguments_say_what_is_wrong(published_files, tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "empty.pth")
    weights = published_files["bisenetv2"]
    for args, kwargs, message in [
        ((tmp_path / "run",), {}, f"{tmp_path / 'run'}: is a folder, not a weights file, and holds no weights file "
                                  "(.pt, .pth, .safetensors); pass the weights file itself"),
        ((tmp_path / "empty.pth",), {}, f"{tmp_path / 'empty.pth'}: the state_dict is empty (no entries)"),
        ((weights,), {"map_location": "gpu"}, "map_location='gpu': not a device; pass 'cpu', 'cuda' or 'cuda:N'"),
        ((weights,), {"num_classes": 0}, "num_classes=0: must be a positive integer (or None to read it from the file)"),
        ((weights,), {"arch": "bisenetv3"}, "arch='bisenetv3': unknown arch; valid: bisenetv1, bisenetv2"),
    ]:
        with pytest.raises(CheckpointError) as info:
            bisenet.load_model(*args, **kwargs)
        assert str(info.value).startswith(message), str(info.value)
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match=re.escape("map_location='cuda': CUDA is not available here")):
            bisenet.load_model(weights, map_location="cuda")


def test_load_model_folder_suggests_only_a_file_that_is_there(published_files, tmp_path):
    # An empty folder used to get DIR/last.pt suggested, which does not exist.
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "last.pt").write_bytes(published_files["bisenetv2"].read_bytes())
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(run)
    assert str(info.value).endswith(f"pass a file in it, such as {run / 'train' / 'last.pt'}")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "model.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=re.escape(f"such as {tmp_path / 'plain' / 'model.pth'}")):
        bisenet.load_model(tmp_path / "plain")


def test_load_model_truncated_zip_reason_ends_at_a_sentence(published_files, tmp_path):
    # torch's message runs on ("... This can happen if the ..."); a fixed-width cut ended mid-word.
    path = tmp_path / "cut.pth"
    path.write_bytes(published_files["bisenetv2"].read_bytes()[:1000])
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    message = str(info.value)
    assert "failed finding central directory.)" in message and "miniz" not in message, message
    assert message.endswith("a truncated or corrupted copy? re-copy it or point at another checkpoint")


def test_load_model_onnx_file_says_what_to_pass_instead(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x08\x12\x07pytorch")  # how an ONNX protobuf begins
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    assert str(info.value).startswith(f"{path}: an ONNX model, not PyTorch weights; pass the .pt/.pth/.safetensors "
                                      "weights it was exported from")
    assert "--backend onnxruntime" in str(info.value) and "\n" not in str(info.value)


def test_short_reason_cuts_at_a_sentence_or_word_boundary():
    from bisenet.checkpoint import _short

    assert _short("One. Two three.") == "One."
    assert _short("alpha beta gamma delta", 13) == "alpha beta ..."
    assert _short("short\nsecond line") == "short"


def test_load_model_missing_entries(states, tmp_path):
    state = OrderedDict(states["bisenetv1"])
    del state["ffm.bn.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape("ffm.bn.running_var")):
        bisenet.load_model(path)


@pytest.mark.parametrize("arch", ARCHS)
def test_load_model_without_classifier_says_so(states, tmp_path, arch):
    state = states[arch]
    path = tmp_path / "partial.pth"
    torch.save(dict(list(state.items())[: len(state) // 2]), path)  # the first half: the marker, not the classifier
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    message = str(info.value)
    classifier = {"bisenetv1": "conv_out.conv_out.weight", "bisenetv2": "head.conv_out.1.weight"}[arch]
    assert "partial.pth" in message and classifier in message and "partial state_dict" in message
    assert "none of" not in message


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_model_plain_pickle_is_one_line_without_warning(tmp_path, recwarn, protocol):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=protocol))
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint") as info:
        bisenet.load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and ".safetensors" in message
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_load_model_legacy_file_in_protocol_4_is_one_line_without_warning(tmp_path, recwarn):
    path = tmp_path / "legacy4.pth"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(CheckpointError, match="legacy4.pth") as info:
        bisenet.load_model(path)
    assert "\n" not in str(info.value) and "documentation" not in str(info.value)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


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
    with pytest.raises(CheckpointError, match="refused to load") as info:
        bisenet.load_model(path)
    assert not marker.exists(), "loading a weights file ran code from it"
    # torch's own advice (re-run with weights_only=False) is left out: it is what not to do here.
    assert "weights_only" not in str(info.value) and "GLOBAL" in str(info.value)


def test_pickle_payload_is_live(tmp_path):
    """The payload above really does run code when unpickled without weights_only."""
    marker = tmp_path / "live"
    path = tmp_path / "evil.pth"
    torch.save(Payload(marker), path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_model_one_missing_entry_is_named_without_and_0_more(states, tmp_path):
    # "(and 0 more)" followed a single missing entry.
    state = OrderedDict(states["bisenetv1"])
    del state["ffm.bn.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    assert str(info.value) == f"{path}: missing entry 'ffm.bn.running_var'; wrong arch or a truncated file?"
    del state["ffm.bn.running_mean"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape("missing entry 'ffm.bn.running_mean' (and 1 more);")):
        bisenet.load_model(path)


def test_load_model_whose_stored_arch_contradicts_its_entries_says_both(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "mislabelled.safetensors"
    save_inference_weights(bisenet.build_model("bisenetv2", 3), path, "bisenetv1")  # metadata: bisenetv1
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    assert str(info.value) == (f"{path}: its metadata says arch bisenetv1 but its entries are BiSeNetV2's (e.g. "
                               "'detail.S1.0.conv.weight'); pass arch='bisenetv2' to load them")
    assert bisenet.load_model(path, arch="bisenetv2").num_classes == 3


@pytest.mark.parametrize("path", [5, None, b"w.pt", True])
def test_load_model_path_of_another_type_is_one_line(path):
    # load_model(5) raised TypeError: expected str, bytes or os.PathLike object, not int.
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    assert str(info.value) == (f"path={path!r}: expected a weights file path (str or os.PathLike), "
                               f"not {type(path).__name__}")


def _nonfinite_copy(state: dict, key: str, value: float) -> dict:
    """`state` with one value of entry `key` replaced (NaN or inf), as a diverged run leaves it."""
    state = {k: v.clone() for k, v in state.items()}
    state[key].view(-1)[3] = value
    return state


@pytest.mark.parametrize("key, value, kind", [
    ("detail.S1.0.conv.weight", float("nan"), "NaN"),
    ("bga.left1.1.running_var", float("inf"), "inf"),  # BatchNorm statistics count: they scale every activation
])
def test_load_model_refuses_weights_holding_nan_or_inf_naming_the_entry(tmp_path, key, value, kind):
    state = _nonfinite_copy(bisenet.build_model("bisenetv2", 5).state_dict(), key, value)
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        bisenet.load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and f"entry '{key}' holds {kind}" in message
    assert "pass an earlier checkpoint" in message


def test_safetensors_with_nan_is_refused_and_predict_says_so_in_one_line(tmp_path, capsys):
    from bisenet.cli import main

    model = bisenet.build_model("bisenetv2", 5).eval()
    model.load_state_dict(_nonfinite_copy(model.state_dict(), "head.conv_out.1.weight", float("nan")))
    path = tmp_path / "nan.safetensors"
    save_inference_weights(model, path, "bisenetv2", half=False)
    with pytest.raises(CheckpointError, match=r"entry 'head.conv_out.1.weight' holds NaN \(1 of "):
        bisenet.load_model(path)
    image = Path(__file__).resolve().parents[1] / "examples" / "dubai" / "val" / "images"
    code = main(["predict", "--weights", str(path), "--out", str(tmp_path / "masks"), str(next(image.iterdir()))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "holds NaN" in err, err
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").iterdir())  # no all-zero masks written


def test_numpy_class_counts_are_taken_as_segmenter_takes_them(tmp_path) -> None:
    # Segmenter accepted np.int64 while build_model and load_model refused it as not a positive integer.
    np = pytest.importorskip("numpy")
    model = bisenet.build_model("bisenetv2", np.int64(3))
    assert type(model.num_classes) is int and model.num_classes == 3
    save_inference_weights(model, tmp_path / "w.safetensors", "bisenetv2")
    assert bisenet.load_model(tmp_path / "w.safetensors", num_classes=np.int32(3)).num_classes == 3
    with pytest.raises(CheckpointError, match="must be a positive integer"):
        bisenet.load_model(tmp_path / "w.safetensors", num_classes=np.float64(3))


def test_finetune_one_missing_entry_is_named_without_and_0_more(states, tmp_path):
    # The same "(and 0 more)" in --finetune-from's message.
    from bisenet.engine.resume import load_finetune_weights

    state = OrderedDict(states["bisenetv1"])
    del state["ffm.bn.running_var"]
    with pytest.raises(CheckpointError) as info:
        load_finetune_weights(bisenet.build_model("bisenetv1", 19), state, "w.pth")
    assert str(info.value) == "--finetune-from w.pth: missing entry 'ffm.bn.running_var'; a truncated file or another arch?"
