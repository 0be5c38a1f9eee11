"""Training findings of a black-box test: earlier runs kept, a run's own config.yaml, edited lists, YAML pitfalls."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.cli import main as cli_main
from bisenet.engine.resume import ResumePoint, resume_differences
from bisenet.engine.train import default_work_dir, train
from bisenet.errors import CheckpointError, ConfigError, DataError
from test_train import DUBAI_CONFIG, ROOT, cli_args, tiny_config, torchrun_on_cpu  # tests/ is on sys.path


def snapshot(folder):
    """{name: bytes} of every file under `folder` (the lock file aside)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".bisenet-train.lock"}


# --- 1: a new run never replaces an earlier run's best.pt, metrics or TensorBoard events ---

def test_a_new_run_is_refused_where_an_earlier_run_left_best_pt_but_no_last_pt(tmp_path, capsys):
    run = tmp_path / "old"
    assert cli_main(cli_args(run, "train.max_iters=2", "train.eval_interval=2")) == 0
    (run / "last.pt").unlink()  # to save disk: best.pt is the one kept
    kept = snapshot(run)
    assert any(name.parts[0] == "tensorboard" for name in kept)
    capsys.readouterr()
    assert cli_main(cli_args(run, "train.max_iters=1", "train.eval_interval=1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{run} holds an earlier run (best.pt, metrics.jsonl (" in err and "TensorBoard events" in err
    assert "--resume" in err and "another --work-dir" in err and "move those files away" in err
    with pytest.raises(ConfigError, match="holds an earlier run"):  # a bare --resume (requeue) has nothing to continue
        train(tiny_config("train.max_iters=1"), run, resume="auto")
    assert snapshot(run) == kept  # nothing written, nothing deleted


def test_a_new_run_is_refused_where_an_earlier_run_left_metrics_past_its_first_checkpoint(tmp_path):
    run = tmp_path / "old"
    train(tiny_config("train.max_iters=2", "train.checkpoint_interval=1"), run)  # no evaluation: no best.pt
    (run / "last.pt").unlink()
    kept = snapshot(run)
    with pytest.raises(ConfigError, match=r"holds an earlier run \(metrics.jsonl \(2 records up to iteration 2\), "
                                          r"TensorBoard events"):
        train(tiny_config("train.max_iters=1"), run)
    assert snapshot(run) == kept
    # (a start that died before its first checkpoint is still replaced: test_train's
    # test_a_start_that_dies_before_its_first_checkpoint_leaves_no_logs_to_the_rerun)


def test_a_start_whose_first_checkpoint_failed_to_write_can_be_retried(tmp_path):
    # Its metrics reach the checkpoint's iteration (logged before the save): a requeue's bare --resume was refused.
    run = tmp_path / "run"
    (run / "last.pt").mkdir(parents=True)  # a real write failure: the checkpoint cannot replace a folder
    with pytest.raises(CheckpointError, match="could not write"):
        train(tiny_config("train.max_iters=4", "train.checkpoint_interval=2"), run)
    (run / "last.pt").rmdir()
    assert train(tiny_config("train.max_iters=2"), run, resume="auto").iteration == 2


# --- 2: `bisenet train runs/E/config.yaml --resume` continues runs/E ---

def test_a_runs_own_config_yaml_defaults_the_work_dir_to_that_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "E"
    assert cli_main(cli_args(run, "train.max_iters=2")) == 0
    capsys.readouterr()
    assert cli_main(["train", "runs/E/config.yaml", "--resume", "--max-iters", "3"]) == 0
    out = capsys.readouterr().out
    assert "work dir runs/E: runs/E/config.yaml is that run's stored config" in out
    assert f"resumed from {'runs/E/last.pt'} at iteration 2" in out
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["iteration"] == 3
    assert not (tmp_path / "runs" / "config").exists()
    # Without --resume it is a new run into that run's folder: refused, as for --work-dir runs/E.
    assert cli_main(["train", "runs/E/config.yaml"]) == 2
    assert "runs/E already holds a run" in capsys.readouterr().err
    assert default_work_dir(DUBAI_CONFIG) == Path("runs") / "bisenetv2_dubai"  # any other config: as before


# --- 3: a resume notices that the training list changed ---

def make_data(folder, lines):
    """A copy of the example's lists (its first `lines` training pairs) over its image folders."""
    dubai = ROOT / "examples" / "dubai"
    folder.mkdir()
    for split in ("train", "val"):
        (folder / split).symlink_to(dubai / split)
    (folder / "val.txt").write_text((dubai / "val.txt").read_text())
    (folder / "train.txt").write_text("".join((dubai / "train.txt").read_text().splitlines(keepends=True)[:lines]))
    return folder


def test_resume_warns_when_training_pairs_were_removed_from_the_list(tmp_path, capsys):
    data = make_data(tmp_path / "data", 12)
    run = tmp_path / "run"
    train(tiny_config(f"data.root={data}", "train.max_iters=2"), run)
    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["train_data"]
    assert saved["size"] == 12 and len(saved["fingerprint"]) == 16
    (data / "train.txt").write_text("".join((data / "train.txt").read_text().splitlines(keepends=True)[:10]))
    capsys.readouterr()
    train(tiny_config(f"data.root={data}", "train.max_iters=3"), run, resume="auto")
    warning = "has 10 image/label pairs now, 12 in that run: another data order from here on, so it is not an exact " \
              "continuation"
    assert warning in capsys.readouterr().err and warning in (run / "train.log").read_text()


def test_resume_warns_when_the_pairs_differ_in_the_same_count_and_not_for_old_checkpoints():
    cfg = tiny_config()
    saved = {"size": 12, "fingerprint": "0123456789abcdef"}
    other = resume_differences(ResumePoint(2, train_data=saved), cfg, 1, {"size": 12, "fingerprint": "fedcba9876543210"})
    assert any("holds other image/label pairs than in that run (the same count, 12)" in m for m in other)
    assert resume_differences(ResumePoint(2, train_data=saved), cfg, 1, dict(saved)) == []
    assert resume_differences(ResumePoint(2), cfg, 1, {"size": 10, "fingerprint": "x"}) == []  # no field: no warning


# --- 4 and 5: YAML 1.1 readings of 11:20, off and 0 ---

@pytest.mark.parametrize("override, message", [
    ("data.label_map={11:20}", "--set data.label_map={11:20}: data.label_map: YAML 1.1 reads 11:20 (no space after "
                               "the colon) as the base-60 number 680 with no value; write {11: 20} with a space"),
    ("data.label_map={0: 0, -1:3}", "YAML 1.1 reads -1:3 (no space after the colon) as the base-60 number -63 with "
                                    "no value; write {-1: 3} with a space after the colon"),
    ("train.amp=off", "--set train.amp=off: train.amp = False is not a valid string; YAML read `off` as false: "
                      "write none"),  # not 'off' quoted: no more valid there
    ("eval.mode=yes", "eval.mode = True is not a valid string; YAML read `yes` as true: write one of ss, ssc, msf, mscf"),
    ("train.device=0", "train.device = 0 is not a valid string; a GPU index needs its device type: write \"cuda:0\" "
                       "(quoted), cuda or cpu"),
    ("data.test_list=yes", "data.test_list = True is not a valid string; YAML read `yes` as true: quote it ('yes')"),
])
def test_yaml_1_1_readings_name_what_was_written_and_the_fix(override, message):
    with pytest.raises(ConfigError) as caught:
        bisenet.load_config(DUBAI_CONFIG, [override])
    assert message in str(caught.value)


def test_yaml_1_1_readings_in_a_config_file(tmp_path):
    text = DUBAI_CONFIG.read_text()
    (tmp_path / "amp.yaml").write_text(text.replace("  amp: auto", "  amp: Off", 1))
    with pytest.raises(ConfigError, match=r"amp.yaml: train.amp = False is not a valid string; YAML read `Off` as "
                                          r"false: write none$"):
        bisenet.load_config(tmp_path / "amp.yaml")
    (tmp_path / "map.yaml").write_text(text.replace("data:\n", "data:\n  label_map: {11:20, 3: 4}\n", 1))
    with pytest.raises(ConfigError, match=r"map.yaml: data.label_map: YAML 1.1 reads 11:20 .* write \{11: 20\}"):
        bisenet.load_config(tmp_path / "map.yaml")
    # A Python dict has no base-60 reading: the plain message.
    with pytest.raises(ConfigError, match=r"data.label_map\[680\] = None is not a valid integer"):
        bisenet.load_config(DUBAI_CONFIG, {"data.label_map": {680: None}})


# --- 6: model.sync_bn on CPU DDP is noted in train.log ---

@pytest.mark.slow
def test_sync_bn_on_cpu_ddp_is_noted_in_train_log(tmp_path):
    proc = torchrun_on_cpu(tmp_path, "train.max_iters=1", "model.sync_bn=true")
    note = "warning: model.sync_bn needs CUDA; using per-process BatchNorm on CPU"
    assert note in (tmp_path / "train.log").read_text()
    assert proc.stderr.count(note) == 1  # rank 0 only


# --- 7: a warm-up as long as the run says what the schedule does with it ---

def test_a_warmup_longer_than_the_run_says_it_is_shortened(tmp_path, capsys):
    train(tiny_config("train.max_iters=3", "train.warmup_iters=50"), tmp_path)
    warning = ("train.warmup_iters 50 is not below train.max_iters 3: the warm-up is shortened to max_iters - 1 = 2 "
               "iteration(s), then one poly step at the full lr ends the run")
    assert warning in capsys.readouterr().err and warning in (tmp_path / "train.log").read_text()
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())]
    lr = tiny_config().train.lr
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(lr)  # what the warning says: 2 warm-up steps, then the full lr


