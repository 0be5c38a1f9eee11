"""Evaluate a model on a split: batches of same-size images, one confusion matrix on the device."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from bisenet.config import Config
from bisenet.data.catalog import DATASETS
from bisenet.data.decode import image_size
from bisenet.data.dataset import ignore_stop_signals, loader_batches, make_loader, too_many_workers_note
from bisenet.errors import BisenetError, DataError, make_dir
from bisenet.evaluation.arguments import check_arguments, check_types, eval_config
from bisenet.evaluation.inference import (Protocol, build_runner, check_scale_list, check_window, check_workers,
                                          config_protocol, eval_settings, infer, labels_from_scores, make_protocol)
from bisenet.evaluation.metrics import all_reduce_confusion, compute_metrics, confusion_fields, new_confusion, update_confusion
from bisenet.evaluation.outputs import check_report_inputs, dataset_inputs, prediction_names, prediction_paths  # noqa: F401
from bisenet.evaluation.scoring import train_to_raw_lut
from bisenet.runtime import keep_freed_memory


class _Indexed(Dataset):
    """Yields (index, image, label) so that each prediction can be named after its image."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        image, label = self.dataset[index]
        return index, torch.as_tensor(image), torch.as_tensor(label)


def size_batches(dataset: Any, indices: list[int], batch_size: int) -> list[list[int]]:
    """Split indices into batches whose images share one size (so they stack into one tensor)."""
    if batch_size <= 1 or not hasattr(dataset, "samples"):
        return [[i] for i in indices]
    groups: dict[tuple[int, int], list[int]] = {}
    for i in indices:
        groups.setdefault(image_size(Path(dataset.samples[i][0])), []).append(i)
    return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def evaluate_model(
    model: nn.Module | Any,
    dataset: Any,
    device: str | torch.device = "cpu",
    mode: str = "ss",
    protocol: Protocol | None = None,
    batch_size: int = 1,
    workers: int | None = None,
    class_names: list[str] | None = None,
    save_pred_dir: str | os.PathLike | None = None,
    raw_lut: np.ndarray | None = None,
    distributed: bool = False,
    progress: bool = False,
) -> dict:
    """Score an eval-mode model (or backend) on a val SegmentationDataset; returns the metrics dict.

    With `distributed=True` every rank must call it: each scores a shard and the confusion
    matrix is all-reduced (the training loop does this under torchrun). With False it scores the
    whole split in this process.
    """
    device = torch.device(device)
    protocol = protocol or make_protocol(mode)
    num_classes = int(dataset.num_classes)
    indices = list(range(len(dataset)))
    if distributed and dist.is_available() and dist.is_initialized():
        indices = indices[dist.get_rank()::dist.get_world_size()]  # strided shard: no padded duplicates
    batches = size_batches(dataset, indices, batch_size)
    workers = _default_workers() if workers is None else check_workers(workers)
    loader = make_loader(
        _Indexed(dataset), batch_sampler=batches, num_workers=workers if len(batches) > 1 else 0,
        pin_memory=device.type == "cuda", worker_init_fn=ignore_stop_signals,  # a stop signal is the trainer's to handle
    )
    out_dir = Path(save_pred_dir) if save_pred_dir is not None else None
    if out_dir is not None:
        paths = prediction_paths(dataset, out_dir)  # refuses paths of the list's own images and labels
        for folder in sorted({path.parent for path in paths}):
            make_dir(folder, "--save-pred")
    confusion = new_confusion(num_classes, device)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as writer, torch.inference_mode(), loader_batches(loader) as loaded:
        pending, noted = [], False
        for index, images, labels in tqdm(loaded, desc=f"eval {protocol.mode}", unit="batch", total=len(loader),
                                          disable=not progress):
            if not noted and protocol.crop is not None:
                noted = _note_whole_image_crop(protocol, tuple(images.shape[-2:]))
            scores = infer(model, images.to(device, non_blocking=True), protocol)
            if scores.shape[1] != num_classes:
                raise BisenetError(
                    f"the model predicts {scores.shape[1]} classes but the dataset has {num_classes}; "
                    "check the weights and data.num_classes"
                )
            preds = labels_from_scores(scores)
            update_confusion(confusion, preds, labels)
            if out_dir is not None:
                # uint8 suffices: the config keeps num_classes <= ignore_index <= 255.
                for i, pred in zip(index.tolist(), preds.to(torch.uint8).cpu().numpy()):
                    image = raw_lut[pred] if raw_lut is not None else pred
                    pending.append(writer.submit(_write_png, paths[i], image))
        for job in pending:
            job.result()  # surface write errors
    if distributed:  # never when called on rank 0 alone: the other ranks would not join the collective
        all_reduce_confusion(confusion)
    result = compute_metrics(confusion, class_names)
    result.update(
        mode=protocol.mode, protocol=protocol.describe(),
        images=len(dataset) if distributed else len(indices), seconds=round(time.perf_counter() - start, 3),
        **confusion_fields(confusion),
    )
    return result


