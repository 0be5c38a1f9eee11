"""Resuming and stopping runs: exact resume after kill -9, refusals before the work dir, SIGTERM checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import bisenet
from bisenet.cli import main as cli_main
from bisenet.config import save_config
from bisenet.engine.resume import read_resume_checkpoint, restore_checkpoint
from bisenet.engine.optim import build_optimizer, build_scheduler
from bisenet.engine.train import train
from bisenet.errors import BisenetError, CheckpointError, ConfigError
from test_train import ROOT, cli_args, iteration_of, tiny_config, weights_of  # tests/ is on sys.path


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    reference = tmp_path / "uninterrupted"
    assert cli_main(cli_args(reference, "train.log_interval=3")) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", *cli_args(killed, "train.max_iters=200",
                                                                          "train.log_interval=3")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        for line in proc.stdout:  # kill -9 in the middle of the run, after iteration 3
            if line.startswith("iter") and iteration_of(line) >= 3:
                break
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)["iteration"]
    assert saved in (2, 4)
    # iteration 3's record, if the kill let it reach metrics.jsonl, came after the checkpoint at 2
    logged = (killed / "metrics.jsonl").read_text()
    logged_past = saved == 2 and '"iteration": 3,' in logged and logged.endswith("\n")  # whole, not cut by the kill
    assert cli_main([*cli_args(killed, "train.log_interval=3"), "--resume"]) == 0
    ref, res = weights_of(reference / "last.pt"), weights_of(killed / "last.pt")
    assert ref.keys() == res.keys()
    assert all(torch.equal(ref[k], res[k]) for k in ref), "resumed run differs from the uninterrupted one"
    replayed = " (iteration 3 logged by that run after its checkpoint: run again" if logged_past else ""
    assert f"resumed from {killed / 'last.pt'} at iteration {saved}{replayed}" in (killed / "train.log").read_text()
    # The iterations the killed run logged past its checkpoint are dropped, not logged twice, and the
    # loss sums not yet logged at the checkpoint travel in it: the same records, the same means.
    def records(run):
        return [(r["iteration"], r["loss"], r["lr"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert [it for it, _, _ in records(killed)] == [1, 3, 6]
    assert records(killed) == records(reference)


def test_a_new_run_into_a_work_dir_with_a_checkpoint_is_refused(tmp_path):
    train(tiny_config("train.max_iters=1"), tmp_path)
    logged = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=re.escape("pass --resume (resume='auto' in Python) to continue it")):
        train(tiny_config("train.max_iters=2"), tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 1
    assert (tmp_path / "metrics.jsonl").read_text() == logged  # the old run's log is not mixed with a new one


def test_resume_from_a_run_past_max_iters_is_refused_and_writes_nothing(tmp_path):
    train(tiny_config("train.max_iters=2"), tmp_path / "long")
    with pytest.raises(ConfigError, match="at iteration 2, past train.max_iters 1; raise --max-iters"):
        train(tiny_config("train.max_iters=1"), tmp_path / "short", resume=tmp_path / "long" / "last.pt")
    assert not (tmp_path / "short").exists()


def test_train_takes_a_config_path_and_resume_true_starts_then_continues(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    save_config(tiny_config("train.max_iters=1"), config)
    run = tmp_path / "run"
    # resume=True is "auto": nothing to resume yet, so a new run starts (a requeued job can always pass it).
    assert train(str(config), run, resume=True).iteration == 1
    assert f"--resume: {run} holds no last.pt yet; starting a new run" in capsys.readouterr().out
    assert train(tiny_config("train.max_iters=2"), run, resume=True).iteration == 2
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'last.pt'} at iteration 1" in log
    assert "--resume: train.max_iters was 1 in that run, 2 now: the warm-up + poly schedule is stretched" in log
    # The step after the resume takes the new schedule's lr, not the old one's (its end: 0, no update).
    from bisenet.engine.optim import lr_factor

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step_2 = next(r for r in records if r.get("type") == "train" and r["iteration"] == 2)
    tc = tiny_config("train.max_iters=2").train
    assert step_2["lr"] == pytest.approx(tc.lr * lr_factor(1, tc)) and step_2["lr"] > 0


def test_resume_auto_with_finetune_weights_fine_tunes_first_then_resumes(tmp_path):
    # A requeued fine-tuning job passes both every time: weights until the run has a last.pt.
    train(tiny_config("train.max_iters=1"), tmp_path / "source")
    source = weights_of(tmp_path / "source" / "last.pt")
    run = tmp_path / "run"
    train(tiny_config("train.max_iters=1"), run, resume="auto", finetune_from=tmp_path / "source" / "last.pt")
    log = (run / "train.log").read_text()
    assert f"fine-tuning from {tmp_path / 'source' / 'last.pt'}" in log and "resumed from" not in log
    assert not torch.equal(weights_of(run / "last.pt")["head.conv_out.1.weight"], source["head.conv_out.1.weight"])
    assert train(tiny_config("train.max_iters=2"), run, resume="auto",
                 finetune_from=tmp_path / "source" / "last.pt").iteration == 2
    assert f"resumed from {run / 'last.pt'} at iteration 1" in (run / "train.log").read_text()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resume": "last.pt", "finetune_from": "w.pt"},
     "--resume last.pt and --finetune-from (resume= and finetune_from= in Python) exclude each other"),
    ({"resume": 5}, "resume=5: pass 'auto' (or True), a checkpoint path, or None"),
    ({"resume": "nope.pt"}, "--resume: nope.pt not found; drop --resume (resume=None in Python)"),
    ({"resume": "."}, "--resume .: is a folder; pass its checkpoint (last.pt)"),
])
def test_bad_resume_arguments_are_refused_before_the_work_dir(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(bisenet.errors.BisenetError, match=re.escape(message)):
        train(tiny_config(), tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_resuming_a_weights_only_file_is_refused_before_the_work_dir(tmp_path, weights):
    with pytest.raises(CheckpointError, match=re.escape("holds weights only (no optimizer); use --finetune-from")):
        train(tiny_config(), tmp_path / "run", resume=weights)
    assert not (tmp_path / "run").exists()


def test_finetune_from_a_state_dict_without_num_batches_tracked(tmp_path):
    # Converted and older checkpoints lack BatchNorm's step counters, which torch's strict loader accepts too.
    state = {k: v for k, v in bisenet.build_model("bisenetv2", 5).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "converted.pth"
    torch.save(state, path)
    assert train(tiny_config("train.max_iters=1"), tmp_path / "run", finetune_from=path).iteration == 1


def test_resume_with_a_scaler_from_a_run_without_one(tmp_path):
    # A bf16/fp32 run saves an empty scaler state; continuing it with fp16 (on a GPU) needs a fresh scaler.
    cfg = tiny_config("train.max_iters=2")
    train(cfg, tmp_path)
    model = bisenet.build_model(cfg.model.arch, cfg.num_classes)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    assert restore_checkpoint(read_resume_checkpoint(tmp_path / "last.pt", cfg), model, optimizer, scheduler,
                              scaler).iteration == 2
    assert scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()


@pytest.mark.parametrize(("override", "key"), [("train.lr=0.5", "train.lr 0.005"), ("train.optimizer=sgd", "train.optimizer adamw")])
def test_resume_refuses_optimizer_settings_the_checkpoint_would_override(tmp_path, override, key):
    # The optimizer state restores the run's lr / optimizer: a changed value would be ignored (or crash).
    train(tiny_config("train.max_iters=1", "train.lr=0.005"), tmp_path)
    with pytest.raises(CheckpointError, match=f"was trained with {key} but the config asks for .*--finetune-from"):
        train(tiny_config("train.max_iters=2", "train.lr=0.005", override), tmp_path, resume="auto")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 1


def test_resume_with_another_process_count_warns_that_it_is_not_exact(tmp_path, capsys):
    train(tiny_config("train.max_iters=1"), tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 1
    ckpt["world_size"] = 2  # as written by `torchrun --nproc_per_node 2`
    torch.save(ckpt, tmp_path / "last.pt")
    train(tiny_config("train.max_iters=2"), tmp_path, resume="auto")
    warning = "--resume: that run used 2 process(es), this one 1: 2 instead of 4 images per step"
    assert warning in capsys.readouterr().err and warning in (tmp_path / "train.log").read_text()


def test_resume_with_another_seed_or_batch_size_warns_that_it_is_not_exact(tmp_path, capsys):
    # Both move the data stream (the sampler's position is iteration x images per step); nothing said so.
    train(tiny_config("train.max_iters=1"), tmp_path)
    capsys.readouterr()
    train(tiny_config("train.max_iters=2", "train.seed=5", "train.batch_size=3"), tmp_path, resume="auto")
    err = capsys.readouterr().err
    assert "--resume: train.batch_size was 2 in that run, 3 now: another number of images per step" in err
    assert "--resume: train.seed was 0 in that run, 5 now: the data order, augmentation and dropout" in err


@pytest.mark.parametrize("whole_group, signum", [(False, signal.SIGTERM), (True, signal.SIGTERM), (False, signal.SIGINT)],
                         ids=["main-process", "process-group", "ctrl-c"])
def test_sigterm_writes_checkpoint_and_exits(tmp_path, whole_group, signum):
    # A cluster scheduler signals the whole process group, data workers included.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = cli_args(tmp_path, "train.max_iters=10000", "train.checkpoint_interval=10000", "train.workers=1")
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("iter") and iteration_of(line) >= 2:
            break
    if whole_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0]  # a hang fails here; how soon it stops is checked by stopped_at below
    name = signal.Signals(signum).name
    assert proc.returncode == (143 if signum == signal.SIGTERM else 130), output
    assert f"stopped by {name} at iteration" in output
    # Ctrl-C says at once what comes, since a person is waiting (a scheduler's SIGTERM is not)
    assert ("SIGINT: stopping after this step and writing last.pt" in output) == (signum == signal.SIGINT)
    stopped_at = int(output.split(f"stopped by {name} at iteration ")[1].split(";")[0])
    assert torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)["iteration"] == stopped_at
    # The advice names the run's own config.yaml, and that command continues the run.
    advice = f"Continue with: bisenet train {tmp_path / 'config.yaml'} --work-dir {tmp_path} --resume"
    assert advice in output
    if whole_group:
        assert cli_main(advice.removeprefix("Continue with: bisenet ").split() + ["--max-iters", str(stopped_at + 1)]) == 0
        assert torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)["iteration"] == stopped_at + 1


def test_sigterm_to_the_group_during_evaluation_still_writes_the_checkpoint(tmp_path):
    # The evaluation inside training has its own loader workers; they must leave the signal to the trainer.
    args = cli_args(tmp_path, "train.max_iters=10000", "train.checkpoint_interval=10000", "train.workers=1",
                    "train.eval_interval=1")  # 12 whole val images: seconds of evaluation after each 64x64 step
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("iter"):  # iteration 1 is logged, its evaluation (whole val images) starts
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before the signal: the test would check nothing"
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    assert "stopped by SIGTERM at iteration 1;" in output and "Traceback" not in output
    assert "eval @ iter 1" in output  # the evaluation it interrupted was finished first
    assert torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)["iteration"] == 1


def test_sigterm_during_the_final_evaluation_finishes_the_run_as_done(tmp_path):
    # The run's last evaluation completes it: reporting "stopped" and a resume with nothing to do misled.
    args = cli_args(tmp_path, "train.max_iters=1", "train.workers=1", "train.eval_interval=1")
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("iter"):  # iteration 1 of 1 is logged, the final evaluation starts
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before the signal: the test would check nothing"
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert "stopped by" not in output and "done: iteration 1" in output and "Traceback" not in output
    assert torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)["iteration"] == 1


def test_a_relative_data_root_is_stored_absolute_so_the_run_resumes_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "ds").symlink_to(ROOT / "examples" / "dubai")
    monkeypatch.chdir(tmp_path / "start")
    train(tiny_config("data.root=ds", "train.max_iters=1"), tmp_path / "run")
    stored = bisenet.load_config(tmp_path / "run" / "config.yaml").data.root
    assert stored == str(tmp_path / "start" / "ds")
    monkeypatch.chdir(tmp_path)  # elsewhere: the stored config still finds the data
    result = train(bisenet.load_config(tmp_path / "run" / "config.yaml", "train.max_iters=2"), tmp_path / "run",
                   resume="auto")
    assert result.iteration == 2


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_no_temporary_file(tmp_path):
    # A full disk surfaced as torch's "enforce fail at inline_container.cc" RuntimeError; a file-size
    # limit fails the write the same way without a small disk to fill.
    script = (
        "import resource, signal, sys, torch\n"
        "from bisenet.checkpoint import atomic_save\n"
        "from bisenet.errors import CheckpointError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "try:\n"
        f"    atomic_save({{'x': torch.zeros(1 << 20)}}, {str(tmp_path / 'last.pt')!r})\n"
        "except CheckpointError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == (f"could not write {tmp_path / 'last.pt'}: File too large; free some space or "
                                  "pass another --work-dir"), out.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_work_dir_is_refused_before_the_first_step_and_stale_temporary_files_go(tmp_path):
    blocked = tmp_path / "blocked"
    (blocked / "metrics.jsonl").mkdir(parents=True)  # as a read-only mount would, the log cannot be opened
    with pytest.raises(BisenetError, match=rf"cannot write in the work dir {re.escape(str(blocked))}: .*"
                                           "pass a writable --work-dir"):
        train(tiny_config("train.max_iters=1"), blocked)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.x1y2z3w4.tmp").write_bytes(b"\0" * 100)  # a write cut short by kill -9
    train(tiny_config("train.max_iters=1"), run)
    assert not list(run.glob(".*.tmp"))


def _val_list_with_one_unchecked_bad_label(folder):
    """Nine 64x64 val pairs; the one the start-up sample skips (index 4) has label value 200 (5 classes)."""
    import cv2

    dubai = ROOT / "examples" / "dubai" / "train"
    image = cv2.imread(str(dubai / "images" / "tile1_image_part_001.jpg"))[:64, :64]
    label = cv2.imread(str(dubai / "labels" / "tile1_image_part_001.png"), cv2.IMREAD_UNCHANGED)[:64, :64]
    folder.mkdir()
    for i in range(9):
        cv2.imwrite(str(folder / f"{i}.png"), image)
        cv2.imwrite(str(folder / f"{i}_label.png"), label)
    cv2.imwrite(str(folder / "4_label.png"), label * 0 + 200)
    (folder / "val.txt").write_text("".join(f"{folder}/{i}.png,{folder}/{i}_label.png\n" for i in range(9)))
    return label


def test_a_final_evaluation_that_failed_runs_when_the_run_resumes(tmp_path):
    # last.pt is written before the evaluation due at the same iteration; a resume must not skip that evaluation.
    val = tmp_path / "val"
    good_label = _val_list_with_one_unchecked_bad_label(val)
    overrides = ["train.max_iters=2", "train.eval_interval=2", f"data.val_list={val / 'val.txt'}"]
    run = tmp_path / "run"
    with pytest.raises(BisenetError, match="4_label.png"):
        train(tiny_config(*overrides), run)
    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert (saved["iteration"], saved["evaluated"]) == (2, None) and not (run / "best.pt").exists()

    import cv2
    cv2.imwrite(str(val / "4_label.png"), good_label)
    result = train(tiny_config(*overrides), run, resume="auto")  # also: the failed run freed its work dir
    assert result.iteration == 2 and result.last_miou is not None and result.best_miou == result.last_miou
    assert "iteration 2 has no finished evaluation: running it now" in (run / "train.log").read_text()
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["evaluated"] == 2
    assert torch.load(run / "best.pt", map_location="cpu", weights_only=True)["best_miou"] == result.best_miou
    assert train(tiny_config(*overrides), run, resume="auto").last_miou is None  # done now: nothing runs twice
    assert "nothing to do: the run is already at iteration 2 of 2" in (run / "train.log").read_text()

    # Killed after the evaluation was logged but before last.pt recorded it: evaluated again, logged once.
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    torch.save({**ckpt, "evaluated": None}, run / "last.pt")
    assert train(tiny_config(*overrides), run, resume="auto").last_miou == result.last_miou
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "eval"] == [2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/mIoU")] == [2]  # purged and written again, not twice
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_a_second_run_into_a_work_dir_in_use_is_refused_and_touches_nothing(tmp_path):
    from bisenet.engine.monitor import RunMonitor

    train(tiny_config("train.max_iters=1"), tmp_path)
    logged = (tmp_path / "metrics.jsonl").read_text()
    with RunMonitor(tmp_path, 1, fresh=False, resume_iter=1, tensorboard=False):  # a run still going there
        with pytest.raises(BisenetError, match=rf"{re.escape(str(tmp_path))} is in use by another training run "
                                               rf"\(pid {os.getpid()} on .*\): wait for it to end, or pass another"):
            train(tiny_config("train.max_iters=2"), tmp_path, resume="auto")
    assert (tmp_path / "metrics.jsonl").read_text() == logged
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 1
    assert train(tiny_config("train.max_iters=2"), tmp_path, resume="auto").iteration == 2  # free again


def test_an_evaluation_that_fails_off_the_checkpoint_schedule_still_keeps_its_iterations(tmp_path):
    # last.pt was written before an evaluation only when a checkpoint was due there: 2 iterations lost here.
    val = tmp_path / "val"
    _val_list_with_one_unchecked_bad_label(val)
    overrides = ["train.max_iters=4", "train.eval_interval=2", "train.checkpoint_interval=4",
                 f"data.val_list={val / 'val.txt'}"]
    with pytest.raises(BisenetError, match="4_label.png"):
        train(tiny_config(*overrides), tmp_path / "run")
    assert torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["iteration"] == 2


def test_resume_of_another_runs_checkpoint_into_a_work_dir_with_a_run_is_refused(tmp_path):
    train(tiny_config("train.max_iters=1"), tmp_path / "a")
    train(tiny_config("train.max_iters=1"), tmp_path / "b")
    logged = (tmp_path / "b" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=re.escape(f"--resume {tmp_path / 'a' / 'last.pt'} into {tmp_path / 'b'}, "
                                                    "which holds another run")):
        train(tiny_config("train.max_iters=2"), tmp_path / "b", resume=tmp_path / "a" / "last.pt")
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == logged
    with pytest.raises(CheckpointError, match="is a folder; pass its checkpoint"):  # its own fix, not "another run"
        train(tiny_config("train.max_iters=2"), tmp_path / "b", resume=tmp_path / "a")
    with pytest.raises(CheckpointError, match="not found"):
        train(tiny_config("train.max_iters=2"), tmp_path / "b", resume=tmp_path / "a" / "typo.pt")
    assert train(tiny_config("train.max_iters=2"), tmp_path / "c", resume=tmp_path / "a" / "last.pt").iteration == 2


def test_resume_names_changed_settings_and_a_finished_run_keeps_its_config_yaml(tmp_path, capsys):
    train(tiny_config("train.max_iters=2"), tmp_path)
    stored = (tmp_path / "config.yaml").read_text()
    capsys.readouterr()
    train(tiny_config("train.max_iters=2", "train.loss=ce"), tmp_path, resume="auto")  # nothing to do
    assert (tmp_path / "config.yaml").read_text() == stored  # still the config the run trained with
    train(tiny_config("train.max_iters=3", "train.loss=ce", "train.warmup_iters=1", "train.log_interval=5"), tmp_path,
          resume="auto")
    err = capsys.readouterr().err
    assert ("settings differ from that run's (train.warmup_iters 2 -> 1; train.loss ohem -> ce): they apply from "
            "here on") in err
    assert "log_interval" not in err  # bookkeeping, not what the run learns


def test_train_gives_the_callers_random_state_back(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_config("train.max_iters=1"), tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_an_error_before_the_first_step_is_the_last_line_of_train_log(tmp_path):
    # data.cache: device decodes the whole split before the loop: a bad label the start-up sample skipped
    # stopped the run with nothing in train.log.
    data = tmp_path / "data"
    _val_list_with_one_unchecked_bad_label(data)
    with pytest.raises(BisenetError, match="4_label.png"):
        train(tiny_config(f"data.train_list={data / 'val.txt'}", "data.cache=device", "train.max_iters=1"),
              tmp_path / "run")
    last_line = (tmp_path / "run" / "train.log").read_text().splitlines()[-1]
    assert last_line.startswith("error at iteration 0: ") and "4_label.png" in last_line


def test_a_forked_child_does_not_keep_the_work_dir_locked(tmp_path):
    # DataLoader workers are forks: they shared the run's flock, so after a kill -9 the orphaned
    # workers kept the work dir "in use by" the dead pid for seconds.
    import multiprocessing
    import time

    from bisenet.engine.monitor import RunMonitor

    fork = multiprocessing.get_context("fork")
    started = fork.Event()

    def worker() -> None:
        started.set()  # after the fork's hooks ran
        time.sleep(30)

    child = None
    try:
        with RunMonitor(tmp_path, 1, fresh=True, resume_iter=0, tensorboard=False):
            child = fork.Process(target=worker, daemon=True)
            child.start()
            assert started.wait(30)
        with RunMonitor(tmp_path, 1, fresh=False, resume_iter=0, tensorboard=False):  # free: the child let go
            assert child.is_alive()
    finally:
        if child is not None:
            child.kill()
            child.join()


def test_a_monitor_that_fails_to_start_lets_go_of_the_work_dir(tmp_path, monkeypatch):
    # The lock stayed held (kept alive by the fork hook's list) when setup failed with a non-OSError:
    # a retry in the same process was refused as "in use by" itself. A Ctrl-C while the old log is rewritten:
    from bisenet.engine import monitor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(monitor, "_drop_records_after", interrupted)
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "type": "train"}\n')
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            monitor.RunMonitor(tmp_path, 10, fresh=False, resume_iter=5, tensorboard=False)
    monkeypatch.undo()
    # The lock is free; and a record without a loss (hand-edited) is left out of curves.png, not a KeyError.
    assert monitor.RunMonitor(tmp_path, 10, fresh=False, resume_iter=5, tensorboard=False).close() is None


def test_a_metrics_log_with_bytes_that_are_not_utf8_resumes_and_drops_only_that_line(tmp_path):
    # A line of garbage bytes (a disk error, an editor's encoding) made resume fail with a raw UnicodeDecodeError.
    run = tmp_path / "run"
    assert train(tiny_config("train.max_iters=1"), run).iteration == 1
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"iteration": 0, "note": "\xff\xfe"}\n')
    assert train(tiny_config("train.max_iters=2"), run, resume=True).iteration == 2
    text = metrics.read_text(encoding="utf-8")  # the bad line is gone, the good ones kept, the new step appended
    assert text.startswith(good.decode()) and "note" not in text
    assert [json.loads(line)["iteration"] for line in text.splitlines()][-1] == 2
