"""ONNX export: dynamic shapes at two sizes, argmax labels, atomic writes, CLI errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import bisenet
from bisenet.cli import main
from bisenet.deploy.export import export_onnx
from bisenet.errors import BisenetError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "bisenetv2_camvid.safetensors"  # 11 classes, stores no config


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = bisenet.build_model("bisenetv2", 4).eval()
    # Non-trivial BN statistics, so that folding them into the convs is actually exercised.
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return net


@pytest.fixture(scope="module")
def weights(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("weights") / "v2.pth"
    torch.save(model.state_dict(), path)
    return path


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory, model) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("dynamic") / "dyn.onnx"
    return path, export_onnx(model, path, 64, 96, dynamic=True)


def test_dynamic_export_matches_pytorch_at_two_sizes(model, dynamic) -> None:
    path, report = dynamic
    assert [c["size"] for c in report["checks"]] == ["1x64x96", "2x32x32"]
    assert all(c["max_abs_diff"] < 1e-3 for c in report["checks"])
    for shape in [(1, 3, 64, 96), (2, 3, 96, 128)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = _run(path, x)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-3
    assert sorted(p.name for p in path.parent.iterdir()) == ["dyn.onnx"]  # no temp file left behind
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["bisenet.num_classes"] == "4" and meta["bisenet.output"] == "logits"


def test_argmax_export_outputs_int32_labels(model, tmp_path) -> None:
    path = tmp_path / "labels.onnx"
    report = export_onnx(model, path, 64, 64, dynamic=True, argmax=True, simplify=False)
    assert report["output"] == "labels" and all(c["agreement"] > 0.999 for c in report["checks"])
    assert onnx.load(str(path)).graph.output[0].name == "labels"
    x = torch.randn(2, 3, 64, 128)
    labels = _run(path, x)
    assert labels.dtype == np.int32 and labels.shape == (2, 64, 128)
    with torch.no_grad():
        ref = model(x).argmax(1).numpy()
    assert (labels == ref).mean() > 0.999


def test_static_fp16_export_halves_the_file(model, dynamic, tmp_path) -> None:
    report = export_onnx(model, tmp_path / "fp16.onnx", 64, 64, fp16=True, simplify=False)
    assert report["size_mb"] < 0.6 * dynamic[1]["size_mb"]
    check = report["checks"][0]
    assert "skipped" in check or check["agreement"] > 0.95  # some onnxruntime builds lack fp16 CPU kernels
    dims = [d.dim_value for d in onnx.load(str(tmp_path / "fp16.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]


@pytest.mark.parametrize("kwargs, message", [
    ({"height": 100, "width": 64}, "multiples of 32; use 128x64"),
    ({"height": 64, "width": 64, "opset": 9}, "opset 9"),
])
def test_bad_arguments_raise_one_line_errors(model, tmp_path, kwargs, message) -> None:
    with pytest.raises(BisenetError, match=message) as info:
        export_onnx(model, tmp_path / "m.onnx", **kwargs)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


class _BakedShape(torch.nn.Module):
    """Adds a zero map of the traced input's size: a graph that only runs at that size."""

    num_classes = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1].repeat(1, 4, 1, 1) + torch.zeros(1, 4, int(x.shape[2]), int(x.shape[3]))