def _note(message: str) -> None:
    """A one-line note on stderr, from rank 0 only under torchrun."""
    import sys

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        tqdm.write(f"note: {message}", file=sys.stderr)  # above the progress bar, not inside it


def _note_whole_image_crop(protocol: Protocol, size: tuple[int, int]) -> bool:
    """Say (and return True) when the sliding window covers the whole image at every scale: one window, no sliding."""
    scaled = [(round(size[0] * s), round(size[1] * s)) for s in protocol.scales]
    if not all(h <= protocol.crop[0] and w <= protocol.crop[1] for h, w in scaled):
        return False
    plain = {"ssc": "ss", "mscf": "msf"}[protocol.mode]
    at = ", ".join(f"{h}x{w}" for h, w in scaled)
    _note(f"the {protocol.mode} crop {protocol.crop[0]}x{protocol.crop[1]} covers the whole image ({at} HxW at scale "
          f"{','.join(f'{s:g}' for s in protocol.scales)}), so {protocol.mode} equals {plain} here; "
          "pass a --crop smaller than the image for sliding windows")
    return True


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
        raise BisenetError(f"could not write {path}; check that the folder is writable")


def evaluate(
    config: Config | str | os.PathLike | dict | None,
    weights_or_model: str | os.PathLike | nn.Module | Any,
    mode: str | None = None,
    split: str = "val",
    data_root: str | os.PathLike | None = None,
    list_file: str | os.PathLike | None = None,
    scales: list[float] | None = None,
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    flip: bool | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    scale: float | None = None,
    backend: str = "eager",
    save_pred_dir: str | os.PathLike | None = None,
    cityscapes_ids: bool = False,
    json_path: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    backend_options: dict | None = None,
    calibration: str | os.PathLike | None = None,
    calibration_images: int = 8,
) -> dict:
    """Evaluate weights (a file or a model) on a split with ss/ssc/msf/mscf; optional JSON and plots.

    config None reads the config stored in the weights file (a path then, not a module).
    Returns {"mIoU", "IoU": {class: value or None}, "pixel_acc", "fwIoU", "mode", "images", ...}.
    """
    check_types(weights_or_model, flip=flip, save_pred_dir=save_pred_dir, json_path=json_path, data_root=data_root,
                list_file=list_file, calibration=calibration)
    crop, stride, scales = check_window(crop, "crop"), check_window(stride, "stride"), check_scale_list(scales)
    workers = None if workers is None else check_workers(workers)
    cfg = eval_config(config, weights_or_model)
    check_arguments(mode or cfg.eval.mode, scales, scale, crop, stride, batch_size, calibration_images)
    if json_path is not None:  # before the run, so a bad path does not cost its results
        from bisenet.evaluation.report import check_report_path

        check_report_path(json_path, "json_path")
        inputs = [("weights", weights_or_model), ("config", config)]
        check_report_inputs(json_path, [(kind, path) for kind, path in inputs if isinstance(path, (str, os.PathLike))],
                            all_inputs=False)  # the rest once the list is read
    from bisenet.deploy.backends import CALIBRATED

    if backend in CALIBRATED and not (backend_options or {}).get("calibration"):
        backend_options = {**(backend_options or {}), **_calibration_options(cfg, calibration, calibration_images,
                                                                                data_root, crop, backend)}
    elif backend in CALIBRATED:  # the caller's calibration images: normalised as this config's data
        backend_options = {"mean": cfg.data.mean, "std": cfg.data.std, **backend_options}
    with _torchrun_group(device) as run_device:
        return _evaluate(cfg, weights_or_model, mode=mode, split=split, data_root=data_root, list_file=list_file,
                         scales=scales, scale=scale, crop=crop, stride=stride, flip=flip, batch_size=batch_size,
                         device=run_device, backend=backend, save_pred_dir=save_pred_dir, cityscapes_ids=cityscapes_ids,
                         json_path=json_path, workers=workers, progress=progress, backend_options=backend_options)


