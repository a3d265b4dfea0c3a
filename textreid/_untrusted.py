"""Reading pickles from untrusted files: tensors only, and errors that give safe advice.

``torch.load(weights_only=True)`` already refuses every global outside its allowlist, so a
pickle's ``__reduce__`` never runs. Its refusal, though, advises ``weights_only=False``,
which is exactly what runs such a payload; the errors raised here name the file and the
safe formats instead.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

__all__: list[str] = []

SAFE_FORMATS = "safetensors, or a plain state dict saved with torch.save(model.state_dict(), path)"
"""The formats to suggest when a weights file is refused."""

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*([^\n.]+)")


def torch_load_weights_only(path: Path, fn: str) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with our errors.

    Args:
        path: The file (a zip ``torch.save`` archive or a legacy pickle).
        fn: The public function to name in errors.

    Returns:
        The unpickled object: tensors, containers and primitives only.

    Raises:
        ValueError: If the pickle needs globals beyond tensors (naming the first one and the
            safe formats), or if the file is corrupt or truncated.
    """
    try:
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
