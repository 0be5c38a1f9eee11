"""Outputs that used to overwrite inputs (bench --json, data show/lists --out), and data check naming the right root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_data_lists import run_cli

REPO = Path(__file__).resolve().parents[1]
DUBAI = REPO / "examples" / "dubai"
CONFIG = REPO / "configs" / "bisenetv2_dubai.yaml"
WEIGHTS = REPO / "weights" / "bisenetv2_camvid.safetensors"


@pytest.fixture()
def dubai(tmp_path) -> Path:
    """A copy of the bundled Dubai example (lists train.txt/val.txt relative to it)."""
    return Path(shutil.copytree(DUBAI, tmp_path / "dubai"))


def _unchanged(path: Path, before: bytes) -> bool:
    return path.read_bytes() == before


def test_bench_json_refuses_to_overwrite_weights_config_list_or_image(dubai, tmp_path, capsys):
    weights = Path(shutil.copy(WEIGHTS, tmp_path / "w.safetensors"))
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.read_text().replace("root: examples/dubai", f"root: {dubai}"))
    image = next((dubai / "val" / "images").iterdir())
    for flags, victim, kind in (
            (["--weights", str(weights)], weights, "--weights file"),
            (["--config", str(config)], config, "--config file"),
            (["--config", str(config)], dubai / "train.txt", "config's data.train_list"),
            (["--images", str(dubai / "val" / "images")], image, "--images file"),
            (["--calibration", str(dubai / "val" / "images")], image, "--calibration file")):
        before = victim.read_bytes()
        code, out = run_cli(capsys, "bench", *flags, "--json", str(victim), "--iters", "1", "--warmup", "0")
        assert code == 2 and _unchanged(victim, before), (flags, out)
        assert f"would overwrite the {kind} {victim}; pass a new file, e.g. --json bench.json" in out
        assert len(out.strip().splitlines()) == 1
    # An earlier run's JSON in the --images folder is no image: writing it again is fine.
    images = Path(shutil.copytree(dubai / "val" / "images", tmp_path / "imgs"))
    for _ in range(2):
        code, out = run_cli(capsys, "bench", "--weights", str(weights), "--size", "64x64", "--backend", "eager",
                            "--iters", "1", "--warmup", "0", "--images", str(images), "--max-images", "1",
                            "--json", str(images / "bench.json"))
        assert code == 0, out
    # Files that are not this run's inputs (weights of another run, an ONNX graph, a config) are not replaced either.
    other = Path(shutil.copy(WEIGHTS, tmp_path / "other.safetensors"))
    before = other.read_bytes()
    code, out = run_cli(capsys, "bench", "--weights", str(weights), "--size", "64x64", "--backend", "eager",
                        "--iters", "1", "--warmup", "0", "--json", str(other))
    assert code == 2 and _unchanged(other, before), out
    assert out.strip() == (f"bisenet bench: error: --json {other}: that file exists and is not an earlier bench table "
                           f"(writing would lose it); pass a new file, e.g. --json {tmp_path / 'other_bench.json'}")


def test_data_show_out_refuses_a_label_the_list_or_the_config(dubai, tmp_path, capsys):
    label = dubai / "train" / "labels" / "tile1_image_part_001.png"
    config = Path(shutil.copy(CONFIG, tmp_path / "config.png"))  # a .png name: the only config --out could hit
    for out, cfg, victim, says in ((label, CONFIG, label, f"the label {label} of {dubai / 'train.txt'}"),
                                   (config, config, config, f"the config {config}")):
        before = victim.read_bytes()
        code, text = run_cli(capsys, "data", "show", str(cfg), "--data-root", str(dubai), "--out", str(out))
        assert code == 2 and _unchanged(victim, before), text
        assert f"--out {out} is {says}: the drawing would replace it" in text and "--out samples.png" in text


def test_data_lists_pairs_refuses_a_listed_label_a_config_or_text_but_replaces_a_list(dubai, capsys):
    root = dubai / "train"
    label = root / "labels" / "tile1_image_part_001.png"
    config = Path(shutil.copy(CONFIG, root / "config.yaml"))
    notes = root / "notes.txt"
    notes.write_text("hello world\n")
    base = ["data", "lists", "pairs", str(root), "--images", "images", "--labels", "labels", "--out"]
    for out, victim, says in (("labels/tile1_image_part_001.png", label, f"is the label {label} of this list"),
                              ("config.yaml", config, "is an existing file but not a list file (most lines "),
                              ("notes.txt", notes, "is an existing file but not a list file (most lines ")):
        before = victim.read_bytes()
        code, text = run_cli(capsys, *base, out)
        assert code == 2 and _unchanged(victim, before), text
        assert says in text and "e.g. --out train.txt" in text and len(text.strip().splitlines()) == 1
    # A binary file that is none of the listed ones: refused as binary.
    shutil.copy(label, root / "copy.png")
    code, text = run_cli(capsys, *base, "copy.png")
    assert code == 2 and "not a list file (binary content)" in text
    # A list (with a header line) is still replaced, and says so.
    (root / "old.txt").write_text("image,label\nimages/a.jpg,labels/a.png\n")
    code, text = run_cli(capsys, *base, "old.txt")
    assert code == 0 and "replaced" in text and (root / "old.txt").read_text().count("\n") == 42
    # Lists that need regenerating are still lists: a quoted header and paths, a stray bad line, UTF-16 text.
    listed = "".join(f'"images/{k}.jpg","labels/{k}.png"\n' for k in range(5))
    for name, content in (("quoted.txt", ('"image","label"\n' + listed).encode()),
                          ("stray.txt", (listed + "a,b,c\n").encode()),
                          ("wide.txt", listed.encode("utf-16"))):
        (root / name).write_bytes(content)
        code, text = run_cli(capsys, *base, name)
        assert code == 0 and "replaced" in text, (name, text)


def test_layout_lists_refuse_a_train_txt_that_is_not_a_list(tmp_path, capsys):
    camvid = tmp_path / "camvid"
    for split in ("train", "val"):
        for sub in (split, f"{split}annot"):
            (camvid / sub).mkdir(parents=True)
            shutil.copy(DUBAI / "train" / "labels" / "tile1_image_part_001.png", camvid / sub / "0001.png")
    (camvid / "train.txt").write_text("data:\n  root: here\n")
    code, text = run_cli(capsys, "data", "lists", "camvid", str(camvid))
    assert code == 2 and (camvid / "train.txt").read_text() == "data:\n  root: here\n"
    assert f"list file {camvid / 'train.txt'} is an existing file but not a list file" in text
    assert not (camvid / "val.txt").exists()  # nothing written: no half-updated set of lists


def test_data_check_names_the_root_a_list_is_relative_to(dubai, capsys):
    code, text = run_cli(capsys, "data", "lists", "pairs", str(dubai / "train"), "--images", "images",
                         "--labels", "labels", "--out", "t.txt")
    assert code == 0
    code, text = run_cli(capsys, "data", "check", "--root", str(dubai), "--list", str(dubai / "train" / "t.txt"),
                         "--num-classes", "5")
    lines = text.strip().splitlines()
    assert code == 1 and len(lines) == 2, text
    assert lines[0].startswith(f"{dubai / 'train' / 't.txt'}: none of the files of its 42 pairs are under --root {dubai} ")
    assert lines[0].endswith(f"they are all under {dubai / 'train'} (the list's folder): pass --root {dubai / 'train'}")
    # Files missing everywhere keep their own line each.
    (dubai / "gone.txt").write_text("x/a.jpg,x/a.png\nx/b.jpg,x/b.png\n")
    code, text = run_cli(capsys, "data", "check", "--root", str(dubai), "--list", str(dubai / "gone.txt"),
                         "--num-classes", "5")
    assert code == 1 and text.count("not found") == 4 and "pass --root" not in text


def test_training_checks_name_the_root_a_list_is_relative_to(dubai):
    from bisenet.data.dataset import validate_split
    from bisenet.errors import DataError

    (dubai / "train" / "t.txt").write_text("images/tile1_image_part_001.jpg,labels/tile1_image_part_001.png\n")
    with pytest.raises(DataError, match=r"set data\.root \(or --data-root\) to .*train"):
        validate_split(str(CONFIG), "train", data_root=dubai, list_file=str(dubai / "train" / "t.txt"))
