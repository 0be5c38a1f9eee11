"""Facts about the supported datasets: classes, label maps, palettes, normalisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset's label encoding."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per train id
    mean: tuple[float, float, float]  # RGB, on [0, 1] pixels
    std: tuple[float, float, float]
    # raw label value -> train id; values not listed map to the ignore index.
    # None means the raw values already are train ids.
    label_map: dict[int, int] | None = None
    ignore_index: int = 255
    # Every raw value the dataset's label files hold besides the ignore value: the label map's keys plus
    # the ids it ignores (CamVid's void 11). A value outside means another dataset or encoding. None: unchecked.
    raw_ids: range | None = None
    notes: str = field(default="", compare=False)

    @property
    def num_classes(self) -> int:
        """Classes the model predicts (one per name)."""
        return len(self.class_names)


def generated_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """A fixed palette for datasets without an official one: each colour the farthest from those before.

    Candidates are an 8-level RGB grid without the near-black (ignore is drawn black) and the greys
    (data show's ignore checkerboard): 2 classes get red and cyan, 19 stay 110 apart, 171 stay 36 apart.
    Past the grid's 450 colours they repeat.
    """
    levels = np.linspace(0, 255, 8).round()
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[(grid.max(1) >= 100) & (grid.max(1) - grid.min(1) >= 60)]
    distance = np.sqrt(((grid - (255, 0, 0)) ** 2).sum(1))  # start from red
    chosen = [int(distance.argmin())]
    distance = np.sqrt(((grid - grid[chosen[0]]) ** 2).sum(1))
    for _ in range(1, min(n, len(grid))):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.sqrt(((grid - grid[chosen[-1]]) ** 2).sum(1)))
    return tuple((int(r), int(g), int(b)) for r, g, b in grid[[chosen[i % len(chosen)] for i in range(n)]])


def palette_for(palette: list | tuple | None, num_classes: int) -> list[list[int]]:
    """A config's palette as lists of RGB ints, or the generated one when it sets none (custom datasets)."""
    return [list(c) for c in (palette or generated_palette(num_classes))]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CITYSCAPES = DatasetInfo(
    name="cityscapes",
    class_names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    ),
    palette=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
    mean=(0.3257, 0.3690, 0.3223),
    std=(0.2112, 0.2148, 0.2115),
    # Official labelIds -> trainIds; every other id (and license plate, -1) is ignored.
    label_map={7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
               24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18},
    raw_ids=range(34),  # labelIds 0-33; license plate (-1) is not drawn into the PNGs
)

