"""The ``textreid`` parser and entry point: dispatch, and errors as one readable line."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from textreid.cli import _convert, _demo, _eval, _index, _recipes, _search, _synth, _train
from textreid.cli._common import HelpFormatter

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status of an expected failure (bad argument, file, device), as argparse uses.
EXIT_ERROR = 2

#: Python argument names whose CLI option has another name (the first the command has).
_ALIASES = {"overrides": ("config",), "output_dir": ("output", "out")}


def build_parser() -> argparse.ArgumentParser:
    """The ``textreid`` argument parser (one subcommand per job)."""
    from textreid._version import __version__

    parser = argparse.ArgumentParser(
        prog="textreid",
        description="Text-to-image person retrieval: train, evaluate, search, convert.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"textreid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error (default: off)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def new(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], formatter_class=HelpFormatter, **kwargs)
        p.set_defaults(parser=p)
        return p

    for command in (_demo, _train, _eval, _search, _index, _synth, _convert, _recipes):
        command.add(new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``textreid`` console script.

    Expected failures (bad arguments, a device this machine lacks, missing or unwritable
    files, a full disk) print one line ``textreid COMMAND: error: ...`` on stderr, naming the
    option to change, and return 2; ``--debug`` lets the exception propagate with its
    traceback instead. Ctrl-C returns 130 after one line (for ``train`` and ``demo``: what
    was kept and the command that resumes).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        if getattr(args, "device", None) is not None:
            from textreid.cli._common import check_device

            check_device(args.device)
        code: int = args.func(args)
    except KeyboardInterrupt as exc:
        if getattr(args, "debug", False):
            raise
        print(_interrupted(exc, args, words), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"textreid {args.command}: error: {_describe(exc, args)}", file=sys.stderr)
        return EXIT_ERROR
    return code


def _interrupted(exc: KeyboardInterrupt, args: argparse.Namespace, words: list[str]) -> str:
    """One line: where training stopped, what was kept and the exact command to resume."""
    head = f"textreid {args.command}: interrupted"
    if "textreid.training" not in sys.modules:
        return head  # nothing was being trained
    from textreid.training import TrainingInterrupted

    if not isinstance(exc, TrainingInterrupted):
        return head
    done = f"{head} after {exc.epoch} complete epoch(s)"
    if exc.last_checkpoint is None:
        again = shlex.join(["textreid", *words])
        return (
            f"{done}; no checkpoint was written yet, nothing to resume; start again with: {again}"
        )
    resume = shlex.join(["textreid", *(w for w in words if w != "--resume"), "--resume"])
    return f"{done}; kept {exc.last_checkpoint}; resume with: {resume}"


def _describe(exc: BaseException, args: argparse.Namespace) -> str:
    if isinstance(exc, OSError):
        described = _describe_os_error(exc, args)
        if described is not None:
            return described
    return _as_options(str(exc) or type(exc).__name__, args.parser)


def _as_options(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with Python argument names spelled as the command's options:
    ``pass resume=True`` -> ``pass --resume``, ``dataset='x'`` -> ``--dataset x``,
    ``output_dir`` -> ``--output``."""
    options: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse exposes no public list
        if action.option_strings and action.dest != "help":
            options.setdefault(action.dest, action)
    for python, dests in _ALIASES.items():
        for dest in dests:
            if dest in options:
                options.setdefault(python, options[dest])
                break

    def flag(action: argparse.Action) -> str:
        return max(action.option_strings, key=len)

    def assignment(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if value in ("True", "False"):
            # A flag: resume=True -> --resume; progress=False -> --no-progress.
            wanted = value == "True"
            action = options.get(name)
            if action is not None and action.nargs == 0 and action.const is wanted:
                return flag(action)
            negated = options.get(f"no_{name}")
            if negated is not None and negated.nargs == 0 and not wanted:
                return flag(negated)
            return match.group(0)
        action = options.get(name)
        if action is None or action.nargs == 0:
            return match.group(0)
        return f"{flag(action)} {value.strip(chr(39) + chr(34))}"

    message = re.sub(
        r"(?<![\w.\-/])([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;)]+)", assignment, message
    )

    def word(match: re.Match[str]) -> str:
        action = options.get(match.group(0))
        return flag(action) if action is not None else match.group(0)

    # Bare names only where they hold an underscore: plain words are English, not options.
    return re.sub(r"(?<![\w.\-/'\"])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w\-/'\"(])", word, message)


def _output_path(args: argparse.Namespace) -> str | None:
    """The folder or file the command writes, the likely culprit of an OSError without a path."""
    for name in ("out", "output", "out_dir", "root"):
        value = getattr(args, name, None)
        if value is not None:
            return str(value)
    return None


def _describe_os_error(exc: OSError, args: argparse.Namespace) -> str | None:
    """One line naming the path and the cause, e.g. ``/data/run: No space left on device``;
    ``None`` for our own errors, whose message already says it."""
    number = exc.errno
    if number is None and len(exc.args) == 1 and isinstance(exc.args[0], int):
        number = exc.args[0]  # OSError(errno.ENOSPC) keeps the number in args only
    if number is None:
        return None
    cause = exc.strerror or os.strerror(number)
    if number in errno.errorcode:
        cause = f"{cause} ({errno.errorcode[number]})"
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            where = f"{where} -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {cause}"
    out = _output_path(args)
    return f"while writing {out}: {cause}" if out is not None else cause
