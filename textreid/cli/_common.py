"""What several commands share: help layout, argument types, training options, checks.

Nothing here imports torch at module level: ``textreid --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

#: Adds a subcommand's parser: ``new(name, help=..., description=...)``.
NewParser = Callable[..., argparse.ArgumentParser]

#: Largest ``--config`` file read (a settings file is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20

#: ``--quiet`` / ``--verbose`` -> the trainer's verbosity (1, a line per epoch, by default).
QUIET, VERBOSE = 0, 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, or says that the option is required.

    A flag shows ``(default: off)``; a help text that already says its default (``None``
    defaults must, since "None" tells a user nothing) is left as it is.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or text == argparse.SUPPRESS
            or action.default is argparse.SUPPRESS  # --help, --version
            or not action.option_strings
        ):
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count, a size, a batch)."""
    value = _parse(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a seed)."""
    value = _parse(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    value = _parse(float, text, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


_T = TypeVar("_T", int, float)


def _parse(kind: Callable[[str], _T], text: str, what: str) -> _T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or mps (default: CUDA when available, else the CPU)",
    )


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``train`` that ``demo`` shares."""
    group = parser.add_argument_group("recipe settings")
    recipe_s = "(default: the recipe's)"
    group.add_argument(
        "--epochs", type=positive_int, default=None, help=f"training epochs {recipe_s}"
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=None, help=f"training batch size {recipe_s}"
    )
    group.add_argument(
        "--lr", type=positive_float, default=None, help=f"base learning rate {recipe_s}"
    )
    group.add_argument(
        "--amp",
        choices=("auto", "none", "bf16", "fp16"),
        default=None,
        help="mixed precision: auto (bf16 or fp16 on a GPU that has it, none on a CPU), none, "
        f"bf16 or fp16 {recipe_s}",
    )
    group.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON or TOML file of further recipe settings, dotted keys or tables, e.g. "
        '{"trainer.weight_decay": 0.01, "data": {"num_workers": 2}}; the options above '
        "win over it (default: none)",
    )
    add_device_option(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of the run"
    )
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument(
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=QUIET,
        help="only warnings, errors and the final result (default: a line per epoch)",
    )
    talk.add_argument(
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=VERBOSE,
        help="also a line every few optimizer steps (default: a line per epoch)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars, even in a terminal (the per-epoch lines stay)",
    )


def training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`textreid.pipeline.train_recipe` the shared options set.

    The ``--config`` file is read and checked against ``--recipe`` here, before any work.

    Raises:
        ValueError: unknown recipe, or a ``--config`` file that cannot be parsed or names a
            setting the recipe does not have (the message names the file).
    """
    overrides = None
    if args.config is not None:
        from textreid.pipeline import apply_overrides
        from textreid.recipes import get_recipe

        overrides = read_config(args.config)
        recipe = get_recipe(args.recipe)
        try:
            apply_overrides(recipe, overrides)
        except ValueError as exc:
            raise ValueError(f"--config {args.config}: {exc}") from None
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "amp": args.amp,
        "verbosity": args.verbosity,
        "overrides": overrides,
        "device": args.device,
        "resume": args.resume,
        "progress": not args.no_progress,
    }


def read_config(path: str) -> dict[str, Any]:
    """The settings of a ``--config`` file: a JSON object or a TOML document.

    Raises:
        ValueError: not valid JSON / TOML, not an object, or an extension other than
            ``.json`` / ``.toml``.
        OSError: the file cannot be read.
    """
    from textreid._io import read_bounded

    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"--config {path}: expected a .json or .toml file, got {suffix or 'none'}")
    data = read_bounded(file, max_bytes=MAX_CONFIG_BYTES, fn="--config")
    try:
        if suffix == ".json":
            settings = json.loads(data)
        else:
            settings = _toml_loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"--config {path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError(
            f"--config {path}: expected an object of settings, got {type(settings).__name__}"
        )
    return settings


def _toml_loads(text: str) -> dict[str, Any]:
    # tomllib is Python >= 3.11; tomli is the same parser for 3.10.
    for name in ("tomllib", "tomli"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        settings: dict[str, Any] = module.loads(text)
        return settings
    raise ValueError(
        "reading TOML needs Python >= 3.11 or the tomli package; or write the settings as JSON"
    )


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work is done.

    Raises:
        ValueError: not a device name, or CUDA / MPS / the device index not available.
    """
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"--device {device!r} is not a device name (expected cpu, cuda, cuda:N or mps)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch {torch.__version__} was built without CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise ValueError(
                f"--device {device}: CUDA is not available ({why}); use --device cpu, or leave "
                "--device out to use CUDA only when present"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"--device {device}: only {count} CUDA device(s) are visible "
                f"(cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")


def image_file_name(path: str, flag: str) -> Path:
    """``path`` as an image file name: ``.png`` added when it has no extension.

    Raises:
        ValueError: an extension Pillow cannot write.
    """
    from PIL import Image

    out = Path(path)
    if not out.suffix:
        return out.with_name(out.name + ".png")
    if out.suffix.lower() not in Image.registered_extensions():
        raise ValueError(
            f"{flag} {path}: {out.suffix} is not an image format Pillow can write; use a "
            "name ending in .png or .jpg"
        )
    return out
