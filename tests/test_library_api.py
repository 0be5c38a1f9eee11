"""The library entry points behind `bisenet eval`, `bisenet export` and `bisenet train`, called from Python."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from test_eval_flags import CONFIG, REPO, model, tiny  # noqa: F401  (fixtures; tests/ is on sys.path)

import bisenet
from bisenet.checkpoint import NonFiniteWeightsError
from bisenet.config import load_config, save_config, to_dict
from bisenet.deploy.export import ExportCheckError
from bisenet.engine.train import default_work_dir
from bisenet.errors import BisenetError, ConfigError

SHIPPED = REPO / "weights" / "bisenetv2_camvid.safetensors"  # 11 classes, stores no config


def _cfg(root: Path):
    return load_config(CONFIG, {"data.root": str(root), "data.val_list": "val.txt"})


def _checkpoint(path: Path, model: torch.nn.Module, config: dict | None) -> Path:  # noqa: F811
    ckpt = {"arch": "bisenetv2", "num_classes": 5, "model": model.state_dict()}
    torch.save(ckpt if config is None else {**ckpt, "config": config}, path)
    return path


# --- evaluate(config=None, ...) --------------------------------------------------------

def test_evaluate_without_a_config_reads_the_one_the_checkpoint_stores(tiny, model, tmp_path) -> None:  # noqa: F811
    weights = _checkpoint(tmp_path / "run.pt", model, to_dict(_cfg(tiny)))
    stored = bisenet.evaluate(None, weights, device="cpu", workers=0, progress=False)
    given = bisenet.evaluate(_cfg(tiny), weights, device="cpu", workers=0, progress=False)
    assert stored["images"] == 2 and stored["list"] == str(tiny / "val.txt")
    assert stored["confusion_matrix"] == given["confusion_matrix"] and stored["mIoU"] == given["mIoU"]


def test_evaluate_without_a_config_on_weights_that_store_none_names_a_config(tmp_path) -> None:
    bare = tmp_path / "bare.pth"  # a published state_dict: no config; no bundled config is of bisenetv1, 5 classes
    torch.save(bisenet.build_model("bisenetv1", 5).state_dict(), bare)
    with pytest.raises(BisenetError) as raised:
        bisenet.evaluate(None, bare, device="cpu", progress=False)
    assert str(raised.value) == (f"{bare} stores no config (bisenetv1, 5 classes): pass the YAML config it was "
                                 f"trained with first: bisenet eval CONFIG --weights {bare}")
    if SHIPPED.is_file():  # a bundled config of the same arch and classes is named
        with pytest.raises(BisenetError, match=r"stores no config \(bisenetv2, 11 classes\).*bisenetv2_camvid\.yaml"):
            bisenet.evaluate(None, SHIPPED, device="cpu", progress=False)


def test_evaluate_with_a_stale_stored_config_says_whose_it_is(model, tmp_path) -> None:  # noqa: F811
    stored = to_dict(load_config(CONFIG))
    stored["train"]["ohem_thresh"] = 1.5  # out of range today
    weights = _checkpoint(tmp_path / "old.pt", model, stored)
    with pytest.raises(ConfigError) as raised:
        bisenet.evaluate(None, weights, device="cpu", progress=False)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{weights}: its stored config: ") and "ohem_thresh" in message
    assert message.endswith(f"bisenet eval CONFIG --weights {weights}")


def test_evaluate_without_a_config_refuses_a_module_in_one_line(model) -> None:  # noqa: F811
    with pytest.raises(BisenetError) as raised:
        bisenet.evaluate(None, model, device="cpu", progress=False)
    assert str(raised.value) == ("config=None reads the config stored in a weights file, but weights_or_model is a "
                                 "BiSeNetV2: pass the config it was built for (a Config or YAML path)")


# --- score_predictions(config=...) ------------------------------------------------------

@pytest.fixture()
def scored(tiny, tmp_path):  # noqa: F811
    """(data root, prediction folder, YAML config of both splits): the labels themselves as predictions."""
    data = Path(shutil.copytree(tiny, tmp_path / "ds"))
    (data / "one.txt").write_text("img/t0.png,lab/t0.png\n")
    preds = tmp_path / "preds"
    preds.mkdir()
    for label in (data / "lab").iterdir():
        shutil.copy(label, preds / label.name)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  dataset: dubai\n  root: {data}\n  train_list: one.txt\n  val_list: val.txt\n")
    return data, preds, config


def test_score_predictions_with_a_config_takes_its_root_list_and_classes(scored) -> None:
    data, preds, config = scored
    cfg = load_config(config)
    by_config = bisenet.score_predictions(preds, config=config)
    by_hand = bisenet.score_predictions(preds, data, "val.txt", num_classes=cfg.num_classes,
                                        ignore_index=cfg.data.ignore_index, label_map=cfg.data.label_map,
                                        class_names=cfg.data.class_names)
    assert by_config["images"] == 2 and by_config["confusion_matrix"] == by_hand["confusion_matrix"]
    assert list(by_config["IoU"]) == list(cfg.data.class_names)
    assert bisenet.score_predictions(preds, config=cfg, split="train")["images"] == 1  # a Config, another split
    assert bisenet.score_predictions(preds, data, "one.txt", config=config)["images"] == 1  # list_file wins


def test_score_predictions_with_a_config_refuses_what_it_cannot_use(scored) -> None:
    data, preds, config = scored
    with pytest.raises(BisenetError) as raised:
        bisenet.score_predictions(preds, config=config, split="test")
    assert str(raised.value) == f"--split test: {config} names no data.test_list; pass --list L"
    with pytest.raises(BisenetError, match=r"^config= gives the classes, label map and ignore index: drop "
                                           r"num_classes=, dataset=$"):
        bisenet.score_predictions(preds, config=config, num_classes=5, dataset="dubai")
    with pytest.raises(BisenetError, match=r"^score_predictions needs root= and list_file= \(or config="):
        bisenet.score_predictions(preds, data)


def test_score_predictions_reads_a_list_written_from_the_cwd_as_that_file(scored, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    data, preds, _ = scored
    here = tmp_path / "here"
    here.mkdir()
    (here / "val.txt").write_text("img/t0.png,lab/t0.png\n")  # one pair; the data root's val.txt has two
    monkeypatch.chdir(here)
    assert bisenet.score_predictions(preds, data, "./val.txt", dataset="dubai")["images"] == 1
    assert capsys.readouterr().err == ""
    assert bisenet.score_predictions(preds, data, "val.txt", dataset="dubai")["images"] == 2
    assert "note: --list val.txt names both" in capsys.readouterr().err


# --- export_model ------------------------------------------------------------------------

def test_export_model_writes_onnx_and_safetensors_and_says_whence(weights, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    report = bisenet.export_model(weights, out, 64, 64)
    assert out.is_file() and report["path"] == str(out) and report["replacing"] is False
    assert report["whence"].startswith("metadata: ") and report["output"] == "logits"
    assert report["checks"][0]["size"] == "1x64x64" and report["checks"][0]["agreement"] >= 0.99
    again = bisenet.export_model(weights, out, 64, 64, argmax=True, check=False, simplify=False)
    assert again["replacing"] is True and again["output"] == "labels" and "checks" not in again
    loaded = bisenet.export_model(weights, tmp_path / "m.safetensors", 64, 64)
    assert loaded["arch"] == "bisenetv2" and bisenet.load_model(tmp_path / "m.safetensors").num_classes == 5


@pytest.mark.parametrize(("out", "options", "message"), [
    ("m.pt", {}, ("export writes an ONNX graph (.onnx) or eval-only weights (.safetensors); name it m.onnx or "
                  "m.safetensors")),
    ("m.safetensors", {"dynamic": True}, "--dynamic and --argmax shape an ONNX graph"),
    ("m.onnx", {"opset": 12}, "opset 12 is not supported"),
    ("m.onnx", {"height": 60}, "--height/--width"),
    ("m.onnx", {"num_classes": 0}, "--num-classes 0: must be at least 1"),
])
def test_export_model_refuses_bad_arguments_before_reading_the_weights(tmp_path, out, options, message) -> None:
    missing = tmp_path / "no_such_weights.pt"  # never read: each refusal comes first
    with pytest.raises(BisenetError) as raised:
        bisenet.export_model(missing, tmp_path / out, **options)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / out).exists()


def test_export_model_refuses_its_own_weights_as_out_and_a_module(weights, model, tmp_path) -> None:  # noqa: F811
    own = tmp_path / "w.safetensors"
    bisenet.export_model(weights, own, 64, 64)
    before = own.read_bytes()
    with pytest.raises(BisenetError, match="is the --weights file; write the export to another name"):
        bisenet.export_model(own, own, 64, 64)
    assert own.read_bytes() == before
    with pytest.raises(BisenetError, match="expected file paths"):
        bisenet.export_model(model, "m.onnx")


def test_export_model_raises_for_non_finite_weights_and_failed_checks(tmp_path) -> None:
    net = bisenet.build_model("bisenetv2", 5).eval()
    state = net.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    nan = {**state, key: torch.full_like(state[key], float("nan"))}
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteWeightsError):
        bisenet.export_model(tmp_path / "nan.pt", tmp_path / "nan.onnx", 64, 64)
    assert not (tmp_path / "nan.onnx").exists()
    # Finite in fp32, infinite in fp16 (max 65504): the reloaded weights' check fails, nothing is written.
    big = {**state, key: state[key] * 0 + 1e6}
    torch.save(big, tmp_path / "big.pt")
    with pytest.raises(ExportCheckError) as raised:
        bisenet.export_model(tmp_path / "big.pt", tmp_path / "big.safetensors", 64, 64, fp16=True)
    assert raised.value.report["whence"].startswith("metadata: ") and raised.value.report["checks"]
    assert not (tmp_path / "big.safetensors").exists()


# --- train's default work dir -------------------------------------------------------------

def test_train_defaults_its_work_dir_to_runs_config_name(tmp_path, monkeypatch) -> None:
    assert default_work_dir("configs/bisenetv2_dubai.yaml") == Path("runs") / "bisenetv2_dubai"
    cfg = load_config(CONFIG, [f"data.root={REPO / 'examples' / 'dubai'}", "augment.crop_size=[64, 64]",
                               "train.batch_size=2", "train.workers=0", "train.max_iters=1", "train.warmup_iters=0",
                               "train.eval_interval=0", "train.amp=none", "train.device=cpu"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^work_dir=None names the run's folder after the config's YAML file; "
                                          r"with a Config pass work_dir="):
        bisenet.train(cfg)
    assert not (tmp_path / "runs").exists()
    save_config(cfg, tmp_path / "tiny_run.yaml")
    result = bisenet.train("tiny_run.yaml")
    assert result.work_dir == Path("runs") / "tiny_run" and (tmp_path / "runs" / "tiny_run" / "last.pt").is_file()


def test_build_dataset_is_at_the_top_level_and_reads_a_split_as_training_does() -> None:
    # The README pointed at bisenet.SegmentationDataset, which raised AttributeError.
    root = Path(__file__).resolve().parents[1]
    dataset = bisenet.build_dataset(root / "configs" / "bisenetv2_dubai.yaml", "val", data_root=root / "examples" / "dubai")
    assert isinstance(dataset, bisenet.SegmentationDataset) and len(dataset) == 12
    image, label = dataset[0][:2]
    assert image.shape[0] == 3 and image.shape[1:] == label.shape


def test_evaluate_int8_with_callers_calibration_folder_takes_the_configs_mean_and_std(tiny, model) -> None:  # noqa: F811
    # backend_options={"calibration": folder} was refused for want of mean=/std=, which the config holds.
    from bisenet.data.catalog import IMAGENET_MEAN, IMAGENET_STD

    cfg = load_config(CONFIG, {"data.root": str(tiny), "data.val_list": "val.txt"})

    def confusion(**normalisation) -> list:
        options = {"calibration": tiny / "img", "limit": 1, **normalisation}
        return bisenet.evaluate(cfg, model, backend="int8", device="cpu", workers=0, progress=False,
                                backend_options=options)["confusion_matrix"]

    taken = confusion()
    assert taken == confusion(mean=cfg.data.mean, std=cfg.data.std)  # the config's, calibrated the same
    assert taken != confusion(mean=IMAGENET_MEAN, std=IMAGENET_STD)  # (which would give other int8 ranges)


def test_run_benchmark_normalises_calibration_images_as_the_weights_were_trained() -> None:
    # Without mean/std, images and calibration were normalised with ImageNet's: the CamVid model's are others.
    from bisenet.deploy.bench import image_normalisation, run_benchmark

    shipped = REPO / "weights" / "bisenetv2_camvid.safetensors"
    if not shipped.is_file():
        pytest.skip(f"{shipped} (the shipped CamVid weights) is absent")
    mean, _ = image_normalisation(weights=shipped)
    assert mean != [0.485, 0.456, 0.406]
    from bisenet.data.catalog import IMAGENET_MEAN, IMAGENET_STD

    def agreement(**normalisation) -> float:
        rows = run_benchmark(weights=shipped, images=REPO / "examples" / "dubai" / "val" / "images", size=(64, 64),
                             backends=["eager", "int8"], iters=1, warmup=0, max_images=2, log=said.append,
                             **normalisation)
        return rows[1]["agreement"]

    said: list[str] = []
    taken = agreement()
    assert f"images normalised with mean {mean}" in "\n".join(said)
    _, std = image_normalisation(weights=shipped)
    assert taken == agreement(mean=mean, std=std)  # the weights' normalisation, in images and calibration alike
    assert taken != agreement(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bisenet.score_predictions(5, config=CONFIG), "pred_dir=5: expected the folder of saved predictions"),
    (lambda: bisenet.build_dataset(CONFIG, "val", data_root=5), "data_root=5: expected a path"),
    (lambda: bisenet.build_dataset(CONFIG, "val", list_file=["a"]), "list_file=['a']: expected a path"),
])
def test_paths_of_the_wrong_kind_are_one_line_errors_not_type_errors(call, message) -> None:
    with pytest.raises(BisenetError, match=re.escape(message)):
        call()
