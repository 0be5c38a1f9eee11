"""Python API misuse gets one-line bisenet errors naming the argument and the fix, not a TypeError later:
Segmenter, colorize, SegmentationDataset and load_config (the CLI's own refusals are in test_cli.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import bisenet
from bisenet.config import load_config
from bisenet.data import SegmentationDataset
from bisenet.data.catalog import DUBAI
from bisenet.data.lists import read_list
from bisenet.errors import BisenetError, ConfigError, DataError
from bisenet.predict import Segmenter, colorize

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dubai"
SHIPPED = REPO / "weights" / "bisenetv2_camvid.safetensors"
CAMVID = REPO / "configs" / "bisenetv2_camvid.yaml"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_segmenter_refuses_a_path_for_the_model_and_says_from_checkpoint(weights) -> None:
    # Segmenter("weights.pt", 11) was accepted and failed at the first predict with a TypeError.
    for path in (str(weights), weights):
        with pytest.raises(BisenetError, match=r"^Segmenter: got the path .*v2\.pth' as the model; load weights "
                                               r"with Segmenter\.from_checkpoint\(path\)") as info:
            Segmenter(path, 5)
        _one_line(info)
    with pytest.raises(BisenetError, match=r"^Segmenter: the model must be an nn\.Module .*got dict; for a weights "
                                           r"file use Segmenter\.from_checkpoint\(path\)"):
        Segmenter({"weight": 1}, 5)
    with pytest.raises(BisenetError, match=r"^Segmenter: info must be a LabelInfo .* or None, got dict$"):
        Segmenter(bisenet.build_model("bisenetv2", 5), 5, {"class_names": list("abcde")})


@pytest.mark.parametrize("classes", ["5", 0, -3, 5.0, True, None])
def test_segmenter_num_classes_must_be_a_positive_int(classes) -> None:
    # Segmenter(model, "5") said "the model predicts 5 classes but num_classes is 5".
    model = bisenet.build_model("bisenetv2", 5)
    with pytest.raises(ConfigError, match=rf"^Segmenter: num_classes must be a positive int, got {classes!r} "
                                          rf"\({type(classes).__name__}\); pass e\.g\. num_classes=5$"):
        Segmenter(model, classes)
    assert Segmenter(model, np.int64(5)).num_classes == 5  # numpy ints are ints


def test_shipped_weights_warn_in_python_as_the_cli_notes_the_scale_their_config_scores_at() -> None:
    # from_checkpoint ran CamVid weights at scale 1 silently; `bisenet predict` says configs/bisenetv2_camvid.yaml
    # scores at eval.scale 2. Python now gets the same note as a warning (the scale run is unchanged).
    from bisenet.predict import EvalScaleWarning

    with pytest.warns(EvalScaleWarning, match=r"bisenetv2_camvid\.yaml scores at eval\.scale 2: pass "
                                              r"config='.*bisenetv2_camvid\.yaml' \(or scale=2\) to predict as it "
                                              r"was scored$"):
        seg = Segmenter.from_checkpoint(SHIPPED)
    assert seg.protocol.scales == (1.0,) and "camvid preset" in seg.info.source
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalScaleWarning)  # as scored: nothing to say
        assert Segmenter.from_checkpoint(SHIPPED, scale=2).protocol.scales == (2.0,)
        assert Segmenter.from_checkpoint(SHIPPED, config=CAMVID).protocol.scales == (2.0,)
        assert Segmenter.from_checkpoint(SHIPPED, mode="msf").protocol.mode == "msf"  # eval.scale is single-scale's


@pytest.mark.parametrize("palette, problem", [
    ([[1, 2, 3], [4, 5]], r"the palette's colours differ in length; give each one as \[R, G, B\]"),
    ([[1, 2], [3, 4], [5, 6]], r"the palette has shape \(3, 2\); pass N colours as \[R, G, B\] each"),
    ([1, 2, 3, 4], r"the palette has shape \(4,\); pass N colours"),
    (np.zeros((2, 4)), r"the palette has shape \(2, 4\)"),
    ([], r"the palette has no colours; pass one \[R, G, B\] per class"),
    ([[0, 0, 300]], r"the palette holds 300; colour values must lie in 0-255"),
    ([[0, -1, 0]], r"the palette holds -1; colour values must lie in 0-255"),
    ([[0.5, 0.2, 0.1]], r"the palette holds fractional values; colours are whole numbers 0-255 "
                        r"\(0-1 floats: \(palette \* 255\)\.round\(\)\)"),
    ([["a", "b", "c"]], r"the palette holds <U1 values; colours are \[R, G, B\] numbers 0-255 \(a '#RRGGBB'"),
    ("#ff0000", r"the palette is str; pass a list of \[R, G, B\] colours 0-255"),
    (None, r"the palette is NoneType; pass a list"),
    ({0: [1, 2, 3]}, r"the palette is dict; pass a list"),
])
def test_colorize_refuses_a_bad_palette_in_one_line(palette, problem) -> None:
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    with pytest.raises(BisenetError, match=rf"^colorize: {problem}") as info:
        colorize(mask, palette)
    _one_line(info)
    nested = colorize(mask, [list(c) for c in DUBAI.palette]).tolist()  # what palettes were taken still are
    for palette in (DUBAI.palette, np.array(DUBAI.palette, float), [v for c in DUBAI.palette for v in c],
                    torch.tensor(DUBAI.palette)):
        assert colorize(mask, palette).tolist() == nested
    assert nested[1][1] == [0, 0, 0]  # ids without a colour (ignore) stay black


@pytest.fixture(scope="module")
def pairs():
    """The bundled Dubai example's val list, parsed."""
    return read_list(EXAMPLE / "val.txt", EXAMPLE)


