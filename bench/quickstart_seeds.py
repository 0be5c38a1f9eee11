"""Does a fast training block change what the quickstart learns? Seeds x {fast, textbook} runs.

    python bench/quickstart_seeds.py [--seeds 1 2 3] [--iters 203] [--textbook upconv|dropout|all]

Each run is `bisenet quickstart --max-iters N` with the config's seed replaced and, for the
textbook arm, the chosen fast blocks of `bisenet.models.layers` swapped back after the model is
built (same weights, same function, other rounding and dropout masks). Runs go one after
another: two trainings at once on a 2-core host each run several times slower. Prints the val
mIoU per seed and the mean of each arm; the seed-to-seed spread is the noise to judge by.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from torch import nn

import bisenet.engine.train as engine
from bisenet.models.layers import FastDropout, NearestUpConvBNReLU
from bisenet.quickstart import quickstart


def swap_back(model: nn.Module, which: str) -> nn.Module:
    """Replace the fast blocks named by `which` (upconv, dropout or all) with the textbook ones."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, NearestUpConvBNReLU) and which in ("upconv", "all"):
                setattr(module, name, nn.Sequential(*child))
            elif isinstance(child, FastDropout) and which in ("dropout", "all"):
                setattr(module, name, nn.Dropout(child.p, child.inplace))
    return model


def run(seed: int, iters: int, textbook: str | None, out: Path) -> float:
    """One quickstart with `seed`; `textbook` names the blocks to swap back (None: all fast)."""
    build_model, train = engine.build_model, engine.train

    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        return swap_back(model, textbook) if textbook else model

    def seeded_train(cfg, *args, **kwargs):
        return train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)), *args, **kwargs)

    engine.build_model, engine.train = build, seeded_train  # quickstart looks both up at call time
    try:
        return quickstart(out, max_iters=iters)["mIoU"] * 100
    finally:
        engine.build_model, engine.train = build_model, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iters", type=int, default=203)
    parser.add_argument("--textbook", choices=["upconv", "dropout", "all"], default="upconv")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"fast": [], f"textbook {args.textbook}": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm, textbook in (("fast", None), (f"textbook {args.textbook}", args.textbook)):
                results[arm].append(run(seed, args.iters, textbook, Path(tmp) / f"{arm.replace(' ', '_')}_{seed}"))
    print(f"\nval mIoU after {args.iters} iterations, seeds {' '.join(map(str, args.seeds))}")
    print("| arm | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for arm, values in results.items():
        print(f"| {arm} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {statistics.mean(values):.1f} |")


if __name__ == "__main__":
    main()
