"""Datasets, label maps, list files and data tools (`bisenet data ...`)."""

from bisenet.data.dataset import EpochSampler, SegmentationDataset, build_dataset, validate_split

__all__ = ["EpochSampler", "SegmentationDataset", "build_dataset", "validate_split"]
