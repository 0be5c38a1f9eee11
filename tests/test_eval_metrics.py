"""The official metric: confusion over the whole split, IoU = TP / (TP + FP + FN), nothing added."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from bisenet.evaluation import all_reduce_confusion, compute_metrics, new_confusion, update_confusion
from bisenet.evaluation.report import format_table, write_report
from bisenet.evaluation.scoring import fold_histogram


def confusion(pred, target, num_classes: int) -> torch.Tensor:
    cm = new_confusion(num_classes)
    return update_confusion(cm, torch.as_tensor(pred), torch.as_tensor(target))


def test_perfect_prediction_is_one() -> None:
    target = torch.tensor([[0, 1, 2], [2, 1, 0]])
    result = compute_metrics(confusion(target, target, 3), ["a", "b", "c"])
    assert result["mIoU"] == 1.0 and result["pixel_acc"] == 1.0 and result["fwIoU"] == 1.0
    assert result["IoU"] == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_hand_computed_iou_without_smoothing() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    result = compute_metrics(confusion(pred, target, 3))
    # class 0: TP 2, FN 1, FP 0 -> 2/3; class 1: TP 1, FN 1, FP 1 -> 1/3; class 2: TP 1, FP 1 -> 1/2
    assert result["IoU"] == {"0": pytest.approx(2 / 3), "1": pytest.approx(1 / 3), "2": pytest.approx(1 / 2)}
    assert result["mIoU"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert result["pixel_acc"] == pytest.approx(4 / 6)
    assert result["fwIoU"] == pytest.approx(3 / 6 * 2 / 3 + 2 / 6 * 1 / 3 + 1 / 6 * 1 / 2)
    # A class predicted where it never occurs gets IoU 0 (not None): 0 / FP.
    only_fp = compute_metrics(confusion(torch.tensor([1, 1]), torch.tensor([0, 0]), 2))
    assert only_fp["IoU"] == {"0": 0.0, "1": 0.0}


def test_absent_class_is_none_and_left_out_of_the_mean() -> None:
    target = torch.tensor([0, 0, 1, 1])
    result = compute_metrics(confusion(target, target, 4), list("abcd"))
    assert result["IoU"] == {"a": 1.0, "b": 1.0, "c": None, "d": None}
    assert result["mIoU"] == 1.0
    assert "n/a" in format_table(result)


def test_ignore_pixels_count_nowhere() -> None:
    target = torch.tensor([0, 255, 255, 1, 7])  # 7 >= num_classes: also ignored
    pred = torch.tensor([0, 1, 0, 1, 0])
    cm = confusion(pred, target, 2)
    assert int(cm.sum()) == 2
    result = compute_metrics(cm)
    assert result["IoU"] == {"0": 1.0, "1": 1.0} and result["pixels"] == 2


def test_predictions_that_are_not_a_class_are_false_negatives() -> None:
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 255, 1, 1])  # e.g. an unlabelled pixel in a saved PNG
    result = compute_metrics(confusion(pred, target, 2))
    assert result["IoU"] == {"0": 0.5, "1": 1.0}
    assert result["pixel_acc"] == 0.75


def test_accumulates_over_the_split_not_per_image() -> None:
    cm = new_confusion(2)
    update_confusion(cm, torch.tensor([0, 0]), torch.tensor([0, 0]))  # per image: class 1 absent
    update_confusion(cm, torch.tensor([1, 0]), torch.tensor([1, 1]))
    # Split-level: class 0 TP 2 FP 1 -> 2/3; class 1 TP 1 FN 1 -> 1/2. A mean of per-image IoUs would differ.
    assert compute_metrics(cm)["IoU"] == {"0": pytest.approx(2 / 3), "1": 0.5}


def test_histogram_fold_matches_direct_confusion() -> None:
    rng = np.random.default_rng(0)
    raw_gt = rng.integers(0, 12, size=5000).astype(np.uint8)
    raw_pred = rng.integers(0, 6, size=5000).astype(np.uint8)
    raw_pred[:50] = 255
    lut = np.full(256, 255, dtype=np.uint8)
    lut[[3, 5, 7, 9, 11]] = [0, 1, 2, 3, 4]
    hist = np.bincount((raw_gt.astype(np.uint16) << 8 | raw_pred), minlength=65536)
    folded = fold_histogram(hist, 5, lut)
    direct = confusion(torch.from_numpy(raw_pred.astype(np.int64)), torch.from_numpy(lut[raw_gt].astype(np.int64)), 5)
    assert torch.equal(folded, direct)


def _reduce_one_shard(rank: int, store: str, out: str) -> None:
    """One of two gloo processes: score its own half of the pixels, all-reduce, save what it holds."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        pred, target = ([0, 1], [0, 0]) if rank == 0 else ([2, 2, 1], [2, 1, 1])
        torch.save(all_reduce_confusion(confusion(torch.tensor(pred), torch.tensor(target), 3)), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_two_gloo_processes_shards(tmp_path) -> None:
    # Each rank holds the confusion of its own shard; after the all-reduce both hold the whole split's.
    import torch.multiprocessing as mp

    mp.spawn(_reduce_one_shard, args=(str(tmp_path / "store"), str(tmp_path / "cm")), nprocs=2)
    whole = confusion(torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 0, 2, 1, 1]), 3)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"cm.{rank}", weights_only=True), whole)


def test_report_writes_json_and_two_plots(tmp_path) -> None:
    target = torch.tensor([0, 0, 1, 2, 2])
    result = compute_metrics(confusion(torch.tensor([0, 1, 1, 2, 0]), target, 4), ["road", "car", "sky", "bus"])
    result["confusion_matrix"] = new_confusion(4)[:, :4].tolist()
    written = write_report(result, tmp_path / "out" / "metrics.json")
    assert [p.name for p in written] == ["metrics.json", "metrics_confusion.png", "metrics_iou.png"]
    assert all(p.stat().st_size > 1000 for p in written[1:])
    assert os.path.getsize(written[0]) > 0


def test_report_to_a_folder_is_one_line_and_leaves_no_temp_file(tmp_path) -> None:
    from bisenet.errors import BisenetError

    target = torch.tensor([0, 1])
    result = compute_metrics(confusion(target, target, 2), ["road", "car"])
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(BisenetError, match=r"metrics.json is a folder; pass a file path such as .*metrics.json"):
        write_report(result, tmp_path / "metrics.json")
    (tmp_path / "m_iou.png").mkdir()  # a plot's name taken by a folder: refused before the JSON is written
    with pytest.raises(BisenetError, match=r"its plot .*m_iou.png is a folder"):
        write_report(result, tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_iou.png", "metrics.json"]


def test_plots_are_written_whole_or_not_at_all(tmp_path) -> None:
    # A plot that fails mid-write (full disk, killed process) must not leave a truncated PNG behind.
    from bisenet.errors import BisenetError, write_atomic
    from bisenet.evaluation.report import plot_iou

    def half_then_fail(tmp) -> None:
        tmp.write_bytes(b"\x89PNG\r\n\x1a\n half")
        raise OSError(28, "No space left on device")

    with pytest.raises(BisenetError, match=r"plot .*iou.png: cannot write \(No space left on device\)"):
        write_atomic(tmp_path / "iou.png", half_then_fail, "plot", "iou.png")
    assert list(tmp_path.iterdir()) == []
    target = torch.tensor([0, 1])
    path = plot_iou(compute_metrics(confusion(target, target, 2), ["road", "car"]), tmp_path / "iou.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["iou.png"]
