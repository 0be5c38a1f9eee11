"""`SegmentationDataset` over an `image,label` list, plus `build_dataset` / `validate_split`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bisenet.config import AugmentConfig, Config, load_config
from bisenet.data.cache import DecodedCache
from bisenet.data.catalog import DatasetInfo, build_lut, invalid_values, preset_labels
from bisenet.data.decode import FileProblem, label_value_fix, pair_problem, size_mismatch
from bisenet.data.lists import ListEntry, PairList, missing_files, read_given_list, read_list, resolve_list_path
from bisenet.data.transforms import CropParams, eval_sample, normalise_tables, sample_params, train_sample
from bisenet.errors import DataError, check_paths

SPLITS = ("train", "val", "test")
MAX_LISTED = 5  # problems quoted in one error message


class SampleError(DataError):
    """A bad sample. Keeps its message on one line even when re-raised by a DataLoader worker."""

    def __init__(self, message: str) -> None:
        # DataLoader re-raises worker errors as type(exc)("Caught ... Original Traceback ...");
        # the original one-line message is the traceback's last line.
        if message.startswith("Caught ") and "Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def _single_threaded_opencv() -> None:
    """One sample per core: DataLoader workers are the parallelism, not OpenCV's thread pool.

    This must happen in the parent, before workers fork: a child that inherits a live
    OpenCV pthreads pool deadlocks when it touches the pool (even to resize it).
    """
    if cv2.getNumThreads() > 1:
        cv2.setNumThreads(0)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers leave SIGTERM/SIGINT to the main process.

    Schedulers and Ctrl-C signal the whole process group; a worker that died of it would make
    the main process raise mid-step (or mid-evaluation) instead of writing its checkpoint.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def loader_batches(loader: Iterable) -> Iterator[Iterator]:
    """Iterate `loader`; its worker processes end with the block, also when the block raises.

    The workers ignore SIGTERM (`ignore_stop_signals`), so they must be told to stop: an error
    mid-epoch otherwise leaves them waiting for work, and Python's exit, which terminates daemonic
    children with SIGTERM and then joins them, hangs for good.
    """
    with _no_worker_count_warning():
        batches = iter(loader)
    try:
        yield batches
    finally:
        shut_down = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator
        if shut_down is not None:
            shut_down()


@contextlib.contextmanager
def _no_worker_count_warning() -> Iterator[None]:
    # torch's three-line "This DataLoader will create N worker processes" for more workers than CPUs,
    # given at construction and at each iteration: train and eval say it once, in too_many_workers_note's line.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        yield


def make_loader(dataset: Any, **options: Any) -> DataLoader:
    """torch's DataLoader(dataset, **options), without its warning for more workers than CPUs (ours is one line)."""
    with _no_worker_count_warning():
        return DataLoader(dataset, **options)


def too_many_workers_note(workers: int, setting: str) -> str | None:
    """A one-line note when `workers` data processes exceed the CPUs this process may use; else None."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= cpus:
        return None
    return (f"{setting} {workers} is more than the {cpus} CPUs here: the workers compete with the model for them "
            f"(set it to {cpus} or fewer)")


def dataset_inputs(dataset: Any) -> list[tuple[str, Path]]:
    """The list file, then each image and label that `dataset` reads (what no output may overwrite)."""
    samples = getattr(dataset, "samples", None) or []
    listed = getattr(dataset, "list_file", None)
    return ([("list file", Path(listed))] if listed is not None else []) + \
        [("image", Path(image)) for image, _ in samples] + [("label", Path(label)) for _, label in samples]


def spread_indices(total: int, count: int) -> list[int]:
    """Up to `count` indices of `total` items, evenly spread from the first to the last."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int)).tolist()


def uses_train_ids(label_path: Path, label_map: dict[int, int] | None) -> bool:
    """True for a `*_labelTrainIds.png` (Cityscapes' converter; mmsegmentation's for COCO-Stuff too) read under a
    named dataset's own raw-id map: the file holds train ids already, so that map is skipped.

    A label map of the user's own (say, 19 train ids into 7 categories) applies to every file.
    """
    from bisenet.data.catalog import DATASETS

    presets = [info.label_map for info in DATASETS.values() if info.label_map]
    return label_map in presets and label_path.name.lower().endswith("trainids.png")


