"""`bisenet bench`: JSON rows for inference and training, errors as one line with exit 2."""

from __future__ import annotations

import json
import mmap
import platform
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bisenet.cli import main
from bisenet.deploy.bench import add_alone, format_table, peak_rss_mb, reset_peak_rss, run_alone, run_benchmark
from bisenet.runtime import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
VAL_IMAGES = REPO / "examples" / "dubai" / "val" / "images"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"


def test_infer_json_has_one_row_per_backend(weights, tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    code = main(["bench", "--size", "64x64", "--backend", "eager", "fold_bn", "--warmup", "1", "--iters", "3",
                 "--weights", str(weights), "--images", str(VAL_IMAGES), "--config", str(CONFIG),
                 "--max-images", "2", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["eager", "fold_bn"]
    for row in rows:
        assert row["mode"] == "infer" and row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"]
        assert 0.0 <= row["agreement"] <= 1.0
        assert row["peak_rss_mb"] > 0 and row["gflops"] > 0 and row["fps"] > 0
    assert rows[0]["agreement"] == 1.0 and rows[0]["time_vs_eager"] == 1.0
    printed = capsys.readouterr().out
    assert "| eager |" in printed and "agreement" in printed


def test_keep_memory_is_recorded_per_row(tmp_path) -> None:
    # A fresh process: keeping freed memory is process-wide.
    out = tmp_path / "rows.json"
    subprocess.run([sys.executable, "-m", "bisenet", "bench", "--size", "64x64", "--backend", "eager", "--num-classes", "3",
                    "--warmup", "0", "--iters", "1", "--keep-memory", "--json", str(out)], check=True, capture_output=True)
    (row,) = json.loads(out.read_text())
    assert row["keep_memory"] is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_train_json_times_each_precision(tmp_path, capsys) -> None:
    out = tmp_path / "train.json"
    code = main(["bench", "--mode", "train", "--num-classes", "3", "--size", "64x64", "--batch-size", "2",
                 "--backend", "fp32", "bf16", "--warmup", "0", "--iters", "1", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["fp32", "bf16"]
    assert all(r["mode"] == "train" and r["median_ms"] > 0 and "agreement" not in r for r in rows)
    assert rows[1]["time_vs_fp32"] > 0
    # bf16 asked for by name still runs; where it is emulated (several times fp32's time) a warning says so.
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: bf16 training")]
    assert len(warned) == (0 if cpu_has_native_bf16() else 1), warned


def test_train_mode_defaults_to_a_valid_batch(tmp_path, capsys) -> None:
    # The infer default (batch 1) used to apply to train too, whose step needs 2 images: the user never passed it.
    out = tmp_path / "train.json"
    assert main(["bench", "--mode", "train", "--size", "64x64", "--num-classes", "3", "--backend", "fp32",
                 "--warmup", "0", "--iters", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["batch_size"] == 4 and row["size"] == "64x64"  # the training bench: batch 4 (at 512x512)
    from bisenet.deploy.bench import MODE_DEFAULTS

    assert MODE_DEFAULTS == {"infer": ((512, 1024), 1), "train": ((512, 512), 4)}


def test_train_defaults_leave_out_bf16_on_a_cpu_without_native_bf16(capsys) -> None:
    rows = run_benchmark(mode="train", num_classes=3, size=(64, 64), batch_size=2, warmup=0, iters=1)
    assert [r["backend"] for r in rows] == ["fp32_plain", "fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    assert "warning" not in capsys.readouterr().err  # nothing slow was asked for


def test_json_path_that_is_a_folder_fails_before_any_work(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager", "--num-classes", "3",
                 "--json", str(folder)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"bisenet bench: error: --json {folder} is a folder; pass a file path such as " \
                           f"{folder / 'bench.json'}\n"
    assert "| eager |" not in captured.out and "building" not in captured.err  # refused before the benchmark
    out = tmp_path / "rows.json"
    assert main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager", "--num-classes", "3",
                 "--json", str(out)]) == 0
    assert [row["backend"] for row in json.loads(out.read_text())] == ["eager"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "rows.json"]  # no temporary file left behind


@pytest.mark.parametrize("argv, expected", [
    (["--backend", "tensorrt"], "valid: eager, amp, fold_bn, compile, compile_graphs, onnxruntime, int8, int8_compile"),
    (["--mode", "train", "--backend", "fp16", "--batch-size", "2"], "fp16 training needs --device cuda"),
    (["--mode", "train", "--backend", "fp32", "--batch-size", "1"], "--batch-size 1: a training step needs at least 2 images"),
    (["--size", "100x64"], "use 128x64"),
    (["--weights", "no/such/file.pth"], "no/such/file.pth: weights file not found"),
    (["--images", "no/such/folder"], "image folder not found"),
    (["--device", "gpu"], "device 'gpu': not a device name; pass"),
    (["--json", "/dev/null/rows.json"], "--json /dev/null/rows.json: cannot create its folder: /dev/null is a file"),
    (["--max-images", "-1"], "--max-images -1: pass a count of images per folder, or 0 for all of them"),
    (["--backend", "eager", "compile_graphs"], "the compile_graphs backend replays CUDA graphs and needs --device cuda"),
])
def test_user_errors_are_one_line_with_exit_2(argv, expected, capsys) -> None:
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and expected in err, err
    assert "building" not in err  # every backend is checked before the first one is built


def test_peak_rss_reset_and_table() -> None:
    reset_peak_rss()
    before = peak_rss_mb()
    # 256 MiB of fresh pages, every one written: an anonymous mmap, not malloc, which may reuse
    # memory that earlier tests freed (train/eval keep freed memory in the process on the CPU).
    block = mmap.mmap(-1, 256 * 2**20)
    block.write(b"\1" * len(block))
    assert peak_rss_mb() >= before + 200
    block.close()
    rows = [{"backend": "eager", "mode": "infer", "device": "cpu", "size": "64x64", "batch_size": 1, "threads": 2,
             "median_ms": 10.0, "gflops": 1.0, "time_vs_eager": 1.0}]
    table = format_table(rows)
    assert table.splitlines()[0].startswith("| backend | median ms") and "| eager | 10.0 |" in table


def test_alone_runs_add_their_own_timing_and_ratio() -> None:
    rows = run_benchmark(num_classes=3, size=(64, 64), backends=["eager", "fold_bn", "amp"], warmup=0, iters=2)
    messages: list[str] = []

    def argv_for(name: str) -> list[str]:
        size = "100x64" if name == "amp" else "64x64"  # amp's alone run fails: its row keeps no alone columns
        return ["--size", size, "--backend", name, "--num-classes", "3", "--iters", "2", "--warmup", "0"]

    add_alone(rows, argv_for, passes=1, log=messages.append)
    eager, fold_bn, amp = rows
    assert eager["alone_time_vs_eager"] == 1.0 and eager["alone_median_ms"] > 0 and eager["alone_peak_rss_mb"] > 0
    assert fold_bn["alone_time_vs_eager"] == round(fold_bn["alone_median_ms"] / eager["alone_median_ms"], 3)
    assert "alone_median_ms" not in amp
    assert any("alone run failed" in m and "use 128x64" in m for m in messages), messages
    header = format_table(rows).splitlines()[0]
    assert "| alone ms | alone / eager |" in header and "peak RSS alone MB" in header


def test_pack_camvid_writes_jpeg_images_lossless_labels_and_matching_lists(tmp_path) -> None:
    src, out = REPO / "examples" / "dubai", tmp_path / "packed"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "pack_camvid.py"), "--src", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "MiB" in proc.stdout
    for split in ("train", "val"):
        source = (src / f"{split}.txt").read_text().split()
        packed = (out / f"{split}.txt").read_text().split()
        assert len(packed) == len(source)
        for before, after in zip(source, packed):
            image, label = after.split(",")
            assert image.endswith(".jpg") and label == before.split(",")[1]
            assert np.array_equal(cv2.imread(str(out / label), cv2.IMREAD_UNCHANGED),
                                  cv2.imread(str(src / label), cv2.IMREAD_UNCHANGED))
            original = cv2.imread(str(src / before.split(",")[0])).astype(np.int16)
            assert np.abs(cv2.imread(str(out / image)).astype(np.int16) - original).mean() < 4


def test_pack_camvid_names_a_missing_source(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "pack_camvid.py"), "--src", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "train.txt: not found" in proc.stderr


def test_weights_of_another_arch_than_the_config_are_refused(weights, tmp_path, capsys) -> None:
    # --config gives the images' mean/std: another arch's config belongs to other weights, as eval and predict say.
    v1_config = tmp_path / "v1_dubai.yaml"
    v1_config.write_text(CONFIG.read_text().replace("arch: bisenetv2", "arch: bisenetv1"))
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager",
                 "--weights", str(weights), "--config", str(v1_config)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"{weights}: the weights are a bisenetv2 model but the config's model.arch is bisenetv1" in err
    rows = run_benchmark(size=(64, 64), backends=["eager"], weights=weights, iters=1, warmup=0, config_arch="bisenetv2")
    assert [row["backend"] for row in rows] == ["eager"]


def test_weights_of_another_class_count_than_the_config_are_refused(weights, capsys) -> None:
    # As eval, predict and export refuse it: the config's mean/std belong to another model.
    camvid = REPO / "configs" / "bisenetv2_camvid.yaml"
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager",
                 "--weights", str(weights), "--config", str(camvid)])
    assert code == 2
    assert capsys.readouterr().err == (f"bisenet bench: error: --config {camvid} has 11 classes but {weights} predicts 5; "
                                       "pass the config the weights were trained with\n")


def test_agreement_images_are_normalised_as_predict_normalises_them(weights, tmp_path) -> None:
    # Weights without a stored config used ImageNet statistics here while predict used the
    # dataset preset of their class count, so agreement was measured on other inputs.
    from bisenet.data.catalog import CAMVID, DUBAI
    from bisenet.deploy.bench import image_normalisation

    assert image_normalisation(None, weights) == (list(DUBAI.mean), list(DUBAI.std))  # a bare 5-class state_dict
    assert image_normalisation(None, REPO / "weights" / "bisenetv2_camvid.safetensors") == (list(CAMVID.mean), list(CAMVID.std))
    assert image_normalisation(CONFIG, None) == (list(DUBAI.mean), list(DUBAI.std))
    assert image_normalisation(None, None) == (None, None)


def test_device_auto_is_taken_and_an_unused_calibration_is_warned_about(capsys) -> None:
    # auto was "not a device name" here while train, eval and predict take it; --calibration was ignored silently.
    assert main(["bench", "--size", "64x64", "--num-classes", "3", "--backend", "eager", "--iters", "1", "--warmup", "0",
                 "--device", "auto", "--calibration", str(VAL_IMAGES)]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warned == [(f"warning: --calibration {VAL_IMAGES} is ignored: only the int8 backends (int8, int8_compile, "
                       "int8_openvino) calibrate, not --backend eager")]
    assert ("cuda" if torch.cuda.is_available() else "cpu") in captured.out.splitlines()[-1]


def test_weights_without_images_say_why_there_is_no_agreement(weights, capsys) -> None:
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager",
                 "--weights", str(weights)])
    assert code == 0
    assert "agreement skipped: it needs --images, a folder of images to label with each backend" in capsys.readouterr().err


def test_a_backend_given_twice_is_timed_once_and_counted_once() -> None:
    # "timing 3 backend(s)" was said for `--backend eager eager fold_bn`, which printed two rows.
    said = []
    rows = run_benchmark(num_classes=3, size=(64, 64), backends=["eager", "eager", "fold_bn"], warmup=0, iters=1,
                         log=said.append)
    assert [row["backend"] for row in rows] == ["eager", "fold_bn"]
    assert "eager: given more than once, timed once" in said
    assert any(line.startswith("timing 2 backend(s)") for line in said)


def test_a_failed_alone_run_logs_its_error_line_not_a_list() -> None:
    said = []
    assert run_alone(["--backend", "tensorrt", "--size", "64x64"], log=said.append) is None
    assert len(said) == 1 and said[0].startswith("alone run failed: bisenet bench --backend tensorrt --size 64x64: "
                                                 "bisenet bench: error: unknown backend 'tensorrt'")


def test_json_path_where_no_file_can_be_created_is_refused_before_any_work(capsys) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc, a folder that takes no new files even as root")
    out = Path("/proc/bisenet-test-rows.json")
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager", "--num-classes", "3",
                 "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1
    assert f"--json {out}: cannot write in /proc" in captured.err
    assert "building" not in captured.err and "| eager |" not in captured.out  # not after minutes of timing


@pytest.mark.parametrize("flags, expected", [
    (["--arch", "bisenetv1"], "--arch bisenetv1: {w} holds bisenetv2 weights; drop --arch"),
    (["--num-classes", "19"], "--num-classes 19: {w} predicts 5 classes; drop --num-classes"),
])
def test_arch_or_classes_that_contradict_the_weights_are_refused(weights, capsys, flags, expected) -> None:
    code = main(["bench", "--size", "64x64", "--iters", "1", "--warmup", "0", "--backend", "eager",
                 "--weights", str(weights), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and expected.format(w=weights) in err, err
    assert "building" not in err
    # The same flags agreeing with the file are fine.
    rows = run_benchmark(arch="bisenetv2", num_classes=5, size=(64, 64), backends=["eager"], weights=weights,
                         iters=1, warmup=0)
    assert [row["backend"] for row in rows] == ["eager"]


def test_images_in_train_mode_are_refused_not_ignored(capsys) -> None:
    code = main(["bench", "--mode", "train", "--size", "64x64", "--batch-size", "2", "--iters", "1", "--warmup", "0",
                 "--backend", "fp32", "--num-classes", "3", "--images", str(VAL_IMAGES)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"--images {VAL_IMAGES}: --mode train times random batches" in err and "drop --images" in err


def test_openvino_precision_names_are_checked_with_the_nearest_valid_one() -> None:
    pytest.importorskip("openvino")
    from bisenet.deploy.backends import build_backend
    from bisenet.errors import BisenetError

    model = torch.nn.Conv2d(3, 2, 1)  # never exported: the name is refused first
    with pytest.raises(BisenetError) as info:
        build_backend("openvino", model, "cpu", precision="fp32")
    message = str(info.value)
    assert "\n" not in message and "precision='fp32'" in message and "did you mean 'f32'?" in message
    assert "f32, bf16, f16" in message


def test_bench_infer_script_runs_on_weights_of_another_class_count(tmp_path):
    # It passed its own --arch bisenetv2 --num-classes 19 defaults, which bench now checks against the weights.
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_infer.py"), "--weights",
                           str(REPO / "weights" / "bisenetv2_camvid.safetensors"), "--backends", "eager", "--iters", "1",
                           "--warmup", "0", "--passes", "1", "--size", "64x64", "--max-images", "1",
                           "--json", str(tmp_path / "rows.json")],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert row["backend"] == "eager" and row["agreement"] == 1.0 and "alone_median_ms" in row
