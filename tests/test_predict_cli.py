"""`bisenet predict` on images, folders and a video made here: outputs, reruns, flags and int8 calibration
(`Segmenter` and `colorize` on arrays are in test_predict.py)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import bisenet
from bisenet.cli import main
from bisenet.config import load_config
from bisenet.data.catalog import DUBAI
from bisenet.errors import BisenetError
from bisenet.predict import Segmenter, colorize

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three example photos at odd sizes in a folder (two share a size)."""
    folder = tmp_path_factory.mktemp("photos")
    images = sorted((EXAMPLE / "val" / "images").iterdir())[:3]
    for image, (h, w) in zip(images, [(37, 53), (37, 53), (61, 43)]):
        cv2.imwrite(str(folder / f"{image.stem}.jpg"), cv2.resize(cv2.imread(str(image)), (w, h)))
    return folder


def test_cli_writes_three_images_per_input_and_skips_bad_ones(weights, photos, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    single = min(photos.iterdir())
    out = tmp_path / "out"
    code = main(["predict", "--weights", str(weights), str(photos), str(single), str(broken), str(tmp_path / "nope.jpg"),
                 "--out", str(out), "--overlay", "0.4", "--device", "cpu", "--batch-size", "2", "--quiet"])
    assert code == 1  # some inputs skipped: scripts must see it; the good ones are written all the same
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "nope.jpg" in captured.err
    assert "skipped 2" in captured.out and "dubai preset" in captured.out
    assert captured.out.splitlines()[-1] == "2 of 5 skipped (images, videos or missing paths)"
    assert captured.out.splitlines()[0].endswith("on cpu, eager backend")  # the start line names the backend
    for photo in sorted(photos.iterdir()):
        h, w = cv2.imread(str(photo)).shape[:2]
        for suffix in ("color", "overlay", "label"):
            written = cv2.imread(str(out / f"{photo.stem}_{suffix}.png"), cv2.IMREAD_UNCHANGED)
            assert written is not None and written.shape[:2] == (h, w), (photo, suffix)
        assert cv2.imread(str(out / f"{photo.stem}_label.png"), cv2.IMREAD_UNCHANGED).max() < 5
    # The same photo given twice (in the folder and by name) is segmented once, said in a note.
    assert not (out / f"{single.stem}_2_label.png").exists()
    assert f"{single} given twice (also in {photos}/): segmented once" in captured.err.splitlines()
    # The colour mask is the palette applied to the label.
    label = cv2.imread(str(out / f"{single.stem}_label.png"), cv2.IMREAD_UNCHANGED)
    colour = cv2.imread(str(out / f"{single.stem}_color.png"))[:, :, ::-1]
    assert np.array_equal(colour, colorize(label, DUBAI.palette))


def test_cli_turns_a_video_into_an_overlay_mp4(weights, tmp_path, capsys) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for image in sorted((EXAMPLE / "val" / "images").iterdir())[:6]:
        writer.write(cv2.resize(cv2.imread(str(image)), (64, 48)))
    writer.release()
    bad_video = tmp_path / "bad.avi"
    bad_video.write_bytes(b"not a video")
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(video), str(bad_video), "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 1  # the bad one skipped, the good one written
    captured = capsys.readouterr()
    assert "bad.avi" in captured.err and captured.out.splitlines()[-1] == "1 of 2 skipped (images, videos or missing paths)"
    result = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = 0
    while True:
        ok, frame = result.read()
        if not ok:
            break
        assert frame.shape == (48, 64, 3)
        frames += 1
    result.release()
    assert frames == 6


def test_nothing_readable_is_a_failure(weights, tmp_path, capsys) -> None:
    assert main(["predict", "--weights", str(weights), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--quiet"]) == 1
    assert "missing.png: not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no empty output folder left behind


def test_out_under_a_file_is_a_one_line_error(weights, photos, tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["predict", "--weights", str(weights), str(photos), "--out", str(blocker / "o"),
                 "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bisenet predict: error: --out: cannot create folder") and "Traceback" not in "".join(err)


def test_same_stems_and_their_suffixed_names_never_overwrite(weights, tmp_path, capsys) -> None:
    # dup2/x.png would become x_2, the very name of the real input dup3/x_2.png.
    source = sorted((EXAMPLE / "val" / "images").iterdir())[0]
    inputs = []
    for folder, name, (h, w) in [("dup1", "x", (32, 40)), ("dup2", "x", (36, 44)), ("dup3", "x_2", (40, 48))]:
        (tmp_path / folder).mkdir()
        inputs.append(tmp_path / folder / f"{name}.png")
        cv2.imwrite(str(inputs[-1]), cv2.resize(cv2.imread(str(source)), (w, h)))
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), *map(str, inputs), "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    assert "wrote 3 image(s)" in capsys.readouterr().out
    assert len(list(out.iterdir())) == 9
    # A real input keeps its own stem; the second x takes the next free one. Sizes tell whose output is whose.
    for path, stem in zip(inputs, ["x", "x_3", "x_2"]):
        label = cv2.imread(str(out / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == cv2.imread(str(path)).shape[:2], (path, stem)


def test_out_inside_an_input_folder_is_left_out_of_the_search(weights, photos, tmp_path, capsys) -> None:
    folder = tmp_path / "all" / "shots"
    folder.mkdir(parents=True)
    for photo in photos.iterdir():
        (folder / photo.name).write_bytes(photo.read_bytes())
    expected = sorted(f"{p.stem}_{s}.png" for p in photos.iterdir() for s in ("color", "overlay", "label"))
    out = folder / "preds"
    args = ["predict", "--weights", str(weights), str(folder), "--out", str(out), "--device", "cpu", "--quiet"]
    for _ in range(2):  # the second run must not segment the first run's outputs
        assert main(args) == 0
        assert "wrote 3 image(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == expected
    # --out the input folder itself (spelled differently): nothing to read outside it, said in one line.
    same = folder / ".." / "shots"
    assert main(["predict", "--weights", str(weights), str(out), "--out", str(same / "preds"), "--device", "cpu",
                 "--quiet"]) == 1
    assert "inside the output folder" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == expected
    # An input folder inside --out is still searched, but its files are all earlier outputs: said in one line.
    assert main(["predict", "--weights", str(weights), str(out), "--out", str(same), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"skipped {out}: its 9 image(s) and video(s) are outputs of an earlier predict run; "
                   "name one as an INPUT to segment it anyway"]
    # Named one by one, they are segmented.
    assert main(["predict", "--weights", str(weights), *map(str, sorted(out.iterdir())), "--out", str(same),
                 "--device", "cpu", "--quiet"]) == 0
    assert "wrote 9 image(s)" in capsys.readouterr().out


@pytest.mark.parametrize("size", [0, -3])
def test_batch_size_below_one_is_a_one_line_error(weights, photos, tmp_path, capsys, size) -> None:
    out = tmp_path / "o"
    assert main(["predict", "--weights", str(weights), str(photos), "--out", str(out), "--device", "cpu",
                 "--batch-size", str(size), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--batch-size {size}" in err[0] and "at least 1" in err[0]
    assert not out.exists()
    with pytest.raises(BisenetError, match=f"--batch-size {size}: must be"):
        Segmenter.from_checkpoint(weights, batch_size=size)


def test_config_of_another_arch_is_refused_as_by_eval(weights, photos, tmp_path, capsys) -> None:
    # The config says what the weights are (names, palette, mean/std): another arch's config is the wrong one.
    v1 = tmp_path / "v1.pth"
    torch.save(bisenet.build_model("bisenetv1", 5).state_dict(), v1)
    v1_config = tmp_path / "v1_dubai.yaml"
    v1_config.write_text(CONFIG.read_text().replace("arch: bisenetv2", "arch: bisenetv1"))
    for config, path, found, asked in [(CONFIG, v1, "bisenetv1", "bisenetv2"), (v1_config, weights, "bisenetv2", "bisenetv1")]:
        with pytest.raises(BisenetError, match=f"the weights are a {found} model but the config's model.arch is {asked}"):
            Segmenter.from_checkpoint(path, config=load_config(config))
        out = tmp_path / f"out_{found}"
        assert main(["predict", "--weights", str(path), "--config", str(config), str(photos), "--out", str(out),
                     "--device", "cpu", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"bisenet predict: error: {path}: the weights are a {found} model but the config's model.arch "
                       f"is {asked}; pass the config they were trained with (model.arch: {found}) or {asked} weights"]
        assert not out.exists()
    # The matching pair still runs.
    assert Segmenter.from_checkpoint(v1, config=v1_config).info.source == "the config"


def _photo(path: Path, h: int, w: int, index: int = 0) -> Path:
    """An example photo resized to h x w (sizes tell whose outputs are whose)."""
    source = sorted((EXAMPLE / "val" / "images").iterdir())[index]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.resize(cv2.imread(str(source)), (w, h)))
    return path


def test_a_rerun_beside_earlier_outputs_leaves_them_out_in_one_line(weights, photos, tmp_path, capsys) -> None:
    folder = tmp_path / "imgs2"
    for photo in photos.iterdir():
        _photo(folder / photo.name, 37, 53)
    _photo(folder / "street_label.png", 40, 40)  # merely named like an output: no _color/_overlay beside it
    (folder / "clip_overlay.mp4").write_bytes(b"an earlier run's video")
    args = ["predict", "--weights", str(weights), str(folder), "--device", "cpu", "--quiet", "--out"]
    assert main([*args, str(folder / "out")]) == 0
    capsys.readouterr()
    assert main([*args, str(folder / "out2")]) == 0
    captured = capsys.readouterr()
    assert "wrote 4 image(s)" in captured.out and "skipped" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"skipped 13 file(s) in {folder}: outputs of an earlier predict run (<stem>_label.png/_color.png/_overlay.png "
        "side by side, <stem>_overlay.mp4); name one as an INPUT to segment it anyway"]
    assert sorted(p.name for p in (folder / "out2").iterdir()) == sorted(p.name for p in (folder / "out").iterdir())


def test_input_subfolders_are_mirrored_and_a_numbered_name_is_printed(weights, tmp_path, capsys) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    sizes = {"a/x.png": (32, 40), "b/x.png": (36, 44), "x.jpg": (40, 48), "x.png": (44, 52)}
    for name, (h, w) in sizes.items():
        _photo(folder / name, h, w)
    assert main(["predict", "--weights", str(weights), str(folder), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # Only the clash in one folder is numbered, and the line says whose outputs are whose.
    assert lines[1:-1] == [f"{folder / 'x.png'}: written as {out / 'x_2'}_* ({out / 'x'}_* are from {folder / 'x.jpg'})"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(f"{stem}_{s}.png" for stem in ("a/x", "b/x", "x", "x_2") for s in ("color", "overlay", "label"))
    for name, stem in [("a/x.png", "a/x"), ("b/x.png", "b/x"), ("x.jpg", "x"), ("x.png", "x_2")]:
        assert cv2.imread(str(out / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED).shape == sizes[name], name


def test_no_output_folder_is_left_when_every_input_is_skipped(weights, tmp_path, capsys) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jpg").write_bytes(b"")
    args = ["predict", "--weights", str(weights), str(folder), "--device", "cpu", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "new" / "deeper" / "out")]) == 1
    assert "skipped 2" in capsys.readouterr().out
    assert not (tmp_path / "new").exists()  # nor its parents made for it
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main([*args, str(existing)]) == 1 and existing.is_dir()  # a folder the user had stays


def test_calibration_skips_unreadable_images_with_one_note(tmp_path) -> None:
    from bisenet.deploy.images import read_folder

    folder = tmp_path / "calib"
    for i in range(3):
        _photo(folder / f"{i}.jpg", 40, 70, i)
    (folder / "1b.jpg").write_bytes(b"not an image")
    notes: list[str] = []
    images = read_folder(folder, None, limit=3, log=notes.append)
    assert len(images) == 3 and images[0].shape == (3, 32, 64)  # `limit` counts readable images
    assert notes == [f"note: skipped 1 unreadable image file(s) in {folder}: image {folder / '1b.jpg'} "
                     "is not a readable image (corrupt or unsupported format)"]
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(BisenetError, match=f"{folder}: none of its 4 image file\\(s\\) can be read"):
        read_folder(folder, (32, 32))
    with pytest.raises(BisenetError, match=f"{folder / '0.jpg'} is a file, not a folder"):
        read_folder(folder / "0.jpg", (32, 32))


def test_int8_predict_calibrates_around_a_corrupt_image(weights, photos, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "shots"
    for photo in photos.iterdir():
        _photo(folder / photo.name, 37, 53)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["predict", "--weights", str(weights), str(folder), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--backend", "int8", "--quiet"]) == 1  # the corrupt image skipped
    captured = capsys.readouterr()
    assert "int8" in captured.out.splitlines()[0] and "wrote 3 image(s)" in captured.out and "skipped 1" in captured.out
    assert f"note: skipped 1 unreadable image file(s) in the calibration images: image {folder / 'corrupt.jpg'}" in captured.err
    # Images named one by one calibrate too (the default used to be the first INPUT folder, and there was none).
    files = [str(p) for p in sorted(folder.iterdir()) if p.name != "corrupt.jpg"][:2]
    assert main(["predict", "--weights", str(weights), *files, "--out", str(tmp_path / "o2"), "--device", "cpu",
                 "--backend", "int8", "--quiet"]) == 0
    assert "wrote 2 image(s)" in capsys.readouterr().out


def test_calibration_flag_mistakes_are_said_in_one_line(weights, photos, tmp_path, capsys) -> None:
    photo = min(photos.iterdir())
    out = tmp_path / "o"
    args = ["predict", "--weights", str(weights), str(photos), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main([*args, "--backend", "int8", "--calibration", str(photo)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"bisenet predict: error: --calibration: {photo} is a file, not a folder; pass the folder of .jpg/.png "
        f"images (e.g. {photos})"]
    assert not out.exists()
    assert main([*args, "--calibration", str(photos)]) == 0  # eager: no calibration, said, still runs
    assert capsys.readouterr().err.strip().splitlines() == [
        f"warning: --calibration {photos} is ignored: only the int8 backends (int8, int8_compile, int8_openvino) "
        "calibrate, not --backend eager"]


def test_scale_resizes_inputs_first_and_shows_on_the_start_line(weights, photos, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    args = ["predict", "--weights", str(weights), str(photos), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert "; ss scale 1 on cpu" in capsys.readouterr().out.splitlines()[0]  # scale 1 said too
    assert main([*args, "--scale", "0.5"]) == 0
    assert "; ss scale 0.5 on cpu" in capsys.readouterr().out.splitlines()[0]
    for photo in photos.iterdir():  # outputs keep the input size
        assert cv2.imread(str(out / f"{photo.stem}_label.png")).shape[:2] == cv2.imread(str(photo)).shape[:2]
    assert Segmenter.from_checkpoint(weights, scale=2).protocol.scales == (2.0,)
    for bad, mode, why in [("0", "ss", "must be above 0 and at most 8"), ("-1", "ssc", "must be above 0"), ("1000", "ss", "must be above 0 and at most 8"),
                           ("nan", "ss", "must be above 0"), ("2", "msf", "mode msf runs several scales")]:
        assert main([*args[:5], str(tmp_path / "new"), *args[6:], "--scale", bad, "--mode", mode]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bisenet predict: error: --scale {bad}: {why}"), err
    assert not (tmp_path / "new").exists()


def test_weights_without_config_are_told_the_scale_their_bundled_config_scores_at(photos, tmp_path, capsys) -> None:
    # An 11-class bisenetv2 file without a config: configs/bisenetv2_camvid.yaml (eval.scale 2) is what eval
    # suggests and scores with, but predict ran at scale 1 and its start line did not say so.
    bare = tmp_path / "camvid_like.pth"
    torch.save(bisenet.build_model("bisenetv2", 11).state_dict(), bare)
    args = ["predict", "--weights", str(bare), str(photos), "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "camvid preset (11 classes); ss scale 1 on cpu" in captured.out.splitlines()[0]
    config = REPO / "configs" / "bisenetv2_camvid.yaml"
    named = os.path.relpath(config) if config.is_relative_to(Path.cwd()) else str(config)  # as eval's hint shows it
    assert [line for line in captured.err.splitlines() if line.startswith("note:")] == [
        f"note: {named} scores at eval.scale 2: pass --config {named} (or --scale 2) to predict as it was scored"]
    for given in (["--scale", "2"], ["--config", str(config)]):
        assert main([*args, *given]) == 0  # as scored: nothing to say
        captured = capsys.readouterr()
        assert "note:" not in captured.err and "ss scale 2 on cpu" in captured.out.splitlines()[0]


def test_a_bad_overlay_is_refused_before_the_weights_load(photos, tmp_path, capsys) -> None:
    # It used to be found only once the model had loaded (seconds for large weights).
    assert main(["predict", str(photos), "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out"),
                 "--overlay", "1.5"]) == 2
    assert capsys.readouterr().err == "bisenet predict: error: --overlay 1.5 must lie in [0, 1] (the mask's opacity)\n"


def _video(path: Path, frames: int = 6, fourcc: str = "mp4v") -> Path:
    """A small video of example photos at 64x48."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5.0, (64, 48))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for image in sorted((EXAMPLE / "val" / "images").iterdir())[:frames]:
        writer.write(cv2.resize(cv2.imread(str(image)), (64, 48)))
    writer.release()
    return path


def test_an_output_name_taken_by_a_folder_stops_the_run_before_any_write(weights, tmp_path, capsys) -> None:
    # It used to write a_label.png and a_overlay.png, then fail on a_color.png blaming permissions.
    a, one = _photo(tmp_path / "a.jpg", 32, 40), _photo(tmp_path / "one.png", 32, 40, 1)
    clip = _video(tmp_path / "clip.mp4", frames=2)
    _photo(tmp_path / "sub" / "x" / "y.png", 32, 40)
    args = ["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--out"]
    for inputs, taken, kind in [([a, one], "a_color.png", "a folder"), ([one, clip], "clip_overlay.mp4", "a folder"),
                                ([tmp_path / "sub"], "x", "a file")]:  # x: a mirrored subfolder taken by a file
        out = tmp_path / f"out_{taken}"
        out.mkdir()
        if kind == "a folder":
            (out / taken).mkdir()
        else:
            (out / taken).write_text("")
        assert main([*args, str(out), *map(str, inputs)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        what = "output" if kind == "a folder" else "output folder"
        assert err[-1] == f"bisenet predict: error: {what} {out / taken} is {kind}; remove it or choose another --out"
        assert [p.name for p in out.iterdir()] == [taken]  # nothing else written


def test_a_set_of_outputs_that_fails_midway_is_removed(tmp_path) -> None:
    from bisenet.predict_files import _write_set

    image = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "blocker").write_text("")
    with pytest.raises(BisenetError, match="cannot create folder"):
        _write_set([(tmp_path / "x_label.png", image), (tmp_path / "blocker" / "x_color.png", image)], set())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_truncated_video_is_written_as_far_as_it_decodes_with_a_note(weights, tmp_path, capsys) -> None:
    # It used to be cut short silently: "wrote 1 video(s)", 2 frames out of the 6 its header declares.
    clip = _video(tmp_path / "clip.avi", fourcc="MJPG")  # AVI: the frame count is in the header, up front
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(clip), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 video(s)" in captured.out
    result = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = int(result.get(cv2.CAP_PROP_FRAME_COUNT))
    result.release()
    assert 0 < frames < 6
    assert captured.err.strip().splitlines() == [
        f"{clip}: decoded {frames} of the 6 frames its header declares; the file may be truncated"]


def test_a_file_given_twice_is_segmented_once_with_a_note(weights, tmp_path, capsys) -> None:
    # It used to be segmented twice, as x and x_2 (x_3, x_4 beside a real x_2).
    folder = tmp_path / "dup"
    x = _photo(folder / "x.png", 32, 40)
    _photo(folder / "sub" / "y.png", 36, 44)
    out = tmp_path / "out"
    again = folder / "sub" / ".." / "x.png"
    assert main(["predict", "--weights", str(weights), str(folder), str(x), str(again), str(folder / "sub"), str(folder),
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 image(s)" in captured.out and "written as" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"{x} given twice (also in {folder}/): segmented once",
        f"{again} given twice (also in {folder}/): segmented once",
        f"{folder / 'sub'}: 1 of its file(s) also in {folder}/: segmented once",
        f"{folder} given twice: its files segmented once"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_label.png")) == ["sub/y_label.png", "x_label.png"]


def test_folder_searches_leave_out_hidden_files_as_data_lists_does(weights, tmp_path, capsys) -> None:
    # macOS AppleDouble ._x.jpg files were read as images and each reported as unreadable.
    folder = tmp_path / "shots"
    _photo(folder / "x.jpg", 32, 40)
    apple = folder / "._x.jpg"
    apple.write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    _photo(folder / ".thumbs" / "y.jpg", 16, 20)
    out = tmp_path / "out"
    args = ["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--out"]
    assert main([*args, str(out), str(folder)]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 image(s)" in captured.out and "skipped" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"skipped 2 hidden file(s) in {folder} (name or folder starting with '.'): {apple}, "
        f"{folder / '.thumbs' / 'y.jpg'}; name one as an INPUT to segment it anyway"]
    assert sorted(p.name for p in out.iterdir()) == ["x_color.png", "x_label.png", "x_overlay.png"]
    # Named, a hidden file is read; a folder holding only hidden ones says so.
    assert main([*args, str(tmp_path / "out2"), str(folder / ".thumbs" / "y.jpg"), str(apple)]) == 1  # apple skipped
    captured = capsys.readouterr()
    assert "wrote 1 image(s)" in captured.out and f"skipped image {apple} is not a readable image" in captured.err
    assert main([*args, str(tmp_path / "out3"), str(folder / ".thumbs")]) == 0  # the dot-folder itself, named
    assert "wrote 1 image(s)" in capsys.readouterr().out
    only = tmp_path / "only"
    _photo(only / ".cache" / "z.jpg", 16, 20)
    assert main([*args, str(tmp_path / "out4"), str(only)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"skipped {only}: its only images and videos are hidden (name or folder starting with '.', such as "
        f"{only / '.cache' / 'z.jpg'}); name one as an INPUT to segment it anyway"]


def test_skipped_inputs_exit_1_with_a_summary_after_writing_the_good_ones(weights, photos, tmp_path, capsys) -> None:
    # It exited 0 when some inputs were unreadable: a script could not tell that outputs were missing.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    args = ["predict", "--weights", str(weights), "--device", "cpu", "--quiet", "--out"]
    assert main([*args, str(out), str(photos), str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [f"wrote 3 image(s) x 3 PNGs and 0 video(s) to {out}; skipped 1", "1 of 4 skipped (images, videos or missing paths)"]
    assert len(list(out.glob("*_label.png"))) == 3  # the good ones are still written
    assert main([*args, str(tmp_path / "all_good"), str(photos)]) == 0  # nothing skipped: 0, no summary line
    assert " skipped (" not in capsys.readouterr().out
