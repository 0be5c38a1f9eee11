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


@pytest.mark.parametrize(("text", "line", "key"), [
    ("data:\n  dataset: custom\n  num_classes: 5\ntrain:\n  lr: 0.01\ntrain:\n  max_iters: 3\n", 6, "train"),
    ("data:\n  dataset: custom\n  num_classes: 5\n  num_classes: 6\n", 4, "num_classes"),
])
def test_a_key_given_twice_is_refused_not_last_one_wins(text, line, key, tmp_path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line {line}: duplicate key '{key}'")):
        load_config(path)


def test_yaml_merge_keys_still_load_and_may_be_overridden(tmp_path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("data:\n  dataset: custom\n  num_classes: 3\n  label_map:\n    <<: {1: 0, 2: 1, 3: 1}\n    3: 2\n")
    assert load_config(path).data.label_map == {1: 0, 2: 1, 3: 2}


def test_an_unquoted_hex_colour_in_a_flow_list_says_that_hash_starts_a_comment(tmp_path) -> None:
    path = tmp_path / "hex.yaml"
    path.write_text("data:\n  num_classes: 2\n  palette: [#3C1098, #8429F6]\ntrain:\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: line 3 is not valid YAML: '#' starts a YAML comment, which cuts "
                               "'palette: [#3C1098' short; quote the colour ('#3C1098') or write it as [R, G, B]")


def test_an_unquoted_hex_colour_says_that_hash_starts_a_comment(tmp_path) -> None:
    path = tmp_path / "hex.yaml"
    path.write_text("data:\n  dataset: custom\n  num_classes: 2\n  palette:\n    - #3C1098\n    - [1, 2, 3]\n")
    with pytest.raises(ConfigError, match="quoted '#RRGGBB': '#' starts a YAML comment"):
        load_config(path)


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


def test_load_config_leaves_the_callers_nested_dict_alone() -> None:
    base = {"data": {"dataset": "custom", "num_classes": 3}, "train": {"lr": 0.01}}
    assert load_config(base, ["data.num_classes=4", "train.lr=0.5"]).num_classes == 4
    assert base == {"data": {"dataset": "custom", "num_classes": 3}, "train": {"lr": 0.01}}
    cfg = load_config(base)
    assert cfg.num_classes == 3 and cfg.train.lr == 0.01
    # A refused override does not stick in the dict, to fail (blamed on the dict) every later load.
    with pytest.raises(ConfigError, match=re.escape("--set data.ignore_index=2: data.ignore_index = 2 must lie in")):
        load_config(base, ["data.ignore_index=2"])
    assert load_config(base).data.ignore_index == 255


def test_a_single_override_string_is_one_override() -> None:
    assert load_config(CONFIG, "train.lr=0.1").train.lr == 0.1
    with pytest.raises(ConfigError, match=re.escape("--set train.lr: expected key.path=value")):
        load_config(CONFIG, "train.lr")
    with pytest.raises(ConfigError, match=re.escape("override ('train.lr', 0.1): expected a 'key.path=value' string")):
        load_config(CONFIG, [("train.lr", 0.1)])


def test_a_section_override_sets_its_keys_and_keeps_the_rest_of_the_section() -> None:
    # {"train": {"lr": 0.01}} used to replace the file's train section: max_iters, optimizer... back to defaults.
    base = load_config(CONFIG)
    for overrides in ({"train": {"lr": 0.01}}, ["train={lr: 0.01}"]):
        cfg = load_config(CONFIG, overrides)
        assert cfg.train.lr == 0.01 and cfg.train.max_iters == base.train.max_iters == 450
        assert cfg.train.optimizer == base.train.optimizer and cfg.augment == base.augment
    cfg = load_config(CONFIG, {"data": {"label_map": {0: 1}}, "augment": {"flip": False}})
    assert cfg.data.label_map == {0: 1} and cfg.augment.crop_size == base.augment.crop_size  # a map is a value
    with pytest.raises(ConfigError, match=re.escape("override train={'lrr': 0.01}: unknown key 'train.lrr'")):
        load_config(CONFIG, {"train": {"lrr": 0.01}})
    for empty in (["train="], ["train=null"], {"train": None}):  # would reset the whole section to defaults
        with pytest.raises(ConfigError, match=re.escape("a section takes {key: value} (e.g. train={max_iters: ...})")):
            load_config(CONFIG, empty)


def test_a_section_left_empty_in_the_file_takes_overrides(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("data:\n  dataset: dubai\naugment:\n")  # every augment key commented out
    for override in ("augment={flip: false}", "augment.flip=false"):
        assert load_config(tmp_path / "c.yaml", [override]).augment.flip is False


@pytest.mark.parametrize(("override", "message"), [
    ("train.ohem_thresh=0", "train.ohem_thresh = 0.0 must lie in (0, 1]"),  # -ln(0): a math domain error at the start
    ("train.ohem_thresh=1.5", "train.ohem_thresh = 1.5 must lie in (0, 1]"),
    ("train.ohem_min_kept_fraction=2", "train.ohem_min_kept_fraction = 2.0 must lie in [0, 1]"),
    ("data.std=[0.2, 0, 0.2]", "data.std = [0.2, 0.0, 0.2] must be 3 values in (0, 1]"),
    ("data.mean=[123.7, 116.3, 103.5]", "data.mean = [123.7, 116.3, 103.5] must be 3 values in [0, 1], on pixels "
                                        "scaled to [0, 1] (0-255 values? divide them by 255)"),
    ("data.std=[58.4, 57.1, 57.4]", "(0-255 values? divide them by 255)"),
    ("data.label_map={0: 0, 128: 300}", "data.label_map 128: 300 must map to a class id in [0, 5) or to the ignore index 255"),
    ("data.label_map={128: -1}", "data.label_map 128: -1 must map to a class id in [0, 5)"),
    ("model.pretrained=imagenet", "model.pretrained is for bisenetv1's ResNet-18; bisenetv2 trains from scratch"),
    ("train.device=gpu", "train.device = 'gpu' is not a device; pass auto, cpu or cuda[:N]"),
    ("train.lr=.nan", "train.lr = nan must be a finite number"),  # torch: a bare "Invalid learning rate" traceback
    ("data.mean=[0.5, .inf, 0.5]", "data.mean[1] = inf must be a finite number"),
    ("train.momentum=.nan", "train.momentum = nan must be a finite number"),
    ("train.momentum=1", "train.momentum = 1.0 must be in [0, 1), e.g. 0.9"),
    ("train.poly_power=-1", "train.poly_power = -1.0 must be 0 or more"),  # else a complex lr once warm-up ends
    ("train.warmup_ratio=2", "train.warmup_ratio = 2.0 must be in (0, 1]"),
    ("train.weight_decay=-0.1", "train.weight_decay = -0.1 must be 0 or more"),
    ("train.seed=-1", "train.seed = -1 must lie in [0, 2**32)"),  # numpy's traceback mid-start, a half-made work dir
    ("train.seed=20000000000000", "train.seed = 20000000000000 must lie in [0, 2**32)"),
    ("eval.crop_size=[50, 70]", "eval.crop_size = 50x70 must be multiples of 32 (the network's stride; crops enter it "
                                "as they are): use 64x96"),
    # As eval.scale: a typo such as 100 asked for tens of GB mid-run; [] silently ran the six defaults.
    ("eval.scales=[0.5, 100]", "eval.scales = [0.5, 100.0] has 100, outside (0, 8]; give factors the input is resized"),
    ("eval.scales=[]", "eval.scales = [] is empty"),
    # A negative jitter was numpy's "high - low < 0" traceback at the first sample; above 1, black crops.
    ("augment.brightness=-1", "augment.brightness = -1.0 must lie in [0, 1]"),
    ("augment.saturation=2", "augment.saturation = 2.0 must lie in [0, 1]"),
])
def test_values_that_would_crash_or_mislead_later_are_refused_at_load(override, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, [override])
    assert str(info.value).startswith(f"--set {override}: ") and message in str(info.value)


def test_values_at_the_edge_of_the_ranges_load() -> None:
    cfg = load_config(CONFIG, ["train.ohem_thresh=1", "data.mean=[0, 0.5, 1]", "data.std=[1, 1, 1]",
                               "data.label_map={0: 0, 255: 4, 7: 255, -1: 255}"])  # -1: Cityscapes' license plate
    assert cfg.train.ohem_thresh == 1 and cfg.data.label_map == {0: 0, 255: 4, 7: 255, -1: 255}


def test_false_on_an_optional_setting_means_none_but_true_is_still_refused() -> None:
    # `model.pretrained: false` is how people write "no pretrained weights"; it was "not a valid string".
    cfg = load_config(CONFIG, ["model.pretrained=false", "eval.crop_size=false"])
    assert cfg.model.pretrained is None and cfg.eval.crop_size is None
    with pytest.raises(ConfigError, match="model.pretrained = True is not a valid string"):
        load_config(CONFIG, ["model.pretrained=true"])
    # Where null means "the default" (1.0 each, the preset's map), false would silently mean the opposite.
    with pytest.raises(ConfigError, match="train.aux_weights = False is not a valid list"):
        load_config(CONFIG, ["train.aux_weights=false"])


def test_eval_flip_is_the_modes_default_when_absent_and_off_when_false() -> None:
    # Its default was false, so an explicit false could not be told from "not set" and msf flipped anyway.
    assert load_config(CONFIG).eval.flip is None
    assert load_config(CONFIG, ["eval.flip=false"]).eval.flip is False
    assert load_config(CONFIG, ["eval.flip=true"]).eval.flip is True


def test_a_hash_inside_a_comment_is_not_blamed_for_another_lines_yaml_error(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  arch: bisenetv2   # see upstream issue [#123]\ndata:\n  num_classes: 5\n   bad: 1\n")
    with pytest.raises(ConfigError, match=r"line 5 is not valid YAML \(mapping values are not allowed here\)"):
        load_config(path)


def test_another_class_count_on_a_named_dataset_says_to_set_dataset_custom() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, ["data.num_classes=6"])
    assert str(info.value) == ("--set data.num_classes=6: data.class_names (the dubai preset's) has 5 names but "
                               "num_classes is 6; for other classes set data.dataset=custom (and data.class_names, or none)")
    # With names of its own the preset's palette is still too short: the same fix, not "leave it out".
    names = "data.class_names=[a, b, c, d, e, f]"
    for extra in ([names], [names, "data.palette=null"]):
        with pytest.raises(ConfigError, match=re.escape("data.palette (the dubai preset's) has 5 colours for 6 classes; "
                                                        "for other classes set data.dataset=custom")):
            load_config(CONFIG, ["data.num_classes=6", *extra])
    assert load_config(CONFIG, ["data.num_classes=6", "data.dataset=custom"]).num_classes == 6


def test_integer_keys_written_as_strings_and_hex_colours_load() -> None:
    # JSON (a .safetensors export's stored config) keeps every key as a string: the label map must survive it.
    cfg = load_config({"data": {"dataset": "custom", "num_classes": 2, "label_map": {"0": 0, "255": 1, "-1": 255},
                                "palette": ["#3C1098", [1, 2, 3]]}})
    assert cfg.data.label_map == {0: 0, 255: 1, -1: 255}
    assert cfg.data.palette == [[60, 16, 152], [1, 2, 3]]


@pytest.mark.parametrize(("override", "message"), [
    ("data.label_map={'a': 0}", "data.label_map['a'] key = 'a' is not a valid integer"),
    ("data.palette=['red', [1, 2, 3]]", "data.palette[0] = 'red' is not a valid list"),  # the item, not the whole list
])
def test_a_bad_item_inside_an_optional_list_or_mapping_is_named(override, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--set {override}: {message}")):
        load_config({"data": {"dataset": "custom", "num_classes": 2}}, [override])


@pytest.mark.parametrize(("raw", "message"), [
    ({"label_map": {7: 0, "7": 1}}, "data.label_map has the key 7 twice (as a number and as a string)"),
    ({"palette": ["#3C109", [1, 2, 3]]}, "data.palette[0] = '#3C109' is not a valid list (a colour is [R, G, B] or "
                                         "'#RRGGBB' with six hex digits)"),
])
def test_a_key_given_as_number_and_string_or_a_short_hex_colour_is_refused(raw, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"data": {"dataset": "custom", "num_classes": 2, **raw}})


@pytest.mark.parametrize(("value", "message"), [
    ("/tmp/my data #1", "--set data.root=/tmp/my data #1: YAML reads '#1' as a comment and drops it (the value would "
                        "be '/tmp/my data'); to keep the '#', quote the value: --set 'data.root=\"/tmp/my data #1\"' "
                        "(or drop the comment)"),
    ("#1", "--set data.root=#1: YAML reads '#1' as a comment and drops it (the value would be empty); to keep the '#', "
           "quote the value: --set 'data.root=\"#1\"' (or drop the comment)"),
])
def test_an_override_value_that_yaml_cuts_at_a_comment_is_refused(value, message, tmp_path, capsys) -> None:
    # It was read as "/tmp/my data": another folder, which may exist.
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, [f"data.root={value}"])
    assert str(info.value) == message
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "run"), "--set", f"data.root={value}"]) == 2
    assert capsys.readouterr().err == f"bisenet train: error: {message}\n"
    # The fix the message gives works; a '#' inside a word is no comment.
    assert load_config(CONFIG, [f'data.root="{value}"']).data.root == value
    assert load_config(CONFIG, ["data.root=/tmp/run#1"]).data.root == "/tmp/run#1"


