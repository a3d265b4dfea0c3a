"""Reading pickles from untrusted files: tensors only, and errors that give safe advice.

``torch.load(weights_only=True)`` already refuses every global outside its allowlist, so a
pickle's ``__reduce__`` never runs. Its refusal, though, advises ``weights_only=False``,
which is exactly what runs such a payload; the errors raised here name the file and the
safe formats instead.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__: list[str] = []

SAFE_FORMATS = "safetensors, or a plain state dict saved with torch.save(model.state_dict(), path)"
"""The formats to suggest when a weights file is refused."""

# safe_globals takes (object, "module.name") pairs from torch 2.6 on.
_TUPLE_SAFE_GLOBALS = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6)

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*([^\n.]+)")


def _numpy_scalar_globals() -> list[Any]:
    """The globals a pickled numeric numpy scalar needs, under numpy 1's and 2's paths.

    ``scalar(dtype, raw_bytes)`` only reinterprets bytes; the dtype classes allowed are the
    numeric ones, so an object dtype (whose scalar would be an arbitrary object) still fails.
    """
    import numpy as np

    scalar = np.float64(0).__reduce__()[0]
    allowed: list[Any] = [(scalar, f"numpy.{sub}.multiarray.scalar") for sub in ("core", "_core")]
    allowed.append(np.dtype)
    allowed += [type(np.dtype(code)) for code in ("b1", "i4", "i8", "f2", "f4", "f8")]
    return allowed


def torch_load_weights_only(path: Path, fn: str, *, numpy_scalars: bool = False) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with our errors.

    Args:
        path: The file (a zip ``torch.save`` archive or a legacy pickle).
        fn: The public function to name in errors.
        numpy_scalars: Also accept numeric numpy scalars (training scripts often store a
            metric such as ``best_acc`` as one beside the weights). Needs torch 2.6 or later
            (older versions refuse such files with the error below).

    Returns:
        The unpickled object: tensors, containers and primitives only.

    Raises:
        ValueError: If the pickle needs globals beyond tensors (naming the first one and the
            safe formats), or if the file is corrupt or truncated.
    """
    extra = _numpy_scalar_globals() if numpy_scalars and _TUPLE_SAFE_GLOBALS else []
    try:
        with torch.serialization.safe_globals(extra) if extra else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Keep torch's reason, not its advice (weights_only=False, allowlisting globals).
        name, reason = _GLOBAL.search(str(err)), _REASON.search(str(err))
        detail = (
            f" (refers to {name.group(1)})" if name else f" ({reason.group(1)})" if reason else ""
        )
        raise ValueError(
            f"{fn}: {path} is not a weights-only pickle{detail}: it is corrupt, or it needs "
            "objects other than tensors to load, which could run code from the file. textreid "
            f"reads pickles with torch.load(weights_only=True) only. Safe formats: {SAFE_FORMATS}"
        ) from None
    except RuntimeError as err:
        if "TorchScript" not in str(err):
            raise _unreadable(path, fn, err) from _chained(err)
        raise ValueError(
            f"{fn}: {path} is a TorchScript archive, which {fn} does not read (loading one "
            f"runs the code inside it). Safe formats: {SAFE_FORMATS}"
        ) from None
    except (EOFError, OSError, zipfile.BadZipFile) as err:
        raise _unreadable(path, fn, err) from _chained(err)


def _chained(err: Exception) -> Exception | None:
    # torch's own message may advise weights_only=False: keep it out of ours and the chain.
    return None if "weights_only" in str(err) else err


def _unreadable(path: Path, fn: str, err: Exception) -> ValueError:
    detail = f" ({err})" if _chained(err) else ""
    return ValueError(
        f"{fn}: cannot read {path} as a torch checkpoint{detail}; the file is corrupt, "
        f"truncated, or not a weights-only checkpoint. Safe formats: {SAFE_FORMATS}"
    )
