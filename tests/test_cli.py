"""The command line's own behaviour: version, and what an unknown command prints."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

import bisenet
from bisenet.cli import COMMANDS, main


def test_version_names_package_and_torch(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bisenet {bisenet.__version__} (PyTorch {torch.__version__})"


def test_unknown_command_lists_the_valid_ones(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and all(name in err for name in COMMANDS)


def test_output_piped_into_a_reader_that_leaves_early_ends_without_a_traceback(tmp_path) -> None:
    # `bisenet data check ... | head`: once head exits, writes fail with EPIPE.
    import subprocess
    import sys

    (tmp_path / "list.txt").write_text("".join(f"img/{i}.png,lab/{i}.png\n" for i in range(5000)))
    proc = subprocess.Popen([sys.executable, "-m", "bisenet", "data", "check", "--root", str(tmp_path), "--list",
                             str(tmp_path / "list.txt"), "--num-classes", "2", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "line 1: image" in proc.stdout.readline()
    proc.stdout.close()  # the reader leaves with most of the 10000 problem lines unread
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 141 and "Traceback" not in err, err


def test_info_weights_prints_what_the_file_holds(tmp_path, capsys) -> None:
    import json

    from bisenet.checkpoint import save_inference_weights
    from bisenet.config import load_config, to_dict

    torch.manual_seed(0)
    model = bisenet.build_model("bisenetv2", 5)
    cfg = load_config({"data": {"dataset": "dubai"}})
    ckpt, plain, export = tmp_path / "last.pt", tmp_path / "v2.pth", tmp_path / "v2.safetensors"
    torch.save({"model": model.state_dict(), "arch": "bisenetv2", "num_classes": 5, "iteration": 120,
                "best_miou": 0.4512, "config": to_dict(cfg)}, ckpt)
    torch.save(model.state_dict(), plain)
    save_inference_weights(model.eval(), export, "bisenetv2", config=to_dict(cfg))
    assert main(["info", "--arch", "bisenetv2", "--num-classes", "5", "--size", "64x64", "--json"]) == 0
    fresh = json.loads(capsys.readouterr().out)

    assert main(["info", "--weights", str(ckpt), "--size", "64x64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{ckpt}: training checkpoint at iteration 120, best val mIoU 45.12%"
    assert out[1] == "bisenetv2  5 classes  input 64x64"
    assert out[2].split() == ["config:", "dataset", "dubai;", "classes", "building,", "land,", "road,", "vegetation,", "water"]
    assert f"{fresh['params_training']:,}  (with aux heads)" in out[3]

    assert main(["info", "--weights", str(export), "--size", "64x64", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["kind"] == "eval-only .safetensors weights" and held["aux_heads"] is False
    assert held["params_file"] == fresh["params_inference"] and held["class_names"][0] == "building"
    assert {k: held[k] for k in fresh} == fresh and "iteration" not in held

    assert main(["info", "--weights", str(plain), "--size", "64x64", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["kind"].startswith("plain state_dict") and held["arch"] == "bisenetv2" and held["num_classes"] == 5
    assert "dataset" not in held and held["params_file"] == fresh["params_training"]


@pytest.mark.parametrize("argv, expected", [
    (["--weights", "no/such/file.pth"], "bisenet info: error: no/such/file.pth: weights file not found"),
    (["--weights", __file__], f"bisenet info: error: {__file__}: not a PyTorch weights file"),
    (["--weights", __file__, "--arch", "bisenetv1"],
     f"bisenet info: error: --weights {__file__}: arch and class count come from the file; drop --arch/--num-classes"),
])
def test_info_weights_mistakes_are_one_line_exit_2(argv, expected, capsys) -> None:
    assert main(["info", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err


def test_repeated_set_flags_add_up_instead_of_the_last_one_winning() -> None:
    from bisenet.cli import build_parser
    from bisenet.cli.train import overrides_from_args

    args = build_parser().parse_args(["train", "c.yaml", "--set", "train.batch_size=2", "train.eval_interval=0",
                                      "--set", "augment.crop_size=[64,64]"])
    assert [str(o) for o in overrides_from_args(args)][-3:] == ["train.batch_size=2", "train.eval_interval=0",
                                                                 "augment.crop_size=[64,64]"]


@pytest.mark.parametrize("root", ["/data/run #2", "2024", "on", "/data/x: y"])
def test_train_flags_take_strings_as_they_are_not_as_yaml(root) -> None:
    # --data-root went through YAML: "#" started a comment, "2024" and "on" became an int and a bool.
    from bisenet.cli import build_parser
    from bisenet.cli.train import overrides_from_args
    from bisenet.config import load_config

    args = build_parser().parse_args(["train", "c.yaml", "--data-root", root, "--device", "cpu", "--lr", "1e-5"])
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "bisenetv2_dubai.yaml", overrides_from_args(args))
    assert (cfg.data.root, cfg.train.device, cfg.train.lr) == (root, "cpu", 1e-5)


def test_every_flag_of_every_command_has_help() -> None:
    # eval --split and bench --warmup/--iters showed in --help with nothing beside them.
    from bisenet.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    bare = [f"{name} {action.option_strings[-1]}" for name, sub in commands.items() for action in sub._actions
            if action.option_strings and not action.help]
    assert bare == []


CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "bisenetv2_dubai.yaml")


@pytest.mark.parametrize("argv, expected", [
    (["--set", "train.lr=0.1", CONFIG], f"no CONFIG: '{CONFIG}' was read as part of --set (it takes every word after "
                                        f"it); put the config first: bisenet train {shlex.quote(CONFIG)} --set ..."),
    (["--lr", "0.1", "--resume", CONFIG], f"no CONFIG: '{CONFIG}' was read as part of --resume (it takes an optional "
                                          f"PATH); put the config first: bisenet train {shlex.quote(CONFIG)} --resume [PATH]"),
    ([], "no CONFIG given; pass a YAML config first: bisenet train CONFIG [flags], "
         "e.g. bisenet train configs/bisenetv2_dubai.yaml"),
])
def test_train_says_which_flag_took_the_config(argv, expected, capsys) -> None:
    # argparse said only "the following arguments are required: config", with CONFIG right there.
    assert main(["train", *argv]) == 2
    assert capsys.readouterr().err == f"bisenet train: error: {expected}\n"

