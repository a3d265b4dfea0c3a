"""Progress of long jobs: a tqdm bar on a terminal or in a notebook, else a line every so often.

Logs of batch jobs (a cluster's job output, ``nohup``) get no carriage-return bars, only a
plain line every ``every`` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import IO, Any

__all__: list[str] = []


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where tqdm.auto draws widgets although stderr is a pipe."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # an IPython that is imported but not running
        return False
    return getattr(shell, "kernel", None) is not None


def is_interactive(stream: IO[str] | None = None) -> bool:
    """True when bars can be redrawn: ``stream`` (default stderr, looked up now) is a
    terminal, or this is a notebook kernel."""
    isatty = getattr(sys.stderr if stream is None else stream, "isatty", None)
    try:
        tty = bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        tty = False
    return tty or in_notebook()


def format_duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"`` or ``"2h07m"``: short and unambiguous in a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts ``total`` items done.

    Args:
        total: items to do.
        desc: what is being done, e.g. ``"index images"``.
        unit: the items' name.
        initial: items already done (e.g. by an earlier, resumed run).
        enabled: report at all.
        every: seconds between two lines when the stream is not a terminal.
        stream: where to report (default ``sys.stderr``).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        every: float = 30.0,
        stream: IO[str] | None = None,
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._total, self._done, self._start_done = total, initial, initial
        self._desc, self._unit, self._every = desc, unit, every
        self._enabled = enabled
        self._bar: Any = None
        self._t0 = self._last = time.monotonic()
        if enabled and is_interactive(self._stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self._stream)

    def update(self, n: int) -> None:
        """Count ``n`` more items done."""
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and time.monotonic() - self._last >= self._every:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last = now
        pct = 100.0 * self._done / max(self._total, 1)
        line = f"{self._desc}: {self._done:,}/{self._total:,} {self._unit} ({pct:.1f}%)"
        done_now = self._done - self._start_done
        if done_now > 0:
            rate = done_now / max(now - self._t0, 1e-9)
            line += f", {rate:.1f} {self._unit}/s"
            if self._done < self._total:
                line += f", about {(self._total - self._done) / rate / 60:.1f} min left"
        elif self._start_done:
            line += f", {self._start_done:,} done by an earlier run"
        print(line, file=self._stream, flush=True)

    def close(self) -> None:
        """End the bar, or write the last line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled:
            self._enabled = False
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