@pytest.mark.parametrize("field, value, expected", [
    ("num_classes", "6", r"num_classes must be a positive int, e\.g\. cfg\.num_classes, got str '6'"),
    ("num_classes", 0, r"num_classes must be a positive int"),
    ("ignore_index", 255.0, r"ignore_index must be an int in \[num_classes, 255\] \(6-255\), e\.g\. 255, got float"),
    ("ignore_index", 3, r"ignore_index must be an int in \[num_classes, 255\]"),
    ("label_map", [(0, 1)], r"label_map must be a dict of raw label value -> train id ints, or None, got list"),
    ("mean", 0.5, r"mean must be 3 numbers \(RGB, on \[0, 1\] pixels\), e\.g\. cfg\.data\.mean, got float 0\.5"),
    ("std", (0.2, 0.2), r"std must be 3 numbers"),
    ("std", (0.2, 0.0, 0.2), r"std must be 3 numbers above 0"),
    ("augment", True, r"augment must be an AugmentConfig \(e\.g\. cfg\.augment\) or None for no augmentation; "
                      r"build_dataset\(config, split, augment=True\) takes a bool, got bool True"),
    ("seed", "0", r"seed must be an int, got str '0'"),
    ("cache", "gpu", r"cache must be 'none', 'memory' or 'disk', got str 'gpu'"),
    ("dataset", "dubai", r"dataset must be a DatasetInfo \(catalog\.preset_labels\(name, label_map\)\) or None"),
])
def test_dataset_arguments_are_refused_naming_each_one(pairs, field, value, expected) -> None:
    # Raw TypeErrors (or silently wrong samples: augment=True, float ids) came from deep inside.
    with pytest.raises(DataError, match=rf"^SegmentationDataset: {expected}") as info:
        SegmentationDataset(pairs, **{"num_classes": 6, field: value})
    _one_line(info)


def test_dataset_given_a_list_path_says_how_to_read_it(pairs) -> None:
    for given in (EXAMPLE / "val.txt", str(EXAMPLE / "val.txt")):
        with pytest.raises(DataError, match=r"^SegmentationDataset: pairs is the path '.*val\.txt'; it takes a "
                                            r"PairList: bisenet\.data\.lists\.read_list\(list_file, root\), or "
                                            r"build_dataset\(config, split\)"):
            SegmentationDataset(given, 6)
    with pytest.raises(DataError, match=r"^SegmentationDataset: pairs must be a PairList .*, got list"):
        SegmentationDataset(list(pairs.entries), 6)
    dataset = SegmentationDataset(pairs, np.int64(6), augment=None)  # what the checks let through still works
    image, label = dataset[0]
    assert image.shape[0] == 3 and label.shape == image.shape[1:] and set(label.unique().tolist()) <= {*range(6), 255}


@pytest.mark.parametrize("given, shown", [(None, "None"), (5, "int 5"), ([1], r"list \[1\]"),
                                          (b"configs/x.yaml", "bytes b'configs/x.yaml'")])
def test_load_config_says_what_it_takes(given, shown) -> None:
    # load_config(5) was a TypeError from pathlib; load_config(None) a complaint about data.num_classes.
    with pytest.raises(ConfigError, match=rf"^load_config takes a YAML path, a dict or a Config, got {shown}; pass "
                                          r"e\.g\. 'configs/bisenetv2_dubai\.yaml'") as info:
        load_config(given)
    _one_line(info)
    assert load_config(None, {"data.dataset": "camvid"}).num_classes == 11  # None with overrides: the defaults
    assert "dict" in load_config.__doc__
