"""bisenet: real-time semantic segmentation with BiSeNetV1 and BiSeNetV2."""

from bisenet.checkpoint import load_model
from bisenet.config import Config, load_config
from bisenet.models import build_model

__version__ = "0.1.0"

__all__ = ["Config", "build_model", "load_config", "load_model", "__version__"]
