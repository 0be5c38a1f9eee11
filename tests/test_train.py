"""Training engine: schedule, OHEM, parameter groups, checkpoints, exact resume, signals."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import bisenet
from bisenet.cli import main as cli_main
from bisenet.engine.optim import build_optimizer, lr_factor, parameter_groups
from bisenet.engine.sampler import IterationSampler
from bisenet.engine.train import TrainingError, _nonfinite_message, train
from bisenet.errors import CheckpointError, ConfigError, DataError
from bisenet.losses import OhemCrossEntropy

ROOT = Path(__file__).resolve().parents[1]
DUBAI_CONFIG = ROOT / "configs" / "bisenetv2_dubai.yaml"

# A tiny but real run on the bundled example: 64x64 crops, batch 2, no workers.
TINY = [
    f"data.root={ROOT / 'examples' / 'dubai'}",
    "augment.crop_size=[64, 64]",
    "train.batch_size=2",
    "train.workers=0",
    "train.max_iters=6",
    "train.warmup_iters=2",
    "train.checkpoint_interval=2",
    "train.eval_interval=0",
    "train.log_interval=1",
    "train.amp=none",
    "train.device=cpu",
]


def tiny_config(*extra: str) -> bisenet.Config:
    return bisenet.load_config(DUBAI_CONFIG, TINY + list(extra))


def cli_args(work_dir: Path, *extra: str) -> list[str]:
    return ["train", str(DUBAI_CONFIG), "--work-dir", str(work_dir), "--set", *TINY, *extra]


def iteration_of(progress_line: str) -> int:
    return int(progress_line.split()[1].split("/")[0])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# --- schedule, loss, parameter groups, sampler ---------------------------------------

def test_warmup_then_poly_schedule():
    tc = tiny_config("train.max_iters=100", "train.warmup_iters=10").train
    factors = [lr_factor(i, tc) for i in range(101)]
    assert factors[0] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))  # warm-up rises
    assert factors[10] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[10:100], factors[11:101]))  # poly decays
    assert factors[100] == 0.0
    assert factors[55] == pytest.approx((1 - 45 / 90) ** 0.9)


def test_ohem_keeps_hard_pixels_and_a_minimum():
    loss_fn = OhemCrossEntropy(thresh=0.7, min_kept_fraction=0.25, ignore_index=255)
    # 8 pixels, 2 classes: 2 hard (wrong, confident), 5 easy (right, confident), 1 ignored
    logits = torch.tensor([[-5.0, 5.0]] * 2 + [[5.0, -5.0]] * 6).T.reshape(1, 2, 1, 8)
    labels = torch.tensor([[[0, 0, 0, 0, 0, 0, 0, 255]]])
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none").flatten()
    assert loss_fn(logits, labels).item() == pytest.approx(per_pixel[:2].mean().item())
    # All easy: the hardest max(1, 7 * 0.25) = 1 pixel is still kept.
    easy = torch.tensor([[5.0, -5.0]] * 8).T.reshape(1, 2, 1, 8)
    assert loss_fn(easy, labels).item() == pytest.approx(per_pixel[2:7].max().item(), rel=1e-4)
    all_ignored = torch.full_like(labels, 255)
    assert loss_fn(logits, all_ignored).item() == 0.0


def test_adamw_optimizer_keeps_the_groups_and_unknown_names_get_the_nearest():
    cfg = tiny_config("train.optimizer=adamw", "train.lr=0.002")
    optimizer = build_optimizer(bisenet.build_model("bisenetv2", 5), cfg.train)
    assert isinstance(optimizer, torch.optim.AdamW)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["body_decay"] == pytest.approx(0.002) and lrs["head_decay"] == pytest.approx(0.002 * cfg.train.head_lr_factor)
    with pytest.raises(ConfigError, match="adamw"):
        tiny_config("train.optimizer=adam")


def test_parameter_groups_no_decay_on_bn_and_bias_and_head_lr():
    cfg = tiny_config("train.head_lr_factor=10.0")
    model = bisenet.build_model("bisenetv2", 5)
    groups = {g["name"]: g for g in parameter_groups(model, cfg.train)}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups.values():
        for p in group["params"]:
            name = names[id(p)]
            is_head = name.split(".")[0] in model.head_modules
            assert (group["lr_scale"] == cfg.train.head_lr_factor) == is_head, name
            assert (group["weight_decay"] > 0) == (p.dim() > 1), name
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_sampler_is_a_pure_function_of_iteration_and_splits_ranks():
    full = list(IterationSampler(10, batch_size=3, seed=1, max_iters=8))
    resumed = list(IterationSampler(10, batch_size=3, seed=1, start_iter=5, max_iters=8))
    assert full[15:] == resumed
    epoch0 = sorted(i for e, i in full if e == 0)
    assert epoch0 == list(range(10))  # every sample once per epoch
    r0 = list(IterationSampler(10, batch_size=2, seed=1, rank=0, world_size=2, max_iters=3))
    r1 = list(IterationSampler(10, batch_size=2, seed=1, rank=1, world_size=2, max_iters=3))
    assert not set(r0[:2]) & set(r1[:2])


# --- runs -------------------------------------------------------------------------------

def test_checkpoint_round_trip_and_load_model(tmp_path):
    result = train(tiny_config("train.max_iters=2"), tmp_path)
    assert result.iteration == 2 and result.seconds_per_iter > 0  # iteration 2 (the first is left out)
    ckpt = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "iteration", "rng", "config", "arch", "num_classes"):
        assert key in ckpt, key
    assert ckpt["iteration"] == 2 and ckpt["arch"] == "bisenetv2" and ckpt["num_classes"] == 5
    model = bisenet.load_model(tmp_path / "last.pt")
    assert not model.training
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    assert (tmp_path / "config.yaml").is_file()
    assert bisenet.load_config(tmp_path / "config.yaml").augment.crop_size == (64, 64)
    assert (tmp_path / "metrics.jsonl").read_text().count('"type": "train"') == 2
    # Each record's lr is the one its step used: the last step's is the poly schedule's last value, not 0.
    assert [json.loads(line)["lr"] > 0 for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [True, True]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_finetune_with_new_class_count_reinitialises_heads(tmp_path, capsys):
    train(tiny_config("train.max_iters=1"), tmp_path / "five")
    cfg = bisenet.load_config(DUBAI_CONFIG, TINY + ["train.max_iters=1", "data.dataset=custom", "data.num_classes=7"])
    result = train(cfg, tmp_path / "seven", finetune_from=tmp_path / "five" / "last.pt")
    assert result.iteration == 1
    err = capsys.readouterr().err
    for head in ("head.conv_out.1", "aux2.conv_out.1", "aux5_4.conv_out.1"):
        assert f"re-initialised {head} (5 -> 7 classes)" in err
    five = weights_of(tmp_path / "five" / "last.pt")
    model = bisenet.load_model(tmp_path / "seven" / "last.pt")
    assert model.num_classes == 7
    assert five["detail.S1.0.conv.weight"].shape == model.state_dict()["detail.S1.0.conv.weight"].shape


def test_finetune_from_an_eval_only_export_says_the_aux_heads_start_fresh_in_the_log(tmp_path, capsys):
    shipped = ROOT / "weights" / "bisenetv2_camvid.safetensors"  # 11 classes, no aux heads
    train(tiny_config("train.max_iters=1"), tmp_path, finetune_from=shipped)
    log = (tmp_path / "train.log").read_text()
    assert "warning: --finetune-from: re-initialised head.conv_out.1 (11 -> 5 classes)" in log
    assert "has no auxiliary heads (an eval-only export?); aux2, aux3, aux4, aux5_4 start from random init" in log
    assert "aux5_4 start from random init" in capsys.readouterr().err


def test_finetune_source_of_another_arch_or_missing_is_refused_before_the_work_dir(tmp_path):
    v1 = tmp_path / "v1.pth"
    torch.save(bisenet.build_model("bisenetv1", 5).state_dict(), v1)
    with pytest.raises(CheckpointError, match=r"--finetune-from .*v1.pth: the weights are a bisenetv1 model but the "
                                              r"config's model.arch is bisenetv2; .*set model.arch: bisenetv1"):
        train(tiny_config(), tmp_path / "run", finetune_from=v1)
    with pytest.raises(CheckpointError, match=r"--finetune-from .*nope.pt: weights file not found"):
        train(tiny_config(), tmp_path / "run", finetune_from=tmp_path / "nope.pt")
    assert not (tmp_path / "run").exists()


def test_nonfinite_loss_stops_with_iteration_and_hint(tmp_path):
    with pytest.raises(TrainingError, match=r"at iteration \d+ .*lower train.lr"):
        train(tiny_config("train.lr=1e12", "train.warmup_iters=0", "train.max_iters=20"), tmp_path)


@pytest.mark.parametrize(("amp_dtype", "suggests_other_amp"), [(torch.float16, True), (torch.bfloat16, False), (None, False)])
def test_nonfinite_hint_follows_the_dtype_autocast_ran_in(tmp_path, amp_dtype, suggests_other_amp):
    # 'auto' resolves to fp16 on GPUs without bf16, so the hint keys on the dtype, not the config string.
    nan = torch.tensor(float("nan"))
    message = _nonfinite_message(7, nan, {"main": nan, "aux2": torch.tensor(1.0)}, amp_dtype, tmp_path / "last.pt")
    assert "at iteration 7 (main=nan, aux2=1); no checkpoint was written yet." in message
    assert ("fp16 overflow" in message) == suggests_other_amp


def test_bad_config_key_names_nearest(tmp_path, capsys):
    assert cli_main(["train", str(DUBAI_CONFIG), "--work-dir", str(tmp_path), "--set", "train.lerning_rate=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown key 'train.lerning_rate'" in err
    with pytest.raises(ConfigError, match="did you mean 'max_iters'"):
        bisenet.load_config({"train": {"max_iter": 5}})
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(("raw", "hint"), [
    ({"train": {"crop_size": [256, 256]}}, "did you mean 'augment.crop_size' or 'eval.crop_size'?"),  # exact, elsewhere
    ({"model": {"nmu_classes": 3}}, "did you mean 'data.num_classes'?"),  # close, elsewhere
    ({"augment": {"flipp": True}}, "did you mean 'flip'?"),  # close, same section
])
def test_misplaced_config_key_names_its_section(raw, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        bisenet.load_config(raw)


@pytest.mark.parametrize(("override", "message"), [
    ("train.log_interval=0", "train.log_interval must be at least 1, got 0"),
    ("train.checkpoint_interval=0", "train.checkpoint_interval must be at least 1"),
    ("train.workers=-1", "train.workers must be at least 0 (0 = load in the main process)"),
    ("eval.crop_size=[0,64]", "eval.crop_size = 0x64 must be positive"),
    ("data.palette=[[300,0,0]]", "data.palette entry [300, 0, 0] must be 3 integers in 0-255"),
    ("data.palette=[[1,2,3]]", "data.palette has 1 colours for 5 classes"),
    ("train.channels_last=fast", "train.channels_last = 'fast' is not one of true, false, auto"),
    ("train.channels_last=[1]", "train.channels_last = [1] is not a valid boolean (true/false) or string"),
])
def test_values_that_would_fail_mid_run_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        bisenet.load_config(DUBAI_CONFIG, [override])


def test_training_crop_off_the_stride_fails_before_the_work_dir_is_made(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("augment.crop_size = 100x100 must be multiples of 32 (the network's "
                                                    "stride; crops enter it as they are): use 128x128")):
        train(tiny_config("augment.crop_size=[100,100]"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_binary_file_as_config_and_unusable_work_dir_are_one_line_errors(tmp_path, capsys):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\xe8\x00\xff" * 10)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for argv, expected in ((["train", str(binary)], "not a YAML text file"),
                           (["train", str(DUBAI_CONFIG), "--work-dir", str(blocker / "run"), "--set", *TINY[1:]],
                            "cannot create folder")):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err


def test_amp_fp16_on_cpu_is_refused_clearly_and_leaves_no_work_dir(tmp_path):
    with pytest.raises(bisenet.errors.BisenetError, match="fp16 needs a CUDA device"):
        train(tiny_config("train.amp=fp16"), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no empty train.log / metrics.jsonl / tensorboard from a refused start


def test_amp_auto_trains_in_bf16_only_where_the_cpu_has_it(tmp_path, capsys):
    from bisenet.runtime import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    train(tiny_config("train.amp=auto", "train.max_iters=1"), tmp_path / "auto")
    out = capsys.readouterr()
    assert f"amp auto ({'bf16' if native else 'none'})" in out.out, out.out
    train(tiny_config("train.amp=bf16", "train.max_iters=1"), tmp_path / "bf16")
    out = capsys.readouterr()
    assert "amp bf16" in out.out
    assert ("no bf16 instructions" in out.err) == (not native), out.err


@pytest.mark.parametrize(("amp", "setting", "used"), [("none", "auto", False), ("bf16", "auto", True), ("none", "true", True)])
def test_channels_last_auto_is_on_under_autocast_and_off_for_fp32_on_cpu(tmp_path, capsys, amp, setting, used):
    train(tiny_config(f"train.amp={amp}", f"train.channels_last={setting}", "train.max_iters=1"), tmp_path)
    # The checkpoint keeps the trained weights' strides: the layout the step actually ran in.
    weight = weights_of(tmp_path / "last.pt")["detail.S1.1.conv.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) == used
    assert weight.is_contiguous() == (not used)
    name = "on" if used else "off"
    assert f"channels_last {f'auto ({name})' if setting == 'auto' else name} |" in capsys.readouterr().out


def torchrun_on_cpu(work_dir, *overrides: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m bisenet train` of the tiny config on CPU (gloo); asserts it succeeded."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bisenet", *cli_args(work_dir, *overrides)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    proc = torchrun_on_cpu(tmp_path, "train.max_iters=2", "train.eval_interval=2")
    assert "x 2 process(es)" in proc.stdout and "= 4 images per step" in proc.stdout
    assert proc.stdout.count("done: iteration 2") == 1  # rank 0 only
    # Both ranks scored their shards with rank 0's BatchNorm statistics, all-reduced into one result.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = next(r for r in records if r.get("type") == "eval" and r["iteration"] == 2)
    assert torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)["iteration"] == 2
    # The same score as one process evaluating the saved weights over the whole split.
    alone = bisenet.evaluate(tmp_path / "config.yaml", tmp_path / "last.pt", device="cpu", workers=0, progress=False)
    assert logged["mIoU"] == pytest.approx(alone["mIoU"], abs=1e-6)


def test_broken_list_stops_before_training_with_data_check_message(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("train/images/missing.jpg,train/labels/missing.png\n")
    (data / "val.txt").write_text("")
    code = cli_main(["train", str(DUBAI_CONFIG), "--work-dir", str(tmp_path / "run"), "--data-root", str(data), "--set", *TINY[1:]])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "train.txt line 1" in err and "missing.jpg" in err
    assert not (tmp_path / "run").exists()  # refused before the work dir is made


def test_label_values_the_config_cannot_hold_stop_the_run_before_its_work_dir(tmp_path):
    # Eight labels per split are read in full before the work dir: a wrong class count shows in any of them.
    with pytest.raises(DataError, match=r"train.txt line \d+: label .* has values .*outside \[0, 2\)"):
        train(tiny_config("data.dataset=custom", "data.num_classes=2", "train.max_iters=1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_label_map_that_matches_no_label_value_stops_the_run_before_its_work_dir(tmp_path):
    # Every value maps to ignore, so each label passes alone; the run trained on nothing with loss 0.
    with pytest.raises(DataError, match=r"every pixel of the 8 labels read maps to the ignore index 255"):
        train(tiny_config("data.dataset=custom", "data.num_classes=5", "data.label_map={-1: 255, 200: 1}",
                          "train.max_iters=1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_start_that_dies_before_its_first_checkpoint_leaves_no_logs_to_the_rerun(tmp_path):
    # A non-finite loss stops a run after its logs are open and before its first checkpoint.
    with pytest.raises(TrainingError):
        train(tiny_config("train.lr=1e12", "train.warmup_iters=0", "train.max_iters=20",
                          "train.checkpoint_interval=100"), tmp_path)
    assert (tmp_path / "train.log").is_file() and not (tmp_path / "last.pt").exists()
    assert re.search(r"error at iteration \d+: loss became", (tmp_path / "train.log").read_text())  # why the run ended
    train(tiny_config("train.max_iters=1"), tmp_path)
    assert (tmp_path / "train.log").read_text().count("training bisenetv2 on") == 1
    assert [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_eval_during_training_on_a_custom_dataset_without_a_palette(tmp_path):
    # The masks logged to TensorBoard need colours: a custom dataset without data.palette gets generated ones.
    dubai = ROOT / "examples" / "dubai"
    lines = "".join(f"{dubai}/train/images/tile1_image_part_00{i}.jpg,{dubai}/train/labels/tile1_image_part_00{i}.png\n"
                    for i in (1, 2))
    (tmp_path / "pairs.txt").write_text(lines)
    cfg = bisenet.load_config({"data": {"dataset": "custom", "num_classes": 5, "root": str(tmp_path),
                                        "train_list": "pairs.txt", "val_list": "pairs.txt"}},
                              TINY[1:] + ["train.max_iters=1", "train.eval_interval=1"])
    assert cfg.data.palette is None
    result = train(cfg, tmp_path / "run")
    assert result.iteration == 1 and result.best_miou is not None
    assert (tmp_path / "run" / "best.pt").is_file()
    # The logged images: photo | mask side by side, the mask in the generated palette's colours only.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bisenet.data.catalog import generated_palette

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"val_pred/0", "val_pred/1"} <= set(events.Tags()["images"])
    logged = events.Images("val_pred/0")
    assert [event.step for event in logged] == [1]
    picture = cv2.imdecode(np.frombuffer(logged[0].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    mask = picture[:, picture.shape[1] // 2:].reshape(-1, 3)
    allowed = {tuple(int(c) for c in colour) for colour in generated_palette(5)}
    assert {tuple(int(c) for c in colour) for colour in np.unique(mask, axis=0)} <= allowed


def test_each_logged_loss_is_the_mean_of_the_iterations_since_the_line_before(tmp_path):
    # The first line (iteration 1) resets the sums: the next one holds iterations 2-3, not 3 of them.
    def losses(work_dir, log_interval):
        train(tiny_config("train.max_iters=4", "train.eval_interval=0", f"train.log_interval={log_interval}"), work_dir)
        lines = (work_dir / "metrics.jsonl").read_text().splitlines()
        return {r["iteration"]: r["loss"] for r in map(json.loads, lines) if r["type"] == "train"}

    each, grouped = losses(tmp_path / "each", 1), losses(tmp_path / "grouped", 3)
    assert sorted(grouped) == [1, 3, 4]
    assert grouped[1] == pytest.approx(each[1], rel=1e-5) and grouped[4] == pytest.approx(each[4], rel=1e-5)
    assert grouped[3] == pytest.approx((each[2] + each[3]) / 2, rel=1e-5)


def test_a_bad_val_image_mid_run_ends_the_process_with_one_line_instead_of_hanging(tmp_path):
    # Data workers ignore SIGTERM (a scheduler's stop is the trainer's to handle), so a run that failed
    # mid-evaluation must stop them itself: Python's exit terminates them with SIGTERM and then waits forever.
    dubai = ROOT / "examples" / "dubai"
    pairs = (dubai / "val.txt").read_text().splitlines()
    from bisenet.data.dataset import spread_indices
    from bisenet.engine.train import SAMPLE_CHECKED

    bad = next(i for i in range(len(pairs)) if i not in spread_indices(len(pairs), SAMPLE_CHECKED))  # read only mid-run
    image, label = pairs[bad].split(",")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((dubai / image).read_bytes()[:2000])
    pairs = [f"{dubai / i},{dubai / l}" for i, l in (p.split(",") for p in pairs)]
    pairs[bad] = f"{truncated},{dubai / label}"
    (tmp_path / "val.txt").write_text("\n".join(pairs) + "\n")
    cmd = [sys.executable, "-m", "bisenet", *cli_args(tmp_path / "run", "train.max_iters=2", "train.eval_interval=2",
                                                      "train.workers=2", f"data.val_list={tmp_path / 'val.txt'}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and f"val.txt line {bad + 1}" in error and "truncated" in error


@pytest.mark.parametrize(("cfg", "work_dir", "message"), [
    (DUBAI_CONFIG, 5, "work_dir=5: expected the run's folder as a str or os.PathLike, not int"),
    (5, "run", "cfg=5: expected a Config, a YAML path (str or os.PathLike) or a dict, not int"),
    (None, "run", "cfg=None: expected a Config, a YAML path (str or os.PathLike) or a dict, not NoneType"),
])
def test_train_arguments_of_the_wrong_type_are_one_line_errors(tmp_path, monkeypatch, cfg, work_dir, message):
    # train(cfg, 5) raised TypeError: expected str, bytes or os.PathLike object, not int.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        train(cfg, work_dir)
    assert str(info.value) == message and list(tmp_path.iterdir()) == []


def test_more_workers_than_cpus_is_one_line_of_ours_not_torchs_warning(tmp_path, capfd, recwarn):
    # torch's three-line UserWarning (with its source line) came twice: for the train and the val loader.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    train(tiny_config("train.max_iters=2", "train.eval_interval=2", f"train.workers={cpus + 1}"), tmp_path)
    err = capfd.readouterr().err
    assert not [w for w in recwarn if "This DataLoader will create" in str(w.message)]
    assert err.count(f"warning: train.workers {cpus + 1} is more than the {cpus} CPUs here") == 1
