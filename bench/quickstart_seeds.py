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

import bisenet.engine.train as engine
from bisenet.models.layers import use_textbook_blocks
from bisenet.quickstart import quickstart


TEXTBOOK = {"upconv": ("upconv",), "dropout": ("dropout",), "all": ("dropout", "upconv")}


def run(seed: int, iters: int, textbook: str | None, out: Path) -> float:
    """One quickstart with `seed`; `textbook` names the blocks to swap back (None: all fast)."""
    build_model, train = engine.build_model, engine.train

    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        return use_textbook_blocks(model, TEXTBOOK[textbook]) if textbook else model

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
