"""Datasets, label maps, list files and data tools (`bisenet data ...`)."""

from bisenet.data.dataset import SegmentationDataset, build_dataset, validate_split

__all__ = ["SegmentationDataset", "build_dataset", "validate_split"]
