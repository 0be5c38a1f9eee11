"""bisenet: real-time semantic segmentation with BiSeNetV1 and BiSeNetV2."""

from bisenet.checkpoint import load_model
from bisenet.config import Config, load_config
from bisenet.data import SegmentationDataset, build_dataset
from bisenet.deploy.export import export_model
from bisenet.engine.train import TrainResult, train
from bisenet.evaluation import evaluate, score_predictions
from bisenet.models import build_model
from bisenet.predict import Segmenter, colorize

__version__ = "0.1.0"

__all__ = [
    "Config",
    "SegmentationDataset",
    "Segmenter",
    "TrainResult",
    "build_dataset",
    "build_model",
    "colorize",
    "evaluate",
    "export_model",
    "load_config",
    "load_model",
    "score_predictions",
    "train",
    "__version__",
]