def test_a_dynamic_export_that_fails_at_the_second_size_is_not_written(tmp_path) -> None:
    from bisenet.deploy.export import ExportCheckError

    with pytest.raises(ExportCheckError, match=r"export check failed at 2x\d+x\d+: onnxruntime fails at this size"):
        export_onnx(_BakedShape(), tmp_path / "m.onnx", 128, 128, dynamic=True, simplify=False)
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_in_python_refuses_what_the_cli_refuses(model, tmp_path) -> None:
    # A .pt name would hold an ONNX graph; a config of another arch or class count would label the file wrongly.
    from bisenet.config import load_config, to_dict

    with pytest.raises(BisenetError, match=r"m.pt: an ONNX graph is named .onnx: name it m.onnx"):
        export_onnx(model, tmp_path / "m.pt", 64, 64)
    v1 = REPO / "configs" / "bisenetv1_cityscapes.yaml"
    for config, message in ((to_dict(load_config(v1)), "config= is for a bisenetv1 model but the model is a bisenetv2"),
                            (load_config(REPO / "configs" / "bisenetv2_dubai.yaml"), "has 5 classes but the model predicts 4"),
                            (str(v1), "the config's model.arch is bisenetv1")):
        with pytest.raises(BisenetError, match=message):
            export_onnx(model, tmp_path / "m.onnx", 64, 64, config=config)
    assert list(tmp_path.iterdir()) == []
    four = {"data": {"num_classes": 4, "class_names": ["a", "b", "c", "d"]}}
    export_onnx(model, tmp_path / "m.onnx", 64, 64, config=four, simplify=False)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["bisenet.class_names"] == '["a", "b", "c", "d"]'


