"""Training batches augmented on the training device (`data.cache: device`).

The whole decoded train split is copied to the device once (uint8: CamVid's 367 frames are
190 MB) and each batch is cut there: one `grid_sample` per sample does scale, crop and flip,
then colour jitter and normalisation are a few tensor ops. On a GPU this removes the CPU
workers, which at 720x960 crops manage about 50 samples/s per core, from the critical path.

The augmentation is the one `transforms.train_sample` does on the CPU, drawn from the same
`dataset.crop_params(epoch, index)`, so runs stay a pure function of (seed, iteration) and
resume exactly. Pixels differ from the CPU path by interpolation rounding only (OpenCV
interpolates uint8 in fixed point): a level or two in a few pixels, and a label flip at an
exact half-pixel tie.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from bisenet.data.dataset import SegmentationDataset
from bisenet.data.transforms import CropParams, crop_axis

_LUMA_RGB = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the CPU path


class DeviceBatches:
    """Iterates (images N x 3 x H x W float32, labels N x H x W int64) on `device`, one batch per step."""

    def __init__(self, dataset: SegmentationDataset, keys: Iterable[tuple[int, int]], batch_size: int,
                 device: torch.device | str) -> None:
        if dataset.augment is None:
            raise ValueError("DeviceBatches augments training data: build the dataset of the train split")
        self.dataset, self.keys, self.batch_size = dataset, keys, batch_size
        self.device = torch.device(device)
        self.images: list[torch.Tensor] = []  # 3 x h x w uint8 RGB
        self.labels: list[torch.Tensor] = []  # h x w uint8 train ids (mapped once: nearest sampling commutes)
        dataset.preload()  # decodes and checks every pair on threads, into the dataset's memory cache
        for index in range(len(dataset)):
            image_bgr, label, table = dataset.decoded(index)
            rgb = torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1).contiguous()
            mapped = torch.from_numpy(label if table is None else table[label])
            self.images.append(rgb.to(self.device))
            self.labels.append(mapped.to(self.device))
        self.mean = torch.tensor(dataset.mean, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(dataset.std, device=self.device).view(3, 1, 1)
        self.luma = torch.tensor(_LUMA_RGB, device=self.device).view(3, 1, 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch: list[tuple[int, int]] = []
        for key in self.keys:
            batch.append(key)
            if len(batch) == self.batch_size:
                yield self._batch(batch)
                batch = []
        if batch:
            yield self._batch(batch)

    def _batch(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample(epoch, index) for epoch, index in keys]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def sample(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented sample: normalised 3 x H x W float32 image and H x W int64 label."""
        image, label = self.images[index], self.labels[index]
        h, w = image.shape[-2:]
        params = self.dataset.crop_params(epoch, index, (h, w))
        ch, cw = self.dataset.augment.crop_size
        grid, (r0, r1), (c0, c1) = self._grid(params, (h, w), (ch, cw))
        # uint8 results, as OpenCV's warp gives: jitter then sees the same integer levels.
        crop = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[0].round_().clamp_(0, 255)
        lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="border",
                            align_corners=False)[0, 0].long()
        out = self._jitter_normalise(crop, params, (slice(r0, r1), slice(c0, c1)))
        if (r0, r1, c0, c1) != (0, ch, 0, cw):
            # Padding is pixel value 0 before normalisation and the ignore index in the label.
            keep = torch.zeros(ch, cw, dtype=torch.bool, device=self.device)
            keep[r0:r1, c0:c1] = True
            out = torch.where(keep, out, -self.mean / self.std)
            lab = lab.masked_fill(~keep, self.dataset.ignore_index)
        return out, lab

    def _grid(self, params: CropParams, source_hw: tuple[int, int], crop_hw: tuple[int, int]):
        """grid_sample's normalised source coordinates for every crop pixel, and the valid rows and columns."""
        (h, w), (ch, cw) = source_hw, crop_hw
        ay, by, (y0, _), rows = crop_axis(h, params.scaled_hw[0], ch, params.offset[0], False)
        ax, bx, (x0, _), cols = crop_axis(w, params.scaled_hw[1], cw, params.offset[1], params.flip)
        ys = ay * torch.arange(ch, device=self.device, dtype=torch.float64) + (by + y0)
        xs = ax * torch.arange(cw, device=self.device, dtype=torch.float64) + (bx + x0)
        # align_corners=False: pixel centre u sits at (2u + 1) / size - 1.
        gy = ((2 * ys + 1) / h - 1).float().view(ch, 1).expand(ch, cw)
        gx = ((2 * xs + 1) / w - 1).float().view(1, cw).expand(ch, cw)
        return torch.stack([gx, gy], dim=-1)[None], rows, cols

    def _jitter_normalise(self, crop: torch.Tensor, p: CropParams, valid: tuple[slice, slice]) -> torch.Tensor:
        """Saturation (rounded to uint8 levels), brightness, contrast about the valid crop's mean luma, normalise."""
        if p.saturation != 1.0:
            grey = (crop * self.luma).sum(0, keepdim=True)
            crop = ((1.0 - p.saturation) * grey + p.saturation * crop).round_().clamp_(0, 255)
        v = crop
        if p.brightness != 1.0 or p.contrast != 1.0:
            v = (crop * p.brightness).clamp(0, 255)
            if p.contrast != 1.0:
                mean_luma = (crop[:, valid[0], valid[1]].mean(dim=(1, 2)).view(3, 1, 1) * self.luma).sum()
                luma = torch.clamp(mean_luma * p.brightness, max=255.0)
                v = ((v - luma) * p.contrast + luma).clamp(0, 255)
        return (v / 255.0 - self.mean) / self.std