class SegmentationDataset(Dataset):
    """Pairs from a list file -> (3xHxW float32 normalised RGB, HxW int64 train ids).

    Index with an int (uses `self.epoch`) or with `(epoch, index)`. Training randomness is
    a pure function of (seed, epoch, index): any worker count gives the same samples.
    """

    def __init__(
        self,
        pairs: PairList,
        num_classes: int,
        ignore_index: int = 255,
        label_map: dict[int, int] | None = None,
        mean: tuple[float, float, float] | list[float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] | list[float] = (0.229, 0.224, 0.225),
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: str = "none",
        cache_dir: str | Path | None = None,
        dataset: DatasetInfo | None = None,
    ) -> None:
        """`dataset`: the named dataset (catalog.preset_labels) whose raw label ids each label must hold."""
        _check_arguments(pairs, num_classes, ignore_index, label_map, mean, std, augment, seed, cache, dataset)
        if pairs.problems:
            raise DataError(_join(pairs.problems))
        self.list_file = pairs.path
        self.list_notes = list(pairs.notes)  # e.g. which of two same-named lists was read: for the caller to print
        self.root = pairs.root
        self.lines = [e.line for e in pairs.entries]
        self.samples: list[tuple[Path, Path]] = [(e.image, e.label) for e in pairs.entries]
        self.names = [image.stem for image, _ in self.samples]
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dataset = dataset
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache = DecodedCache(cache, cache_dir)
        self.mean, self.std = tuple(mean), tuple(std)
        self._tables = normalise_tables(mean, std)
        lut = build_lut(label_map, ignore_index)
        # Cityscapes lists may point at *_labelTrainIds.png: those skip the labelIds map.
        self._luts = [None if uses_train_ids(label, label_map) else lut for _, label in self.samples]
        self._checked: set[int] = set()  # per process: labels already verified in full
        _single_threaded_opencv()

    def __setstate__(self, state: dict) -> None:
        # DataLoader workers started with "spawn" unpickle the dataset: same rule there.
        self.__dict__.update(state)
        _single_threaded_opencv()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for int keys (tuple keys carry their own)."""
        self.epoch = epoch

    def preload(self, workers: int = 4) -> None:
        """Decode every pair into the cache now (cache memory/disk), checking each one.

        Call it before creating DataLoader workers: forked workers then share the parent's
        memory cache copy-on-write instead of each decoding everything again.
        """
        if self.cache.mode == "none":
            return
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # OpenCV decoding releases the GIL
            list(pool.map(self._load, range(len(self.samples))))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, (tuple, list)) else (self.epoch, key)
        index = int(index)
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        image, label = self._load(index)
        if self.augment is None:
            img, lab = eval_sample(image, label, self._luts[index], self._tables)
        else:
            params = self.crop_params(epoch, index, image.shape[:2])
            img, lab = train_sample(image, label, params, self.augment.crop_size, self._luts[index], self.ignore_index,
                                    self._tables)
        # numpy astype: torch .to(int64) spins up intra-op threads and is ~30x slower here
        return torch.from_numpy(img), torch.from_numpy(lab.astype(np.int64))

    def crop_params(self, epoch: int, index: int, source_hw: tuple[int, int]) -> CropParams:
        """The augmentation drawn for sample `index` in `epoch` (a pure function of seed, epoch, index)."""
        aug = self.augment
        assert aug is not None, "crop_params is for training datasets"
        seq = np.random.SeedSequence([int(self.seed), int(epoch), int(index)])
        return sample_params(np.random.default_rng(seq), source_hw, aug.crop_size, aug.scale_range,
                             aug.flip, aug.brightness, aug.contrast, aug.saturation)

    def decoded(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Sample `index` decoded and checked: BGR uint8 HxWx3 image, raw HxW label, its raw -> train id table."""
        image, label = self._load(index)
        return image, label, self._luts[index]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded image and raw label, verified (size, values) whenever the label is read from its file."""
        image_path, label_path = self.samples[index]
        where = f"{self.list_file} line {self.lines[index]}"
        entry = ListEntry(self.lines[index], image_path, label_path)
        try:
            image = self.cache.image(image_path)
        except FileProblem as exc:  # worded as `data check` words it: one message code for every tool
            raise SampleError(f"{where}: {pair_problem(exc, entry, 'image')}") from None
        try:
            label, fresh = self.cache.label_decoded(label_path)
        except FileProblem as exc:
            raise SampleError(f"{where}: {pair_problem(exc, entry, 'label')}") from None
        mismatch = size_mismatch(image_path, image.shape, label_path, label.shape)  # as `data check` words it
        if mismatch:
            raise SampleError(f"{where}: {mismatch}")
        if fresh or index not in self._checked:  # a file decoded again may have been rewritten mid-run
            lut = self._luts[index]
            bad = invalid_values(label, lut, self.num_classes, self.ignore_index,
                                 fix=label_value_fix(label_path),
                                 dataset=None if lut is None else self.dataset)  # train-id files hold no raw ids
            if bad:
                raise SampleError(f"{where}: label {label_path} {bad}")
            self._checked.add(index)
        return image, label


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_arguments(pairs: object, num_classes: object, ignore_index: object, label_map: object, mean: object,
                     std: object, augment: object, seed: object, cache: object, dataset: object) -> None:
    """SegmentationDataset's arguments, each refused in one line naming it (Python callers get no type checks)."""
    def bad(name: str, value: object, expected: str) -> DataError:
        return DataError(f"SegmentationDataset: {name} must be {expected}, got {type(value).__name__} "
                         f"{repr(value)[:80]}")

    if isinstance(pairs, (str, os.PathLike)):  # the likeliest slip: the list file's path itself
        raise DataError(f"SegmentationDataset: pairs is the path {os.fspath(pairs)!r}; it takes a PairList: "
                        "bisenet.data.lists.read_list(list_file, root), or build_dataset(config, split) for a "
                        "config's split")
    if not isinstance(pairs, PairList):
        raise bad("pairs", pairs, "a PairList (bisenet.data.lists.read_list(list_file, root), or use "
                  "build_dataset(config, split))")
    if not _is_int(num_classes) or num_classes < 1:  # type: ignore[operator]
        raise bad("num_classes", num_classes, "a positive int, e.g. cfg.num_classes")
    if not _is_int(ignore_index) or not num_classes <= ignore_index <= 255:  # type: ignore[operator]
        raise bad("ignore_index", ignore_index, f"an int in [num_classes, 255] ({num_classes}-255), e.g. 255")
    if label_map is not None and not (isinstance(label_map, dict)
                                      and all(_is_int(k) and _is_int(v) for k, v in label_map.items())):
        raise bad("label_map", label_map, "a dict of raw label value -> train id ints, or None")
    for name, values in (("mean", mean), ("std", std)):
        if (isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)) or len(values) != 3
                or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)):
            raise bad(name, values, "3 numbers (RGB, on [0, 1] pixels), e.g. cfg.data." + name)
    if any(v <= 0 for v in std):  # type: ignore[union-attr]
        raise bad("std", std, "3 numbers above 0")
    if augment is not None and not isinstance(augment, AugmentConfig):  # build_dataset's augment is a bool
        raise bad("augment", augment, "an AugmentConfig (e.g. cfg.augment) or None for no augmentation; "
                  "build_dataset(config, split, augment=True) takes a bool")
    if not _is_int(seed):
        raise bad("seed", seed, "an int")
    if not isinstance(cache, str) or cache not in ("none", "memory", "disk"):
        raise bad("cache", cache, "'none', 'memory' or 'disk'")
    if dataset is not None and not isinstance(dataset, DatasetInfo):
        raise bad("dataset", dataset, "a DatasetInfo (catalog.preset_labels(name, label_map)) or None")