def _calibration_options(cfg: Config, folder: str | os.PathLike | None, count: int, data_root: Any,
                         crop: tuple[int, int] | None, backend: str = "int8") -> dict:
    """int8 calibration: `folder`'s images, else `count` images spread over the train split, at the crop size."""
    from bisenet.data import validate_split
    from bisenet.data.dataset import split_pairs
    from bisenet.deploy.images import read_image

    size = crop or cfg.eval.crop_size or cfg.augment.crop_size
    if folder is not None:
        return {"calibration": folder, "size": size, "mean": cfg.data.mean, "std": cfg.data.std, "limit": count}
    try:
        validate_split(cfg, "train", data_root)
    except BisenetError as exc:  # said as a train-split problem, it reads as if eval itself needed that split
        raise type(exc)(f"--backend {backend} calibrates on {count} train-split images without --calibration, "
                        f"but: {exc}; or pass --calibration DIR (a folder of images like the ones scored)") from None
    entries = split_pairs(cfg, "train", data_root).entries
    step = max(1, len(entries) // max(1, count))
    images = [read_image(entry.image, size, cfg.data.mean, cfg.data.std) for entry in entries[::step][:count]]
    return {"calibration": images, "limit": count}


@contextlib.contextmanager
def _torchrun_group(device: str | torch.device) -> Iterator[str | torch.device]:
    """Under torchrun, join the process group (one shard per process) and leave it afterwards.

    Leaving matters: gloo aborts at exit ("terminate called without an active exception")
    when a process group is still open.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from bisenet.engine.distributed import cleanup, init_distributed

        joined = init_distributed(str(device)).device
        try:
            yield joined
        finally:
            cleanup()
    else:
        yield device


def _evaluate(cfg: Config, weights_or_model: Any, *, mode: str | None, split: str, data_root: Any, list_file: Any,
              scales: list[float] | None, scale: float | None, crop: tuple[int, int] | None, stride: tuple[int, int] | None,
              flip: bool | None, batch_size: int | None, device: str | torch.device, backend: str,
              save_pred_dir: Any, cityscapes_ids: bool, json_path: Any, workers: int | None, progress: bool,
              backend_options: dict | None) -> dict:
    from bisenet.data import build_dataset, validate_split
    from bisenet.engine.distributed import rank_device

    if not (isinstance(device, torch.device) and device.index is not None):  # a joined rank's device stays as it is
        # 'cuda' (or 'auto') in a process group means this rank's GPU, as in training
        device = rank_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    ec = cfg.eval
    mode = mode or ec.mode
    # The one place the config becomes a protocol: predict (Segmenter) runs the same for the same config.
    protocol = config_protocol(eval_settings(cfg), mode, scales=scales, flip=flip, crop=crop, stride=stride,
                               scale=scale)
    if mode in ("msf", "mscf") and ec.scale != 1:  # documented as ss/ssc's, but easily read as the base of every mode
        based = " ".join(f"{s * ec.scale:g}" for s in protocol.scales)
        _note(f"eval.scale {ec.scale:g} applies to ss/ssc; {mode} scales multiply the input size (for a base of "
              f"{ec.scale:g}, pass --scales {based})")
    if mode in ("msf", "mscf") and flip is None and ec.flip is False:  # runs before 12-04 stored false as the default
        _note(f"eval.flip is false in the config: {mode} runs without flip (pass --flip, or set eval.flip: null, "
              "for the protocol's flip)")
    if workers is not None and too_many_workers_note(workers, "--workers"):
        _note(too_many_workers_note(workers, "--workers") + " (workers= in Python)")
    raw_lut = None
    if cityscapes_ids:
        if save_pred_dir is None:
            raise BisenetError("--cityscapes-ids writes label-id PNGs: also pass --save-pred DIR (save_pred_dir= in Python)")
        if not cfg.data.label_map:
            raise BisenetError(f"--cityscapes-ids needs a label map (data.label_map); dataset {cfg.data.dataset} has none")
        if cfg.data.dataset != "cityscapes" and cfg.data.label_map != DATASETS["cityscapes"].label_map:
            # Another dataset's label map would write its own raw ids (CamVid's equal its train ids), silently.
            raise BisenetError(f"--cityscapes-ids writes Cityscapes label ids for its benchmark server, but dataset "
                               f"{cfg.data.dataset} is not Cityscapes: drop it (--save-pred writes train ids)")
        raw_lut = train_to_raw_lut(cfg.data.label_map, cfg.num_classes)
    validate_split(cfg, split, data_root, list_file)
    dataset = build_dataset(cfg, split, data_root, list_file, augment=False)  # whole images, even for --split train
    for note in dataset.list_notes:  # e.g. which of two same-named lists a bare list_file read
        _note(note.removeprefix("note: "))
    # Before any model loads or runs: neither output may replace a file that this evaluation reads.
    predictions = prediction_paths(dataset, save_pred_dir) if save_pred_dir is not None else []
    if json_path is not None:
        check_report_inputs(json_path, dataset_inputs(dataset) + [("prediction", path) for path in predictions])
    # A caller's module goes back to its own train/eval mode of each submodule afterwards.
    modes = {m: m.training for m in weights_or_model.modules()} if isinstance(weights_or_model, nn.Module) else {}
    try:
        result = _run(cfg, weights_or_model, dataset, protocol, device=device, backend=backend, batch_size=batch_size,
                      workers=workers, save_pred_dir=save_pred_dir, raw_lut=raw_lut, progress=progress,
                      backend_options=backend_options)
    finally:
        for module, training in modes.items():
            module.training = training
    if result["pixels"] == 0:  # every metric n/a: a wrong label encoding, or an unlabelled split
        unlabelled = (f"{dataset.list_file}: its labels hold only the ignore index (data.ignore_index "
                      f"{cfg.data.ignore_index}), so no pixel was scored")
        if save_pred_dir is None:
            raise DataError(f"{unlabelled}; check the label encoding (raw ids vs train ids), data.label_map, and that "
                            f"the list is of dataset {cfg.data.dataset} (an unlabelled split such as Cityscapes test "
                            "has nothing to score: pass --save-pred DIR to write its predictions)")
        _note(f"{unlabelled}: metrics n/a (an unlabelled split such as Cityscapes test?); the predictions are written")
    # The list scored: `split` names only the config's list, not one given with --list.
    result.update(split=split if list_file is None else None, list=str(dataset.list_file), backend=backend,
                  device=str(device))
    distributed = dist.is_available() and dist.is_initialized()
    if json_path is not None and (not distributed or dist.get_rank() == 0):
        from bisenet.evaluation.report import write_report

        write_report(result, json_path)
    return result


def _run(cfg: Config, weights_or_model: Any, dataset: Any, protocol: Protocol, *, device: torch.device, backend: str,
         batch_size: int | None, workers: int | None, save_pred_dir: Any, raw_lut: np.ndarray | None, progress: bool,
         backend_options: dict | None) -> dict:
    """Load (or take) the model, wrap it in its backend and score `dataset`; the metrics dict."""
    from bisenet.checkpoint import check_arch, load_model

    if isinstance(weights_or_model, (str, os.PathLike)):
        model = load_model(weights_or_model, map_location=device)
        if getattr(model, "num_classes", cfg.num_classes) != cfg.num_classes:
            raise BisenetError(
                f"{weights_or_model}: the weights predict {model.num_classes} classes but the config's dataset "
                f"{cfg.data.dataset} has {cfg.num_classes}; pass the matching config"
            )
    else:
        model = weights_or_model
        if isinstance(model, nn.Module):
            model = model.to(device).eval()
    check_arch(model, cfg.model.arch, weights_or_model)
    runner = build_runner(model, backend, device, **(backend_options or {})) if isinstance(model, nn.Module) else model
    if device.type == "cpu":  # after the build, whose export and calibration memory goes back to the system
        keep_freed_memory()  # eager inference 20% faster here: no page faults on each image's activations
    distributed = dist.is_available() and dist.is_initialized()
    return evaluate_model(
        runner, dataset, device, protocol=protocol, batch_size=batch_size or cfg.eval.batch_size,
        workers=min(cfg.train.workers, _default_workers()) if workers is None else workers,
        class_names=cfg.data.class_names, save_pred_dir=save_pred_dir, raw_lut=raw_lut,
        distributed=distributed, progress=progress and (not distributed or dist.get_rank() == 0),
    )
