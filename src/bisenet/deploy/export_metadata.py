"""What an ONNX or .safetensors export carries besides the graph: the run's config (names, palette, mean/std)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from bisenet.errors import BisenetError


def export_config(model: nn.Module, config: Any = None, stored: dict | None = None, preset: bool = True,
                  weights: str | os.PathLike = "the weights") -> tuple[dict | None, str]:
    """The config an export carries (names, palette, mean/std), resolved as `predict` does, and a line saying whence.

    `config` (a Config or YAML path) wins, then the checkpoint's `stored` config, then (with `preset`) the
    dataset preset with the model's class count; with none of these nothing is stored rather than a
    generated palette. A .safetensors export passes preset=False: a stored config there is taken as the
    run's by eval (its scale, lists), and predict finds the same preset from the class count anyway.
    """
    from bisenet.checkpoint import model_arch
    from bisenet.config import Config, load_config, to_dict
    from bisenet.data.catalog import DATASETS
    from bisenet.predict import label_info

    num_classes = int(model.num_classes)
    if config is not None:
        from bisenet.checkpoint import check_arch, check_classes

        named = "the config" if isinstance(config, Config) else f"--config {config}"
        config = config if isinstance(config, Config) else load_config(config)
        check_arch(model, config.model.arch, weights)  # a config says what the weights are: it must fit them
        check_classes(model, config.num_classes, weights, named)
    info = label_info(num_classes, config, stored)
    said = f"metadata: class names, palette and mean/std from {info.source}"
    if config is not None:
        return to_dict(config), said
    if stored and info.source == "the checkpoint's stored config":
        return stored, said
    if not preset:
        return None, f"metadata: none stored (predict finds {info.source} from the class count, as for the source)"
    preset_info = next((d for d in DATASETS.values() if d.num_classes == num_classes), None)
    if preset_info is None:
        return None, (f"metadata: no class names, palette or mean/std stored (no config, and no dataset preset has "
                      f"{num_classes} classes); pass --config CONFIG to add them")
    # What predict would use for these weights, so the exported file no longer depends on that guess.
    data = {"dataset": preset_info.name, "num_classes": num_classes, "class_names": info.class_names,
            "palette": info.palette, "mean": info.mean, "std": info.std}
    return {"model": {"arch": model_arch(model)}, "data": data, "eval": {"crop_size": list(info.crop)}}, said


def _fitting_config(model: nn.Module, config: Any) -> dict | None:
    """`config` as a dict, refused (one line) when it names another arch or class count than `model`'s."""
    if config is None:
        return None
    if not isinstance(config, dict):  # a Config or a YAML path: export_config checks it against the model
        return export_config(model, config, weights="the model")[0]
    from bisenet.checkpoint import model_arch

    arch = (config.get("model") or {}).get("arch")
    classes = (config.get("data") or {}).get("num_classes")
    if arch is not None and model_arch(model) is not None and arch != model_arch(model):
        raise BisenetError(f"config= is for a {arch} model but the model is a {model_arch(model)}; "
                           "pass the config it was trained with")
    if isinstance(classes, int) and classes != getattr(model, "num_classes", classes):
        raise BisenetError(f"config= has {classes} classes but the model predicts {model.num_classes}; "
                           "pass the config it was trained with")
    return config


def config_metadata(config: dict | None) -> dict[str, str]:
    """What a deployment needs from a run's config, as JSON strings: mean/std (RGB, [0, 1] pixels), classes, scale.

    The scale (eval.scale) is the factor images are resized by before the network.
    """
    import json

    from bisenet.data.catalog import palette_for

    data = dict((config or {}).get("data") or {})
    classes = data.get("num_classes")
    if isinstance(classes, int) and classes > 0:  # a custom config without names or palette: what predict draws with
        data["class_names"] = data.get("class_names") or [str(i) for i in range(classes)]
        data["palette"] = palette_for(data.get("palette"), classes)
    props = {key: json.dumps(data[key]) for key in ("mean", "std", "class_names", "palette") if data.get(key)}
    scale = ((config or {}).get("eval") or {}).get("scale")
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):  # CamVid scores at 2: 68.1 against 62.8 mIoU at 1
        props["scale"] = json.dumps(float(scale))
    return props


def _add_metadata(path: str, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(path)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"bisenet.{key}", value
    onnx.save(model, path)