def _config(config: Config | str | Path | dict) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def with_absolute_data_paths(cfg: Config) -> Config:
    """`cfg` with data.root, and any list found from the current directory, as absolute paths.

    A training run stores its config (config.yaml, checkpoints): resume, eval and predict then find
    the data from any directory, not only from the one the run started in.
    """
    root = Path(os.path.abspath(Path(cfg.data.root).expanduser()))  # not resolve(): keep the user's symlinks
    changes = {"root": str(root)}
    for key in ("train_list", "val_list", "test_list"):
        name = getattr(cfg.data, key)
        if name is None or Path(name).expanduser().is_absolute():
            continue
        found = resolve_list_path(name, root)
        if found.is_file() and not (root / name).is_file():  # found from the cwd, not under the root
            changes[key] = os.path.abspath(found)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def split_pairs(cfg: Config, split: str, data_root: str | Path | None = None,
                list_file: str | Path | None = None) -> PairList:
    """Parse the list file of `split` (data.root / data.<split>_list, or the overrides)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    check_paths(data_root=data_root, list_file=list_file)
    root = Path(data_root if data_root is not None else cfg.data.root).expanduser()
    if list_file is not None:  # a miss names the --list given, not data.<split>_list
        return read_given_list(list_file, root)
    name = {"train": cfg.data.train_list, "val": cfg.data.val_list, "test": cfg.data.test_list}[split]
    if name is None:
        raise DataError(f"no list for the {split} split: set data.{split}_list in the config or pass --list FILE (list_file= in Python)")
    return read_list(resolve_list_path(name, root), root)


def build_dataset(config: Config | str | Path | dict, split: str, data_root: str | Path | None = None,
                  list_file: str | Path | None = None, augment: bool | None = None) -> SegmentationDataset:
    """The dataset of one split; train gets augmentation, val/test none, unless `augment` says otherwise."""
    cfg = _config(config)
    pairs = split_pairs(cfg, split, data_root, list_file)
    data = cfg.data
    return SegmentationDataset(
        pairs,
        num_classes=cfg.num_classes,
        ignore_index=data.ignore_index,
        label_map=data.label_map,
        mean=data.mean,
        std=data.std,
        augment=cfg.augment if (split == "train" if augment is None else augment) else None,
        seed=cfg.train.seed,
        # `device` keeps the decoded train split in memory here; DeviceBatches copies it to the device.
        cache="memory" if data.cache == "device" else data.cache,
        dataset=preset_labels(data.dataset, data.label_map),
    )


def validate_split(config: Config | str | Path | dict, split: str, data_root: str | Path | None = None,
                   list_file: str | Path | None = None, full: bool = False, sample: int = 0) -> None:
    """Raise DataError naming the first problems if a split's list or files are bad.

    The quick check looks for the files; `full` also reads every pair (values, sizes) as
    `data check` does, and `sample` reads that many pairs spread over the list: a wrong class
    count or label encoding shows in any few labels, in a second instead of a whole read.
    """
    cfg = _config(config)
    pairs = split_pairs(cfg, split, data_root, list_file)
    problems = pairs.problems + missing_files(pairs)
    if not problems and (full or sample > 0):
        from bisenet.data.check import check_split

        if not full:
            picked = spread_indices(len(pairs.entries), sample)
            pairs = dataclasses.replace(pairs, entries=[pairs.entries[i] for i in picked])
        problems = check_split(pairs, cfg, preset_labels(cfg.data.dataset, cfg.data.label_map))
    if problems:
        hint = (f"bisenet data check --root {pairs.root} --list {pairs.path} --num-classes {cfg.num_classes}"
                + (f" --dataset {cfg.data.dataset}" if cfg.data.dataset != "custom" else ""))
        raise DataError(_join(problems, hint))


def _join(problems: list[str], hint: str | None = None) -> str:
    """First few problems on one line, with the command that lists them all."""
    text = "; ".join(problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        text += f"; ... {len(problems) - MAX_LISTED} more"
    if hint is not None and len(problems) > 1:
        text += f" (full report: `{hint}`)"
    return text