def test_a_comment_after_a_list_override_says_to_drop_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG, ["train.aux_weights=[1, 1, 1, 1]  # heavier"])
    assert str(info.value).endswith("(the value would be '[1, 1, 1, 1]'); drop the comment: "
                                    "--set 'train.aux_weights=[1, 1, 1, 1]'")


@pytest.mark.parametrize(("arch", "weights", "heads"), [
    ("bisenetv2", [1, 1], "4 aux heads (aux2, aux3, aux4, aux5_4); give 4 values"),
    ("bisenetv1", [1, 1, 1, 1], "2 aux heads (conv_out16, conv_out32); give 2 values"),
])
def test_aux_weights_of_another_length_than_the_aux_heads_are_refused_at_load(arch, weights, heads, tmp_path,
                                                                               capsys) -> None:
    path = tmp_path / "aux.yaml"
    path.write_text(f"model:\n  arch: {arch}\ndata:\n  dataset: dubai\ntrain:\n  aux_weights: {weights}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: train.aux_weights has {len(weights)} values but {arch} has {heads}, "
                               "or null for 1.0 each")
    # Named as --set, before the data is looked at (this root does not exist) and before a work dir is made.
    assert main(["train", str(CONFIG), "--work-dir", str(tmp_path / "run"), "--data-root", str(tmp_path / "none"),
                 "--set", f"model.arch={arch}", f"train.aux_weights={weights}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bisenet train: error: --set train.aux_weights={weights}: train.aux_weights has ")
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()
    right = [1.0] * (6 - len(weights))
    assert load_config(path, [f"train.aux_weights={right}"]).train.aux_weights == right
