"""`bisenet quickstart`: the README's main job leaves every promised artefact (short run)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from bisenet.cli import main as cli_main
from bisenet.quickstart import EXAMPLE_ROOT, MIN_ITERS, QUICKSTART_OVERRIDES, fit_iterations


def test_quickstart_leaves_checkpoint_metrics_curves_and_predictions(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a user's own folder: the bundled data and weights are found from anywhere
    out = tmp_path / "qs"
    assert cli_main(["quickstart", "--out", str(out), "--max-iters", "2"]) == 0
    printed = capsys.readouterr().out
    assert "quickstart finished in" in printed and "val mIoU" in printed
    assert (out / "train" / "last.pt").is_file()
    assert (out / "train" / "curves.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["images"] == 12
    assert set(metrics["IoU"]) == {"building", "land", "road", "vegetation", "water"}
    first = (EXAMPLE_ROOT / "val.txt").read_text().split()[0].split(",")[0]
    stem = first.rsplit("/", 1)[1].rsplit(".", 1)[0]
    photo = cv2.imread(str(EXAMPLE_ROOT / first))
    for suffix in ("color", "overlay", "label"):
        written = cv2.imread(str(out / "predictions" / f"{stem}_{suffix}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.shape[:2] == photo.shape[:2], suffix
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2
    # Its closing hint works from any folder: the shipped weights were named relative to the repository.
    road = next(line for line in printed.splitlines() if "road scenes:" in line)
    weights = road.split("--weights ")[1].split()[0]
    assert (Path(weights) if Path(weights).is_absolute() else Path.cwd() / weights).is_file(), road
    assert "--config " in road


def test_schedule_fits_the_time_budget_between_the_floor_and_the_recipe(tmp_path):
    small = {**QUICKSTART_OVERRIDES, "data.root": str(EXAMPLE_ROOT), "augment.crop_size": [64, 64],
             "train.batch_size": 2, "train.workers": 0}
    iterations, minutes = fit_iterations(small, tmp_path / "probe", budget_seconds=1e6)
    assert iterations == 450 and 0 < minutes < 1e6 / 60  # the recipe is the cap
    iterations, minutes = fit_iterations(small, tmp_path / "probe", budget_seconds=0)
    assert iterations == MIN_ITERS and minutes > 0  # the floor, with the time it will take over the budget
    assert not (tmp_path / "probe").exists()  # the timing run leaves nothing behind


def test_a_bad_budget_or_iteration_count_names_only_the_flag_given(tmp_path, capsys):
    for flags, message in ((["--minutes", "0"], "--minutes 0: must be positive"),
                           (["--max-iters", "0"], "--max-iters 0: must be at least 1")):
        assert cli_main(["quickstart", "--out", str(tmp_path / "qs"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "None" not in err
    assert not (tmp_path / "qs").exists()
