"""Config errors name where the bad value came from: the YAML file, a `--set` item or a train flag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bisenet.cli import main
from bisenet.config import load_config
from bisenet.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bisenetv2_dubai.yaml"


def test_a_bad_value_in_the_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(CONFIG.read_text().replace("lr: 0.002", "lr: abc"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.lr = 'abc' is not a valid number")):
        load_config(path)
    # The same file with a good --set value still names the file for the file's own mistake.
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.lr = 'abc'")):
        load_config(path, ["train.seed=1", "train.max_iters=5"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr=abc"], "--set train.lr=abc: train.lr = 'abc' is not a valid number"),
    (["train.nosuchkey=1"], "--set train.nosuchkey=1: unknown key 'train.nosuchkey'"),
    (["trian.lr=1"], "--set trian.lr=1: unknown key 'trian' (did you mean 'train'?)"),
    (["train.lr.x=1"], "--set train.lr.x=1: cannot set train.lr.x: 'lr' is not a section"),
    (["augment.crop_size=[0,64]"], "--set augment.crop_size=[0,64]: augment.crop_size = 0x64 must be positive"),
    (["data.num_classes=300"], "--set data.num_classes=300: data.ignore_index = 255 must lie in [num_classes, 255]"),
    (["model.arch=v3"], "--set model.arch=v3: model.arch = 'v3' is not one of bisenetv1, bisenetv2"),
    (["train.aux_weights=[1, 2"], "--set train.aux_weights=[1, 2: the value is not valid YAML"),
    ({"train.lr": "abc"}, "override train.lr='abc': train.lr = 'abc' is not a valid number"),
])
def test_a_bad_override_names_the_override_not_the_file(overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, overrides)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(("flags", "message"), [
    (["--set", "train.lr=abc"], "--set train.lr=abc: train.lr = 'abc' is not a valid number"),
    (["--set", "train.nosuchkey=1"], "--set train.nosuchkey=1: unknown key 'train.nosuchkey'; valid keys: max_iters,"),
    (["--lr", "-1"], "--lr -1.0: train.lr must be positive, got -1.0"),
    (["--batch-size", "1"], "--batch-size 1: train.batch_size must be at least 2 per process"),
    (["--lr", "0.1", "--set", "train.lr=-2"], "--set train.lr=-2: train.lr must be positive"),  # --set wins
])
def test_train_cli_names_the_flag_that_set_a_bad_value(flags, message, tmp_path, capsys) -> None:
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bisenet train: error: {message}")
    assert str(CONFIG) not in err[0] and not (tmp_path / "run").exists()