def test_a_shared_runs_config_next_to_best_pt_alone_is_not_taken_for_a_run_to_resume(tmp_path, monkeypatch):
    # `bisenet train pre/config.yaml --finetune-from pre/best.pt` trained into pre/ and was refused there,
    # with a hint to delete pre/: the weights being fine-tuned from.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.yaml").write_text(DUBAI_CONFIG.read_text())
    (tmp_path / "pre" / "best.pt").write_bytes(b"weights")
    (tmp_path / "pre" / "metrics.jsonl").write_text('{"iteration": 9, "type": "eval", "mIoU": 0.5}\n')
    assert default_work_dir("pre/config.yaml") == Path("runs") / "config"
    (tmp_path / "pre" / "last.pt").write_bytes(b"checkpoint")  # now a run to resume in place
    assert default_work_dir("pre/config.yaml") == Path("pre")


# --- a crop larger than every image, a step larger than the data: said at the start ---

def test_a_crop_larger_than_the_images_and_a_step_larger_than_the_data_are_noted(tmp_path):
    from bisenet.data import build_dataset
    from bisenet.engine.start import data_notes

    data = make_data(tmp_path / "data", 3)  # three 414x512 Dubai tiles
    cfg = tiny_config(f"data.root={data}", "augment.crop_size=[1024, 512]", "augment.scale_range=[0.5, 1.5]",
                      "train.batch_size=2")
    notes = data_notes(cfg, build_dataset(cfg, "train"), world_size=2)
    assert notes == [
        "a step of 4 images (batch size x processes) is larger than the 3 training images: each step repeats some "
        "of them",
        "augment.crop_size 1024x512 exceeds the training images (at most 414x512 in 3 read) even at "
        "augment.scale_range's largest scale 1.5: every crop is partly padding (ignored pixels); e.g. --crop-size "
        "384x512"]
    fits = tiny_config(f"data.root={data}", "augment.crop_size=[608, 768]", "augment.scale_range=[0.5, 1.5]")
    assert data_notes(fits, build_dataset(fits, "train"), world_size=1) == []  # within 414x512 x 1.5 = 621x768


def test_a_relative_data_root_that_is_missing_names_the_current_directory(tmp_path, monkeypatch):
    from bisenet.data.lists import read_list

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"data root mydata is not a directory (relative to the current "
                                                  f"directory {tmp_path})")):
        read_list("train.txt", "mydata")
