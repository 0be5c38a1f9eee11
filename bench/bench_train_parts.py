"""The parts of a BiSeNetV2 training step that bisenet computes differently, against the textbook.

    python bench/bench_train_parts.py [--rounds 10] [--batch-size 4] [--size 512]

Forward + backward of each part at the shapes of a batch-4, 512x512 step, bf16 autocast and
channels_last, glibc keeping freed memory (as `bisenet train` runs on a CPU):
- loss: the five heads' low-resolution logits -> F.interpolate + F.cross_entropy (textbook)
  against `bisenet.losses.pixel_cross_entropy` (upsamples one image at a time, recomputes);
- dropout: the five heads' nn.Dropout(0.1) against `FastDropout`;
- upconv: the four aux heads' nearest x2 + 3x3 ConvBNReLU, upsample-then-conv against
  `NearestUpConvBNReLU` (the conv at the input's resolution).
The two sides of each part alternate call by call; the table gives medians in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from bisenet.losses import pixel_cross_entropy
from bisenet.models.layers import FastDropout, NearestUpConvBNReLU
from bisenet.runtime import keep_freed_memory

# BiSeNetV2's heads: (stride of the head's input, its mid channels, stride of its logits, channels of
# the aux heads' nearest x2 + conv, up_factor ** 2). Dropout sits on the mid channels.
HEADS = {"head": (8, 1024, 8, 0), "aux2": (4, 128, 2, 16), "aux3": (8, 128, 4, 64), "aux4": (16, 128, 8, 256),
         "aux5_4": (32, 128, 16, 1024)}


def _cl(t: torch.Tensor) -> torch.Tensor:
    """bf16 channels_last, as the heads hand their features and logits on under autocast."""
    return t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _backward(make: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A call that runs make() under bf16 autocast and backpropagates a fixed random gradient."""
    grads: list[torch.Tensor] = []

    def call() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = make()
        if not grads:
            grads.append(torch.randn_like(out))
        out.backward(grads[0])

    return call


def parts(batch: int, size: int, classes: int = 19) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """Part name -> (textbook call, bisenet call), each forward + backward over all heads."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (batch, size, size), generator=gen)
    logits = [_cl(torch.randn(batch, classes, size // stride, size // stride, generator=gen)).requires_grad_()
              for _, _, stride, _ in HEADS.values()]

    def loss(fast: bool) -> Callable[[], None]:
        def make() -> torch.Tensor:
            if fast:
                return sum(pixel_cross_entropy(low, labels).mean() for low in logits)
            return sum(F.cross_entropy(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).float(),
                                       labels, reduction="none").mean() for low in logits)
        return _backward(make)

    features = [_cl(torch.randn(batch, mid, size // stride, size // stride, generator=gen)).requires_grad_()
                for stride, mid, _, _ in HEADS.values()]

    def dropout(fast: bool) -> Callable[[], None]:
        drop = (FastDropout if fast else nn.Dropout)(0.1).train()
        return _backward(lambda: sum(drop(f).float().mean() for f in features))

    aux = [(f.detach().clone().requires_grad_(), out) for f, (_, _, _, out) in zip(features, HEADS.values()) if out]
    fused = [NearestUpConvBNReLU(f.shape[1], out).train().to(memory_format=torch.channels_last) for f, out in aux]
    plain = [nn.Sequential(*block) for block in fused]  # the same modules and weights, run upsample-then-conv

    def upconv(fast: bool) -> Callable[[], None]:
        blocks = fused if fast else plain
        return _backward(lambda: sum(block(f).float().mean() for block, (f, _) in zip(blocks, aux)))

    return {name: (build(False), build(True)) for name, build in (("loss", loss), ("dropout", dropout), ("upconv", upconv))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    keep_freed_memory()
    rows = []
    for name, (textbook, ours) in parts(args.batch_size, args.size).items():
        times: tuple[list[float], list[float]] = ([], [])
        for call in (textbook, ours):
            call()  # warm-up
        for _ in range(args.rounds):
            for side, call in enumerate((textbook, ours)):
                start = time.perf_counter()
                call()
                times[side].append((time.perf_counter() - start) * 1000)
        a, b = (statistics.median(t) for t in times)
        rows.append(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    print(f"forward + backward, batch {args.batch_size}, {args.size}x{args.size}, bf16 autocast, channels_last, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}\n")
    print("| part | textbook ms | bisenet ms | ratio |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
