"""Evaluation: inference protocols (ss, ssc, msf, mscf), the official Cityscapes metric, reports."""

from bisenet.evaluation.evaluate import evaluate, evaluate_model
from bisenet.evaluation.inference import MODES, Protocol, build_runner, infer, labels_from_scores, make_protocol, predict_labels
from bisenet.evaluation.metrics import all_reduce_confusion, compute_metrics, new_confusion, update_confusion
from bisenet.evaluation.report import format_table, write_report
from bisenet.evaluation.scoring import score_predictions, train_to_raw_lut

__all__ = [
    "MODES",
    "Protocol",
    "all_reduce_confusion",
    "build_runner",
    "compute_metrics",
    "evaluate",
    "evaluate_model",
    "format_table",
    "infer",
    "labels_from_scores",
    "make_protocol",
    "new_confusion",
    "predict_labels",
    "score_predictions",
    "train_to_raw_lut",
    "update_confusion",
    "write_report",
]
