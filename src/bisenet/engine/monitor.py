"""What people watch during training: console lines, metrics.jsonl, TensorBoard, curves."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bisenet.errors import BisenetError, make_dir, write_atomic, write_text_atomic


class RunMonitor:
    """Logs training and evaluation figures. Only rank 0 makes one with `enabled=True`."""

    def __init__(self, work_dir: Path, max_iters: int, enabled: bool = True, tensorboard: bool = True,
                 fresh: bool = False, resume_iter: int = 0, eval_again: bool = False) -> None:
        """`fresh`: a new run, whose logs replace those of an earlier start that died before its first checkpoint.

        `resume_iter`: a resumed run's checkpoint iteration; records past it (written before a kill -9)
        are dropped from metrics.jsonl and TensorBoard, so each iteration appears once; with `eval_again`
        (the resume redoes the evaluation at resume_iter) its earlier record goes from metrics.jsonl too.
        Rank 0 holds the work dir's lock until `close()` or the end of a `with` block: a second run
        started into the same work dir is refused instead of mixing its checkpoints and logs with this one's.
        """
        self.work_dir = Path(work_dir)
        self.max_iters = max_iters
        self.enabled = enabled
        self.writer = None
        self._last_time = time.perf_counter()
        self._last_iter: int | None = None
        self._log_file = self._jsonl = self._lock = None
        self._error_logged = False
        self._resume_iter = resume_iter
        # The iterations a resumed run does again: logged by the stopped run after its last checkpoint.
        self.replayed: tuple[int, int] | None = None
        if not enabled:
            return
        make_dir(self.work_dir, "train.work_dir (--work-dir)")
        mode = "w" if fresh else "a"  # a resumed run continues its own logs
        try:
            self._lock = _lock_work_dir(self.work_dir)  # before any file of the run is touched
            if fresh:  # TensorBoard would draw the old start's curves under the new run's
                for old in (self.work_dir / "tensorboard").glob("events.out.tfevents.*"):
                    old.unlink()
            else:
                self.replayed = _drop_records_after(self.work_dir / "metrics.jsonl", resume_iter, eval_again)
            self._jsonl = open(self.work_dir / "metrics.jsonl", mode, buffering=1)
            self._log_file = open(self.work_dir / "train.log", mode, buffering=1)
            for name in ("last", "best"):  # a checkpoint write cut short by kill -9 (atomic_save's mkstemp names)
                for stale in self.work_dir.glob(f".{name}.pt.????????.tmp"):
                    stale.unlink()
            tempfile.TemporaryFile(dir=self.work_dir).close()  # checkpoints are written here too
        except OSError as exc:  # e.g. a read-only mount: before any step, not at the first checkpoint
            self.release()
            raise BisenetError(f"cannot write in the work dir {self.work_dir}: {exc.strerror or exc}; "
                               "pass a writable --work-dir") from None
        except BaseException:  # any other failure (a Ctrl-C, say) must not keep the lock: a retry would be refused
            self.release()
            raise
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step hides the earlier events from that step on (the killed run's last iterations;
                # with eval_again the evaluation at resume_iter too, so its training scalars are written again)
                self.writer = SummaryWriter(str(self.work_dir / "tensorboard"),
                                            purge_step=None if fresh else resume_iter + (0 if eval_again else 1))
                if eval_again:
                    for record in read_records(self.work_dir / "metrics.jsonl"):
                        if record.get("type") == "train" and record["iteration"] == resume_iter:
                            self._train_scalars(record)
            except ImportError:
                self.print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")

    def replayed_note(self) -> str:
        """For the resume line: the iterations the stopped run logged past its checkpoint, which run again."""
        if not self.replayed:
            return ""
        first, last = self.replayed
        span = f"iteration {first}" if first == last else f"iterations {first}-{last}"
        return f" ({span} logged by that run after its checkpoint: run again; train.log keeps the old lines above)"

    def print(self, message: str) -> None:
        """A line on the console and in train.log."""
        if not self.enabled:
            return
        print(message, flush=True)
        if self._log_file:
            self._log_file.write(message + "\n")

    def warn(self, message: str) -> None:
        """A warning on stderr and in train.log."""
        if not self.enabled:
            return
        print(f"warning: {message}", file=sys.stderr, flush=True)
        if self._log_file:
            self._log_file.write(f"warning: {message}\n")

    def log_error(self, iteration: int, message: str) -> None:
        """Why the run stopped, in train.log only (the command line prints the error itself)."""
        if self._log_file:
            self._log_file.write(f"error at iteration {iteration}: {message}\n")
            self._error_logged = True

    def start(self, iteration: int) -> None:
        """Reset the throughput clock (after resuming, or after an evaluation)."""
        self._last_time = time.perf_counter()
        self._last_iter = iteration

    def log_train(self, iteration: int, losses: dict[str, float], lr: float, images_per_step: int) -> None:
        """A progress line with loss, lr, images/s and ETA; scalars to TensorBoard and jsonl."""
        if not self.enabled:
            return
        now = time.perf_counter()
        done = iteration - (self._last_iter if self._last_iter is not None else iteration - 1)
        seconds_per_iter = (now - self._last_time) / max(done, 1)
        self._last_time, self._last_iter = now, iteration
        eta = datetime.timedelta(seconds=int(seconds_per_iter * (self.max_iters - iteration)))
        heads = " ".join(f"{k} {v:.3f}" for k, v in losses.items() if k != "loss")
        self.print(
            f"iter {iteration:>{len(str(self.max_iters))}}/{self.max_iters} | loss {losses['loss']:.4f} ({heads}) | "
            f"lr {lr:.2e} | {images_per_step / max(seconds_per_iter, 1e-9):.1f} img/s | eta {eta}"
        )
        record = {"type": "train", "iteration": iteration, "lr": lr, "images_per_s": images_per_step / max(seconds_per_iter, 1e-9), **losses}
        self._jsonl.write(json.dumps(record) + "\n")
        self._train_scalars(record)

    def _train_scalars(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl training record's scalars to TensorBoard."""
        if self.writer:
            for key, value in record.items():
                if key not in ("type", "iteration"):
                    self.writer.add_scalar(f"train/{key}", value, record["iteration"])

    def log_eval(self, iteration: int, result: dict[str, Any], best: float) -> None:
        """Per-class IoU table and mIoU; scalars to TensorBoard and jsonl."""
        if not self.enabled:
            return
        ious = result["IoU"]
        width = max(len(name) for name in ious)
        lines = [f"eval @ iter {iteration}: mIoU {result['mIoU'] * 100:.2f} | pixel acc {result['pixel_acc'] * 100:.2f} | best mIoU {best * 100:.2f}"]
        lines += [f"  {name:<{width}}  {'   n/a' if v is None else f'{v * 100:6.2f}'}" for name, v in ious.items()]
        self.print("\n".join(lines))
        self._jsonl.write(json.dumps({"type": "eval", "iteration": iteration, "mIoU": result["mIoU"], "pixel_acc": result["pixel_acc"], "IoU": ious}) + "\n")
        if self.writer:
            self.writer.add_scalar("val/mIoU", result["mIoU"], iteration)
            self.writer.add_scalar("val/pixel_acc", result["pixel_acc"], iteration)
            for name, value in ious.items():
                if value is not None:
                    self.writer.add_scalar(f"val_iou/{name}", value, iteration)

    def log_masks(self, iteration: int, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
        """A few (photo | predicted colour mask) pairs, HxWx3 uint8 each, to TensorBoard."""
        if self.writer is None or not images:
            return
        for i, (image, mask) in enumerate(zip(images, masks)):
            self.writer.add_image(f"val_pred/{i}", np.concatenate([image, mask], axis=1), iteration, dataformats="HWC")

    def close(self) -> Path | None:
        """Flush logs, release the work dir and draw the loss and mIoU curves into curves.png."""
        if not self.enabled:
            return None
        self.release()
        return plot_curves(self.work_dir / "metrics.jsonl", self.work_dir / "curves.png")

    def release(self) -> None:
        """Close the log files and let another run use the work dir (also after a failed run)."""
        if self._lock in _held_locks:
            _held_locks.remove(self._lock)
        for handle in (self.writer, self._jsonl, self._log_file, self._lock):
            if handle is not None:
                handle.close()  # closing the lock file drops its flock
        self.writer = self._jsonl = self._log_file = self._lock = None

    def __enter__(self) -> RunMonitor:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and issubclass(exc_type, Exception) and not self._error_logged:
            text = str(exc).strip()  # an error before the loop's own handler (data.cache: device's decoding, say)
            at = self._last_iter if self._last_iter is not None else self._resume_iter
            self.log_error(at, text.splitlines()[-1] if text else exc_type.__name__)
        if exc_type is not None and self.enabled and self._jsonl is not None:  # a failed run: its curves so far
            self.release()
            with contextlib.suppress(Exception):  # never hide the run's own error
                plot_curves(self.work_dir / "metrics.jsonl", self.work_dir / "curves.png")
        self.release()


LOCK_NAME = ".bisenet-train.lock"


# Work-dir locks this process holds. A fork (the DataLoader's workers) shares each one's flock; were the
# copies left open, a kill -9'd run's orphaned workers would hold its work dir for seconds after it died.
_held_locks: list = []


def _drop_inherited_locks() -> None:
    for handle in _held_locks:
        with contextlib.suppress(OSError):
            handle.close()  # the child's copy only: the parent keeps its lock
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def _lock_work_dir(work_dir: Path):
    """Take the work dir's lock (an open file) or raise BisenetError naming the run that holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are not guarded there
        return None
    handle = open(work_dir / LOCK_NAME, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BisenetError(f"{work_dir} is in use by another training run ({holder}; lock {work_dir / LOCK_NAME}): "
                           "wait for it to end, or pass another --work-dir") from None
    except OSError:  # a filesystem without flock: run unguarded rather than not at all
        return handle
    handle.truncate(0)  # the kernel drops the lock when the process dies: this text only names the holder
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n")
    handle.flush()
    _held_locks.append(handle)
    return handle


def _drop_records_after(metrics_path: Path, iteration: int, eval_again: bool = False) -> tuple[int, int] | None:
    """Rewrite metrics.jsonl without records past `iteration` (a resumed run logs those again), nor a
    line the kill cut short (the next record would be appended to it), nor with `eval_again` the evaluation
    at `iteration`; returns the span of iterations past `iteration` that were dropped."""
    if not metrics_path.is_file():
        return None
    lines = _read_lines(metrics_path)
    records = [_record(line) if line.endswith("\n") else None for line in lines]
    redone = {"eval"} if eval_again else set()
    kept = [line for line, record in zip(lines, records) if record is not None and (
        record["iteration"] < iteration or record["iteration"] == iteration and record.get("type") not in redone)]
    if kept != lines:
        write_text_atomic(metrics_path, "".join(kept), "training metrics", "metrics.jsonl")
    dropped = [record["iteration"] for record in records if record is not None and record["iteration"] > iteration]
    return (iteration + 1, max(dropped)) if dropped else None


def _record(line: str) -> dict[str, Any] | None:
    """One metrics.jsonl record, None for a line that is not one (cut short by a kill -9, say)."""
    if "\ufffd" in line:  # bytes that are not UTF-8 (a disk error, say): not a record we wrote
        return None
    try:
        record = json.loads(line)
        record["iteration"] = int(record["iteration"])
        return record
    except (ValueError, KeyError, TypeError):
        return None


def read_records(metrics_path: Path) -> list[dict[str, Any]]:
    """The whole records of a metrics.jsonl, in order (none when it does not exist)."""
    if not metrics_path.is_file():
        return []
    return [r for r in map(_record, _read_lines(metrics_path)) if r is not None]


def _read_lines(metrics_path: Path) -> list[str]:
    """The lines of a metrics.jsonl, ends kept; bytes that are not UTF-8 read as U+FFFD (_record drops those lines)."""
    return metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)


def plot_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """Loss vs iteration and val mIoU vs iteration, side by side, from a metrics.jsonl."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, evals = {}, {}
    for record in read_records(Path(metrics_path)):  # a resumed run appends: later records for an iteration win
        kind, key = (train, "loss") if record.get("type") == "train" else (evals, "mIoU")
        if isinstance(record.get(key), (int, float)):  # mIoU is null when no class was present; an edited line
            kind[record["iteration"]] = record
    if not train:
        return None
    fig = Figure(figsize=(10, 3.6), dpi=100)  # no pyplot: leaves the global backend alone
    FigureCanvasAgg(fig)
    ax_loss, ax_miou = fig.subplots(1, 2)
    its = sorted(train)
    ax_loss.plot(its, [train[i]["loss"] for i in its], label="total")
    if all("main" in train[i] for i in its):
        ax_loss.plot(its, [train[i]["main"] for i in its], label="main head", alpha=0.7)
    ax_loss.set(xlabel="iteration", ylabel="loss (log scale)", title="training loss", yscale="log")
    ax_loss.legend()
    if evals:
        eits = sorted(evals)
        ax_miou.plot(eits, [evals[i]["mIoU"] * 100 for i in eits], marker="o")
    ax_miou.set(xlabel="iteration", ylabel="mIoU (%)", title="validation mIoU")
    fig.tight_layout()
    return write_atomic(out_path, lambda tmp: fig.savefig(tmp, format="png"), "training curves", "curves.png")


def warn(message: str) -> None:
    """A warning on stderr, on rank 0 only (before the run's monitor exists: it is not in train.log)."""
    from bisenet.engine.distributed import is_main_process

    if is_main_process():
        print(f"warning: {message}", file=sys.stderr, flush=True)