CAMVID = DatasetInfo(
    name="camvid",
    class_names=("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence",
                 "car", "pedestrian", "bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
    # Measured on the SegNet CamVid train split (`bisenet data check`).
    mean=(0.4119, 0.4251, 0.4327),
    std=(0.3071, 0.3116, 0.3072),
    label_map={i: i for i in range(11)},  # 11 = void -> ignore
    raw_ids=range(12),
)

DUBAI = DatasetInfo(
    name="dubai",
    class_names=("building", "land", "road", "vegetation", "water"),
    palette=((60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41)),
    # Measured on the bundled example's train split (examples/dubai).
    mean=(0.4305, 0.4313, 0.4327),
    std=(0.3062, 0.3033, 0.3148),
)

_COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
_COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other",
    "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)
# COCO-Stuff 164k label PNGs hold 0-based ids 0..181; these 11 thing ids are never used.
COCOSTUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
_COCO_USED = [i for i in range(182) if i not in COCOSTUFF_UNUSED_IDS]

COCOSTUFF = DatasetInfo(
    name="cocostuff",
    class_names=_COCO_THINGS + _COCO_STUFF,
    palette=generated_palette(171),
    mean=(0.4696, 0.4464, 0.4072),
    std=(0.2747, 0.2701, 0.2852),
    label_map={raw: train_id for train_id, raw in enumerate(_COCO_USED)},
    raw_ids=range(182),  # the unused ids included: 255 marks unlabelled pixels
)

ADE20K = DatasetInfo(
    name="ade20k",
    class_names=(
        "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
        "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
        "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
        "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
        "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
        "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
        "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
        "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
        "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
        "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
        "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
        "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
        "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
        "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
        "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
        "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
        "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
        "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
    ),
    palette=generated_palette(150),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    label_map={i: i - 1 for i in range(1, 151)},  # 0 = "other" -> ignore
    raw_ids=range(151),
)

DATASETS: dict[str, DatasetInfo] = {
    d.name: d for d in (CITYSCAPES, COCOSTUFF, CAMVID, ADE20K, DUBAI)
}


def build_lut(label_map: dict[int, int] | None, ignore_index: int = 255) -> np.ndarray | None:
    """A 256-entry uint8 lookup table from raw label values to train ids (None: identity)."""
    if label_map is None:
        return None
    lut = np.full(256, ignore_index, dtype=np.uint8)
    for raw, train_id in label_map.items():
        if 0 <= raw < 256:
            lut[raw] = train_id
    return lut


def preset_labels(dataset: str, label_map: dict[int, int] | None) -> DatasetInfo | None:
    """The named dataset whose raw label ids labels must hold: None for custom data or a user's own label map."""
    preset = DATASETS.get(dataset)
    # A user's map (even on a named dataset) may leave values out on purpose: data check notes those instead.
    return preset if preset is not None and preset.raw_ids is not None and label_map == preset.label_map else None


DATASET_FIX = "wrong --dataset / data.dataset, or labels in another encoding?"


def invalid_values(label: np.ndarray, lut: np.ndarray | None, num_classes: int, ignore_index: int = 255,
                   fix: str | None = None, dataset: DatasetInfo | None = None) -> str:
    """'' if every (mapped) label value is a class id or the ignore index, else a one-line reason."""
    import cv2  # local: keep importing the catalog (done by config loading) light

    hist = cv2.calcHist([np.ascontiguousarray(label)], [0], None, [256], [0, 256]).ravel()
    return invalid_counts(hist, lut, num_classes, ignore_index, fix=fix, dataset=dataset)


def invalid_counts(counts: np.ndarray, lut: np.ndarray | None, num_classes: int, ignore_index: int = 255,
                   fix: str | None = None, dataset: DatasetInfo | None = None) -> str:
    """invalid_values on a 256-bin histogram of raw values (pixels per value); `fix` replaces the advice.

    With `dataset` (see preset_labels), raw values that are not among its label ids are reported too:
    its label map would silently send them to the ignore index.
    """
    raw = np.flatnonzero(counts)
    if dataset is not None and dataset.raw_ids is not None:
        known = np.isin(raw, np.asarray(dataset.raw_ids)) | (raw == dataset.ignore_index) | (raw == ignore_index)
        foreign = raw[~known]
        if foreign.size:
            ids = f"{dataset.raw_ids.start}-{dataset.raw_ids.stop - 1}, {dataset.ignore_index}"
            one = foreign.size == 1
            what = f"value {_shown(foreign)}, which is not a label id" if one else \
                f"values {_shown(foreign)}, which are not label ids"
            return f"has {what} of {dataset.name} ({ids}); {fix or DATASET_FIX}"
    mapped = raw if lut is None else lut[raw]
    bad = raw[(mapped >= num_classes) & (mapped != ignore_index)]
    if bad.size == 0:
        return ""
    how = "after the label map " if lut is not None else ""
    fix = fix or f"fix data.num_classes / data.label_map (or --dataset) or remap {'that value' if bad.size == 1 else 'those values'} to {ignore_index}"
    what = f"value {_shown(bad)} outside [0, {num_classes}) {how}that is not" if bad.size == 1 else \
        f"values {_shown(bad)} outside [0, {num_classes}) {how}that are not"
    return f"has {what} the ignore index {ignore_index}; {fix}"


def _shown(values: np.ndarray) -> str:
    """Up to ten values, comma separated."""
    return ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
