"""What the trainer tells a person: tqdm bars where someone watches, plain lines everywhere.

Bars need a terminal or a notebook to redraw in; in a redirected log they are either absent
or a mess of carriage returns. Lines work everywhere, so they are always written (rank 0,
``sys.stderr`` looked up at write time, flushed): one per epoch, a final one naming the
selected epoch, and, where no bar shows progress, a time-based heartbeat inside long epochs
so that a log never stays silent for long.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from tqdm.auto import tqdm

from textreid._progress import format_duration, is_interactive

__all__: list[str] = []

T = TypeVar("T")

# Looked up at call time so that tests can drive the heartbeat with a fake clock.
_now = time.monotonic


def _losses(record: Mapping[str, Any], prefix: str) -> str:
    """``"loss 2.3141 (i2t 1.1, t2i 1.2)"`` from ``prefix + "loss"`` and its terms."""
    total = record.get(f"{prefix}loss")
    if total is None:
        return ""
    terms = [
        f"{k[len(prefix) + 5 :]} {v:.4f}"
        for k, v in record.items()
        if k.startswith(f"{prefix}loss/") and isinstance(v, float)
    ]
    return f"loss {total:.4f}" + (f" ({', '.join(terms)})" if terms else "")


class ProgressPrinter:
    """Bars and lines of one :meth:`Trainer.fit` call.

    Args:
        enabled: False on every rank but 0 (nothing is printed there).
        verbosity: 0 final line only; 1 also epoch lines and heartbeats; 2 also step lines.
        bars: tqdm bars allowed (``TrainerConfig.progress``); shown only when interactive.
        heartbeat_s: seconds between heartbeat lines where no bar shows (``None``: never).
        epochs: the run's total epoch count.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        verbosity: int,
        bars: bool,
        heartbeat_s: float | None,
        epochs: int,
    ) -> None:
        self.enabled = enabled
        self.verbosity = verbosity if enabled else -1
        self.bars = bars and self.verbosity >= 1 and is_interactive()
        self.heartbeat_s = heartbeat_s if not self.bars and self.verbosity >= 1 else None
        self.epochs = epochs
        self._fit_start = _now()
        self._epochs_run = 0
        self._epoch_start = self._fit_start
        self._last_beat = self._fit_start

    def emit(self, line: str) -> None:
        """Write one line to stderr (around any live bar) and flush it."""
        if not self.enabled:
            return
        tqdm.write(line, file=sys.stderr)
        sys.stderr.flush()

    def bar(self, iterable: Iterable[T], total: int, epoch: int) -> Iterator[T]:
        """``iterable`` wrapped in a tqdm bar when bars show, else ``iterable`` itself."""
        self._epoch_start = self._last_beat = _now()
        if not self.bars:
            return iter(iterable)
        return iter(
            tqdm(
                iterable,
                total=total,
                desc=f"epoch {epoch}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        )

    def heartbeat_due(self) -> bool:
        """One clock read: whether :meth:`heartbeat` should be called now."""
        return self.heartbeat_s is not None and _now() - self._last_beat >= self.heartbeat_s

    def heartbeat(self, epoch: int, done: int, total: int, loss: float | None) -> None:
        """``epoch 3/10  step 40/120  loss so far 2.3141  2.10 it/s  epoch ETA 38s``."""
        now = _now()
        self._last_beat = now
        rate = done / max(now - self._epoch_start, 1e-9)
        parts = [f"epoch {epoch}/{self.epochs}", f"step {done}/{total}"]
        if loss is not None:
            parts.append(f"loss so far {loss:.4f}")
        parts += [f"{rate:.2f} it/s", f"epoch ETA {format_duration((total - done) / rate)}"]
        self.emit("  ".join(parts))

    def step_line(self, record: Mapping[str, Any]) -> None:
        """Verbosity 2: one line per ``metrics.jsonl`` step record."""
        if self.verbosity < 2:
            return
        parts = [f"step {record['step']} (epoch {record['epoch']})", _losses(record, "")]
        parts.append(f"lr {record['lr']:.3g}")
        if "grad_norm" in record:
            parts.append(f"grad_norm {record['grad_norm']:.3g}")
        self.emit("  ".join(p for p in parts if p))

    def epoch_line(self, record: Mapping[str, Any], steps: int, skipped: int | None) -> None:
        """The line closing an epoch: losses, lr, validation, time, ETA, skipped steps."""
        now = _now()
        took = now - self._epoch_start
        self._epochs_run += 1
        epoch = int(record["epoch"])
        per_epoch = (now - self._fit_start) / self._epochs_run
        if self.verbosity < 1:
            return
        parts = [f"epoch {epoch}/{self.epochs}", f"{steps} steps", _losses(record, "epoch_")]
        parts.append(f"lr {record['lr']:.3g}")
        # Counts such as num_queries stay in metrics.jsonl; the line shows the metrics.
        val = [
            f"{k[4:]} {v:.2f}"
            for k, v in record.items()
            if k.startswith("val/") and not k.startswith("val/num_")
        ]
        if val:
            parts.append("val " + " ".join(val))
        parts.append(f"time {format_duration(took)}")
        parts.append(f"ETA {format_duration(per_epoch * (self.epochs - epoch))}")
        if skipped:
            parts.append(f"skipped {skipped}/{steps} steps (fp16 overflow)")
        self.emit("  ".join(p for p in parts if p))

    def final_line(
        self,
        *,
        epoch: int,
        stopped_early: bool,
        metric: str,
        mode: str,
        select_epoch: str,
        best_value: float | None,
        best_epoch: int | None,
        best_path: str | None,
        evaluated: bool,
        last_checkpoint: str | None,
    ) -> None:
        """Which epoch the run selects and why; printed at every verbosity."""
        took = format_duration(_now() - self._fit_start)
        head = (
            f"stopped after epoch {epoch} of {self.epochs}"
            if stopped_early
            else f"done: {epoch} epochs"
        )
        if best_epoch is not None and best_value is not None:
            if select_epoch == "last":
                tail = (
                    f"selected the last evaluated epoch, {best_epoch} of {self.epochs} "
                    f"(select_epoch='last'): {metric} {best_value:.2f}"
                )
            else:
                how = "highest" if mode == "max" else "lowest"
                tail = (
                    f"best {metric} {best_value:.2f} ({how}) at epoch {best_epoch} of {self.epochs}"
                )
            if best_path is not None:
                tail += f"; saved {best_path}"
        elif evaluated:
            tail = f"no evaluation gave a finite {metric}; no best weights saved"
        else:
            tail = "no evaluate_fn, so no epoch selected"
            if last_checkpoint is not None:
                tail += f"; last checkpoint {last_checkpoint}"
        self.emit(f"{head} in {took}; {tail}")