def test_cli_export_prints_the_check(weights, tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "m.onnx"
    code = main(["export", "--weights", str(weights), "--out", str(out), "--height", "64", "--width", "64",
                 "--dynamic", "--argmax"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "label agreement 1.00000" in printed or "label agreement 0.99" in printed
    assert "check 2x" in printed  # the second size of the dynamic check
    # 4 classes: no config and no preset, so nothing is made up for the metadata, and the line says so.
    assert "metadata: no class names, palette or mean/std stored (no config, and no dataset preset has 4 classes)" in printed
    assert not {p.key for p in onnx.load(str(out)).metadata_props} & {"bisenet.class_names", "bisenet.mean"}
    assert "static" not in printed
    # A static graph says that other image sizes must be padded to it (labels then differ from predict's).
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "s.onnx"), "--height", "64",
                 "--width", "64"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "note: a static 64x64 graph: images of another size must be padded (or resized) to 64x64, which changes "
        "labels against `bisenet predict` (the global context sees the padding); pass --dynamic, or --height/--width "
        "of your images")


def test_cli_export_bad_weights_path_is_one_line_exit_2(tmp_path, capsys) -> None:
    code = main(["export", "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "missing.pth" in err and "not found" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_writes_fp16_safetensors_that_keep_large_bn_variances(model, tmp_path, capsys) -> None:
    trained_like = bisenet.build_model("bisenetv2", 4).eval()
    trained_like.load_state_dict(model.state_dict())
    with torch.no_grad():  # trained BiSeNetV2 variances pass fp16's 65504
        trained_like.detail.S1[0].bn.running_var.mul_(2e5)
    source = tmp_path / "trained.pth"
    torch.save(trained_like.state_dict(), source)
    out = tmp_path / "v2.safetensors"
    code = main(["export", "--weights", str(source), "--out", str(out), "--fp16", "--height", "64", "--width", "64"])
    printed = capsys.readouterr().out
    assert code == 0 and "fp16 weights" in printed and "label agreement" in printed
    reloaded = bisenet.load_model(out)
    variance = reloaded.detail.S1[0].bn.running_var
    assert torch.isfinite(variance).all() and variance.max() > 65504
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert (reloaded(x).argmax(1) == trained_like(x).argmax(1)).float().mean() > 0.99
    # fp16 weights and fp32 statistics: about half the size of the fp32 file
    assert out.stat().st_size < 0.6 * source.stat().st_size


def test_safetensors_export_refuses_onnx_only_flags(weights, tmp_path, capsys) -> None:
    code = main(["export", "--weights", str(weights), "--out", str(tmp_path / "w.safetensors"), "--argmax"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--argmax" in err and ".onnx" in err
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_readable_by_others_like_any_new_file(weights, tmp_path) -> None:
    # mkstemp and safetensors create 0600 files; exports and checkpoints get 0666 less umask.
    from bisenet.checkpoint import atomic_save

    umask = os.umask(0o022)
    try:
        onnx_path, st_path, ckpt = tmp_path / "m.onnx", tmp_path / "w.safetensors", tmp_path / "c.pt"
        main(["export", "--weights", str(weights), "--out", str(onnx_path), "--height", "64", "--width", "64", "--no-check"])
        main(["export", "--weights", str(weights), "--out", str(st_path), "--height", "64", "--width", "64"])
        atomic_save({"x": 1}, ckpt)
    finally:
        os.umask(umask)
    for path in (onnx_path, st_path, ckpt):
        assert path.stat().st_mode & 0o777 == 0o644, path


@pytest.fixture
def nan_weights(model, tmp_path) -> Path:
    """A BiSeNetV2 state_dict whose float tensors are all NaN (a diverged training run)."""
    path = tmp_path / "nan.pth"
    torch.save({k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path


@pytest.mark.parametrize("out, flags", [("t.onnx", []), ("t.onnx", ["--argmax"]), ("t.safetensors", [])],
                         ids=["logits", "labels", "safetensors"])
def test_cli_export_of_nan_weights_fails_and_writes_nothing(nan_weights, tmp_path, capsys, out, flags) -> None:
    code = main(["export", "--weights", str(nan_weights), "--out", str(tmp_path / "ex" / out), "--height", "64",
                 "--width", "64", *flags])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1 and "wrote" not in captured.out
    assert err.count("\n") == 0 and out in err and "NaN" in err and "nothing was written" in err
    assert not (tmp_path / "ex").exists()  # neither the file, its temporary nor its folder


class BakedBranch(torch.nn.Module):
    """Flips its logits' sign unless the input is all zeros: tracing (on zeros) bakes in the wrong branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * (1.0 if float(x.abs().sum()) == 0 else -1.0)


def test_export_onnx_that_disagrees_raises_and_writes_nothing(tmp_path) -> None:
    from bisenet.deploy.export import ExportCheckError

    with pytest.raises(ExportCheckError, match="does not match PyTorch") as info:
        export_onnx(BakedBranch().eval(), tmp_path / "m.onnx", 64, 64, simplify=False)
    assert "\n" not in str(info.value) and "m.onnx" in str(info.value)
    assert info.value.report["checks"][0]["agreement"] < 0.99
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["m.pt", "m", "m.SafeTensors"])
def test_cli_export_refuses_an_out_name_that_would_hide_an_onnx_graph(weights, tmp_path, capsys, name) -> None:
    # `--out model.pt` used to write an ONNX graph named model.pt, which predict/eval then refused to read.
    code = main(["export", "--weights", str(weights), "--out", str(tmp_path / name), "--height", "64", "--width", "64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and name in err and ".onnx" in err and ".safetensors" in err
    assert list(tmp_path.iterdir()) == []


def test_exports_carry_the_checkpoint_config_to_predict_and_to_the_onnx_metadata(model, tmp_path) -> None:
    # A custom dataset's names, palette and mean/std: a .safetensors export used to drop them, so predict fell
    # back to ImageNet mean/std (other labels than the checkpoint's), and the ONNX file gave no normalisation.
    import json

    from bisenet.config import load_config, to_dict

    cfg = load_config({"data": {"dataset": "custom", "num_classes": 4, "class_names": list("abcd"),
                                "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]],
                                "mean": [0.1, 0.2, 0.3], "std": [0.2, 0.25, 0.3]}})
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": 4, "config": to_dict(cfg)}, ckpt)
    st, graph = tmp_path / "w.safetensors", tmp_path / "m.onnx"
    for out in (st, graph):
        assert main(["export", "--weights", str(ckpt), "--out", str(out), "--height", "64", "--width", "64"]) == 0
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    from_ckpt, from_st = bisenet.Segmenter.from_checkpoint(ckpt), bisenet.Segmenter.from_checkpoint(st)
    assert from_st.class_names == list("abcd") and from_st.info.mean == [0.1, 0.2, 0.3]
    assert from_st.palette == from_ckpt.palette and "stored config" in from_st.info.source
    assert (from_st.predict(image) == from_ckpt.predict(image)).mean() > 0.99
    meta = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    assert json.loads(meta["bisenet.mean"]) == [0.1, 0.2, 0.3] and json.loads(meta["bisenet.std"]) == [0.2, 0.25, 0.3]
    assert json.loads(meta["bisenet.class_names"]) == list("abcd")


def test_onnx_metadata_of_a_custom_config_without_names_or_palette_is_what_predict_draws_with(model, tmp_path) -> None:
    from bisenet.config import load_config, to_dict

    cfg = load_config({"data": {"dataset": "custom", "num_classes": 4}})
    ckpt, graph = tmp_path / "last.pt", tmp_path / "m.onnx"
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": 4, "config": to_dict(cfg)}, ckpt)
    assert main(["export", "--weights", str(ckpt), "--out", str(graph), "--height", "64", "--width", "64",
                 "--no-simplify"]) == 0
    meta = _metadata(graph)
    predicted = bisenet.Segmenter.from_checkpoint(ckpt)
    assert meta["class_names"] == predicted.class_names == ["0", "1", "2", "3"]
    assert meta["palette"] == predicted.palette


@pytest.mark.parametrize("out", ["m.onnx", "w.safetensors"])
def test_cli_export_reads_the_weights_file_once(model, tmp_path, monkeypatch, capsys, out) -> None:
    # A training checkpoint (optimizer state included) can be hundreds of MB: one read gives model and config.
    import bisenet.checkpoint
    from bisenet.config import load_config, to_dict

    cfg = load_config({"data": {"dataset": "custom", "num_classes": 4, "class_names": list("abcd")}})
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": 4, "config": to_dict(cfg)}, ckpt)
    reads = []
    real = bisenet.checkpoint.read_weights

    def counting(path, *args, **kwargs):
        reads.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bisenet.checkpoint, "read_weights", counting)
    assert main(["export", "--weights", str(ckpt), "--out", str(tmp_path / out), "--height", "64", "--width", "64"]) == 0
    assert reads.count(ckpt) == 1
    monkeypatch.undo()
    if out.endswith(".onnx"):  # the config came along from that one read
        assert "bisenet.class_names" in {p.key for p in onnx.load(str(tmp_path / out)).metadata_props}
    else:
        assert bisenet.Segmenter.from_checkpoint(tmp_path / out).class_names == list("abcd")


def _metadata(path: Path) -> dict:
    import json

    return {p.key.removeprefix("bisenet."): json.loads(p.value) for p in onnx.load(str(path)).metadata_props
            if p.key in ("bisenet.mean", "bisenet.std", "bisenet.class_names", "bisenet.palette")}


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} (the shipped CamVid weights) is absent")
def test_export_of_weights_without_a_config_carries_what_predict_uses(tmp_path, capsys) -> None:
    # The shipped weights store no config: predict takes the CamVid preset, and the exports used to carry nothing.
    graph, st = tmp_path / "m.onnx", tmp_path / "w.safetensors"
    assert main(["export", "--weights", str(SHIPPED), "--out", str(graph), "--height", "32", "--width", "32",
                 "--dynamic", "--no-simplify"]) == 0
    printed = capsys.readouterr().out
    assert "metadata: class names, palette and mean/std from the camvid preset (11 classes)" in printed
    assert "simplified: no (--no-simplify)" in printed  # the user's choice, not a missing onnxslim
    assert "check 1x32x32" in printed and "check 2x64x64" in printed  # the dynamic check at another H and W
    with pytest.warns(bisenet.predict.EvalScaleWarning, match="scores at eval.scale 2"):  # the preset's scale
        predicted = bisenet.Segmenter.from_checkpoint(SHIPPED)
    assert _metadata(graph) == {"mean": predicted.info.mean, "std": predicted.info.std,
                                "class_names": predicted.class_names, "palette": predicted.palette}
    assert main(["export", "--weights", str(SHIPPED), "--out", str(st), "--height", "32", "--width", "32"]) == 0
    # A .safetensors keeps no guessed config: eval would take it as the run's (scale 1, default lists).
    assert "metadata: none stored (predict finds the camvid preset" in capsys.readouterr().out
    with pytest.warns(bisenet.predict.EvalScaleWarning, match="scores at eval.scale 2"):
        reloaded = bisenet.Segmenter.from_checkpoint(st)
    assert "camvid preset" in reloaded.info.source
    assert reloaded.class_names == predicted.class_names and reloaded.palette == predicted.palette
    assert reloaded.info.mean == predicted.info.mean and reloaded.info.std == predicted.info.std


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"{SHIPPED} (the shipped CamVid weights) is absent")
def test_export_config_flag_sets_the_metadata_and_refuses_another_arch(tmp_path, capsys) -> None:
    names = [f"c{i}" for i in range(11)]
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  arch: bisenetv2\ndata:\n  dataset: custom\n  num_classes: 11\n"
                      f"  class_names: [{', '.join(names)}]\n  mean: [0.5, 0.5, 0.5]\n  std: [0.25, 0.25, 0.25]\n")
    graph = tmp_path / "m.onnx"
    base = ["export", "--weights", str(SHIPPED), "--height", "32", "--width", "32", "--no-simplify", "--no-check"]
    assert main(base + ["--out", str(graph), "--config", str(config)]) == 0
    assert "metadata: class names, palette and mean/std from the config" in capsys.readouterr().out
    meta = _metadata(graph)
    assert meta["class_names"] == names and meta["mean"] == [0.5] * 3 and meta["std"] == [0.25] * 3
    for other, expected in [(REPO / "configs" / "bisenetv1_camvid.yaml", "the weights are a bisenetv2 model but the "
                             "config's model.arch is bisenetv1"),
                            (REPO / "configs" / "bisenetv2_dubai.yaml", "has 5 classes but")]:
        assert main(base + ["--out", str(tmp_path / "other.onnx"), "--config", str(other)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "mine.yaml"]
    # The config's eval.scale travels too: CamVid is scored at 2 (68.1 mIoU against 62.8 at 1).
    assert main(base + ["--out", str(graph), "--config", str(REPO / "configs" / "bisenetv2_camvid.yaml")]) == 0
    assert {p.key: p.value for p in onnx.load(str(graph)).metadata_props}["bisenet.scale"] == "2.0"
    capsys.readouterr()
    source = tmp_path / "w.safetensors"  # a copy: a regression must not overwrite the shipped file
    source.write_bytes(SHIPPED.read_bytes())
    assert main(["export", "--weights", str(source), "--out", str(source)]) == 2  # never overwrite the source
    assert "is the --weights file; write the export to another name" in capsys.readouterr().err


def test_export_config_refuses_another_class_count_as_eval_predict_and_bench_do() -> None:
    from bisenet.checkpoint import CheckpointError
    from bisenet.deploy.export import export_config

    camvid = REPO / "configs" / "bisenetv2_camvid.yaml"
    with pytest.raises(CheckpointError) as info:  # checkpoint.check_classes: one message for every command
        export_config(bisenet.build_model("bisenetv2", 5), camvid, weights="w.pth")
    assert str(info.value) == f"--config {camvid} has 11 classes but w.pth predicts 5; pass the config the weights were trained with"


def test_the_export_check_scales_its_limit_with_large_logits() -> None:
    # A diverged 4-iteration model had logits near 5e4: fp32 sums differ by 4e-3 there, 7e-8 of the scale.
    from bisenet.deploy.export import check_failure

    assert check_failure({"agreement": 1.0, "max_abs_diff": 3.9e-3, "max_abs_logit": 53881.0}) is None
    assert "over 1.0e-03" in check_failure({"agreement": 1.0, "max_abs_diff": 3.9e-3, "max_abs_logit": 40.0})
    assert "over 1.0e-03" in check_failure({"agreement": 1.0, "max_abs_diff": 3.9e-3})
