"""Argument validators shared by every public function.

Every message names the calling function, the argument, what was expected and what came,
for example ``SDMLoss: pids has 31 entries but image_feats has 32 rows``. Validators raise
before any computation so a bad call never returns silent garbage.

Checks of *values* (NaN/inf, label ranges, mask rows) follow one policy, :func:`require`:
where reading a value costs no device synchronisation (CPU tensors) they decide on the host
and raise a ``ValueError`` with the details; on accelerators they become device-side asserts,
so a training step never waits for the device, unless :func:`eager_checks` (or the
``TEXTREID_EAGER_CHECKS`` environment variable) asks for the eager errors there too.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Literal, TypeVar

import torch
from torch import Tensor

__all__ = ["EAGER_CHECKS_ENV", "eager_checks"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")

_T = TypeVar("_T")


EAGER_CHECKS_ENV = "TEXTREID_EAGER_CHECKS"
"""Environment variable: ``1`` makes value checks eager on every device (see
:func:`eager_checks`)."""

# Reading a value of a tensor on these devices is a plain memory read, not a device sync.
_HOST_DEVICE_TYPES = frozenset({"cpu"})
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_DEVICE_HINT = (
    " (device-side check; for a ValueError with the details run under "
    "textreid.eager_checks() or with TEXTREID_EAGER_CHECKS=1)"
)

_eager_override: ContextVar[bool | None] = ContextVar("textreid_eager_checks", default=None)


@contextlib.contextmanager
def eager_checks(enabled: bool = True) -> Iterator[None]:
    """Decide value checks (NaN/inf, label ranges, mask rows) on the host inside the block.

    By default textreid checks values eagerly on the CPU, where reading a value is free, and
    with device-side asserts on accelerators, where reading one would stall the device queue
    once per check (a training step would wait for the GPU a dozen times). A failing
    device-side assert stops the process with the backend's error (CUDA: ``device-side assert
    triggered``), which may not carry textreid's message. To find out which argument is bad,
    rerun the failing step under ``eager_checks()``: every check then syncs and raises the
    same ``ValueError`` as on the CPU, naming the function, the argument and the bad values.
    Setting the environment variable ``TEXTREID_EAGER_CHECKS=1`` does the same for a whole
    run (e.g. ``TEXTREID_EAGER_CHECKS=1 textreid train ...``).

    ``eager_checks(False)`` does the opposite: device-side asserts even on the CPU, exactly
    the code a GPU runs by default (a failed assert then raises a ``RuntimeError``). The
    setting is per thread / asynchronous context and nests; leaving the block restores the
    previous one.

    Args:
        enabled: ``True`` for host-side checks everywhere, ``False`` for device-side asserts
            everywhere.

    Raises:
        TypeError: ``enabled`` is not a bool.

    Example:
        >>> import torch, textreid
        >>> with textreid.eager_checks():
        ...     pass  # a training step here raises ValueErrors on any device
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"eager_checks: enabled must be a bool, got {type(enabled).__name__}")
    token = _eager_override.set(enabled)
    try:
        yield
    finally:
        _eager_override.reset(token)


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)  # torch < 2.3: only torch._dynamo has it
    check = getattr(compiler, "is_compiling", None) or torch._dynamo.is_compiling
    return bool(check())


def reads_are_free(device: torch.device) -> bool:
    """Whether reading values of tensors on ``device`` costs no device synchronisation.

    True on the CPU, except while ``torch.compile`` traces: there a host read ends the graph
    (a graph break), so traced code takes the accelerator's fixed-shape, device-assert path.
    Hot paths use it to pick between host-side work that depends on values (variable-size
    gathers) and fixed-shape work that keeps an accelerator's queue full.
    """
    return device.type in _HOST_DEVICE_TYPES and not _is_compiling()


def checks_are_eager(device: torch.device) -> bool:
    """Whether value checks of tensors on ``device`` decide on the host (see :func:`require`)."""
    override = _eager_override.get()
    if override is not None:
        return override
    if reads_are_free(device):
        return True
    return os.environ.get(EAGER_CHECKS_ENV, "").strip().lower() not in _FALSE_WORDS


def require(ok: Tensor, message: Callable[[], str], device_message: str) -> None:
    """The value-check policy: fail unless the one-element bool tensor ``ok`` is true.

    Eager (CPU, or under :func:`eager_checks`): one host read decides and a failure raises
    ``ValueError(message())``; ``message`` is only called then, so it may read the offending
    values. Otherwise ``torch._assert_async`` checks ``ok`` on the device without a sync and
    fails with ``device_message`` (plus how to get the eager error) where the backend
    reports messages.
    """
    if checks_are_eager(ok.device):
        if not bool(ok):
            raise ValueError(message())
        return
    torch._assert_async(ok, device_message + _DEVICE_HINT)


def _shape(x: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_tensor(
    x: object,
    name: str,
    fn: str,
    *,
    ndim: int | Sequence[int] | None = None,
    kind: Literal["float", "int", "bool", "any"] = "any",
    allow_empty: bool = False,
    dims: str | None = None,
) -> Tensor:
    """Check that ``x`` is a tensor of the given rank and dtype kind; return it.

    ``dims`` is the named-shape hint used in messages, e.g. ``"(B, D)"``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            hint = f" {dims}" if dims else ""
            raise ValueError(f"{fn}: {name} must be {want}{hint}, got shape {_shape(x)}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"{fn}: {name} has dtype {x.dtype}; expected a floating dtype")
    if kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{fn}: {name} must be an integer tensor, got {x.dtype}")
    if kind == "bool" and x.dtype != torch.bool:
        raise TypeError(f"{fn}: {name} must be a bool tensor, got {x.dtype}")
    if not allow_empty and x.dim() > 0 and x.shape[0] == 0:
        raise ValueError(f"{fn}: empty batch ({name} has 0 rows)")
    return x


def check_finite(x: Tensor, name: str, fn: str) -> None:
    """Raise if ``x`` holds NaN or inf (callers expose ``check_finite=False`` to skip it).

    One ``aminmax`` pass decides (NaN and inf both reach its result), under the
    :func:`require` policy; only a failing input is counted, over slices so the temporary
    masks stay small for gallery-sized tensors.
    """
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())

    def message() -> str:
        flat = x.detach().reshape(-1)
        step = 1 << 22
        bad = sum(
            int((~torch.isfinite(flat[i : i + step])).sum().item())
            for i in range(0, flat.numel(), step)
        )
        return f"{fn}: {name} contains {bad} non-finite values (NaN/inf)"

    require(
        torch.isfinite(lo) & torch.isfinite(hi),
        message,
        f"{fn}: {name} contains non-finite values (NaN/inf)",
    )


def check_features(
    x: object,
    name: str,
    fn: str,
    *,
    ndim: int = 2,
    dims: str = "(B, D)",
    finite: bool = True,
) -> Tensor:
    """A non-empty floating tensor of rank ``ndim``, finite unless ``finite=False``."""
    t = check_tensor(x, name, fn, ndim=ndim, kind="float", dims=dims)
    if t.shape[-1] == 0:
        raise ValueError(f"{fn}: {name} has a zero-sized feature dimension, shape {_shape(t)}")
    if finite:
        check_finite(t, name, fn)
    return t


def check_tokens(
    x: object,
    name: str,
    fn: str,
    *,
    dims: str,
    ndim: int | None = 3,
    finite: bool = True,
) -> Tensor:
    """Floating token features ``[..., N, D]`` with at least one token and a non-zero width.

    ``ndim=None`` accepts any rank from 2 up (broadcasting helpers); otherwise the rank is
    exactly ``ndim`` and the batch (dimension 0) must be non-empty. NaN/inf are refused
    unless ``finite=False``.
    """
    if ndim is None:
        t = check_tensor(x, name, fn, kind="float", allow_empty=True)
        if t.dim() < 2:
            raise ValueError(f"{fn}: {name} must be at least 2-D {dims}, got shape {_shape(t)}")
    else:
        t = check_tensor(x, name, fn, ndim=ndim, kind="float", dims=dims)
    if t.shape[-2] == 0:
        raise ValueError(
            f"{fn}: {name} {dims} has 0 tokens, shape {_shape(t)}; every sample needs at least "
            "one token"
        )
    if t.shape[-1] == 0:
        raise ValueError(f"{fn}: {name} has a zero-sized feature dimension, shape {_shape(t)}")
    if finite:
        check_finite(t, name, fn)
    return t


def check_same_device(fn: str, **tensors: Tensor | None) -> None:
    """All given (non-None) tensors live on one device."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{fn}: {first_name} is on {first.device} but {name} is on {t.device}")


def check_same_width(fn: str, a: Tensor, a_name: str, b: Tensor, b_name: str) -> None:
    """Last dimensions agree (embedding widths)."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{fn}: {a_name} has width {a.shape[-1]} but {b_name} has width {b.shape[-1]}"
        )


def check_labels(
    x: object,
    name: str,
    fn: str,
    *,
    ndim: int | Sequence[int],
    dims: str,
    allow_empty: bool = False,
) -> Tensor:
    """An integer label tensor of any integer dtype (bool refused); return it as int64.

    ``cross_entropy`` and ``gather`` take only int64 targets; converting here is a device-side
    cast, so int32 / int16 / uint8 labels are accepted without a host sync.
    """
    t = check_tensor(x, name, fn, ndim=ndim, kind="int", dims=dims, allow_empty=allow_empty)
    return t.long()


def check_label_range(
    labels: Tensor, name: str, fn: str, num_classes: int, *, ignore_index: int | None = None
) -> None:
    """Every label lies in ``[0, num_classes)`` or equals ``ignore_index``.

    Decided under the :func:`require` policy; the offending values are only gathered for the
    eager message.
    """
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid |= labels == ignore_index
    also = "" if ignore_index is None else f" or equal ignore_index {ignore_index}"
    expected = f"{fn}: {name} must lie in [0, {num_classes}){also}"

    def message() -> str:
        bad = labels[~valid]
        return (
            f"{expected}, got {bad.numel()} values outside it "
            f"(min {int(bad.min())}, max {int(bad.max())})"
        )

    require(valid.all(), message, expected)


def check_ids(ids: object, name: str, fn: str, n: int, rows_name: str) -> Tensor:
    """A 1-D integer id tensor with ``n`` entries (``n`` = rows of ``rows_name``), as int64."""
    t = check_labels(ids, name, fn, ndim=1, dims="(B,)", allow_empty=True)
    if t.shape[0] != n:
        raise ValueError(f"{fn}: {name} has {t.shape[0]} entries but {rows_name} has {n} rows")
    return t


def resolve_pids(
    fn: str,
    image_feats: Tensor,
    text_feats: Tensor,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    *,
    default_instance: bool = True,
    image_name: str = "image_feats",
    text_name: str = "text_feats",
) -> tuple[Tensor, Tensor]:
    """Turn the shared ``pids`` / ``image_pids`` / ``text_pids`` arguments into two id vectors.

    - ``pids`` given: one caption per image row, so ``B_i == B_t == len(pids)``.
    - ``image_pids`` and ``text_pids`` given: sides may differ in length.
    - none given and ``default_instance``: instance labels ``arange(B)`` (needs ``B_i == B_t``).

    ``image_name`` / ``text_name`` are the caller's argument names, used in messages. The ids
    come back as int64 whatever their integer dtype.
    """
    b_i, b_t = image_feats.shape[0], text_feats.shape[0]
    if pids is not None and (image_pids is not None or text_pids is not None):
        raise ValueError(f"{fn}: pass either pids or image_pids/text_pids, not both")
    if pids is not None:
        if b_i != b_t:
            raise ValueError(
                f"{fn}: pids needs one caption per image row, but {image_name} has {b_i} rows "
                f"and {text_name} has {b_t}; pass image_pids and text_pids for unequal sides"
            )
        p = check_ids(pids, "pids", fn, b_i, image_name)
        check_same_device(fn, **{image_name: image_feats, "pids": p})
        return p, p
    if (image_pids is None) != (text_pids is None):
        raise ValueError(f"{fn}: image_pids and text_pids must be given together")
    if image_pids is not None and text_pids is not None:
        ip = check_ids(image_pids, "image_pids", fn, b_i, image_name)
        tp = check_ids(text_pids, "text_pids", fn, b_t, text_name)
        check_same_device(fn, **{image_name: image_feats, "image_pids": ip, "text_pids": tp})
        return ip, tp
    if not default_instance:
        raise ValueError(f"{fn}: pids (or image_pids and text_pids) are required")
    if b_i != b_t:
        raise ValueError(
            f"{fn}: without pids the i-th image must match the i-th caption, but {image_name} "
            f"has {b_i} rows and {text_name} has {b_t}; pass image_pids and text_pids"
        )
    ar = torch.arange(b_i, device=image_feats.device)
    return ar, ar


def check_reduction(reduction: str, fn: str) -> None:
    """``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def check_positive(value: float, name: str, fn: str, *, allow_zero: bool = False) -> None:
    """A real number (``bool`` refused) with ``value > 0`` (``>= 0`` with ``allow_zero``); NaN
    is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value:
        cmp = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be {cmp}, got {value}")


def check_unit_interval(value: float, name: str, fn: str) -> None:
    """A real number (``bool`` refused) in ``[0, 1]``, e.g. a probability; NaN is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    if not 0 <= value <= 1:
        raise ValueError(f"{fn}: {name} must be in [0, 1], got {value}")


def check_choice(value: _T, name: str, fn: str, choices: Sequence[_T]) -> _T:
    """``value`` is one of ``choices``; return it."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_format_version(found: object, supported: int, what: str, fn: str) -> int:
    """Saved files carry an integer ``format_version``; refuse unknown (future) versions."""
    if not isinstance(found, int) or isinstance(found, bool):
        raise ValueError(
            f"{fn}: {what} has no integer format_version (got {found!r}); "
            "it was not written by textreid or is corrupt"
        )
    if found > supported or found < 1:
        raise ValueError(
            f"{fn}: {what} has format_version {found}, but this textreid reads versions up "
            f"to {supported}; upgrade textreid (pip install -U textreid)"
        )
    return found


def check_int(value: object, name: str, fn: str, *, min_value: int | None = None) -> int:
    """A Python ``int`` (``bool`` is refused), at least ``min_value`` when given; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if min_value is not None and value < min_value:
        raise ValueError(f"{fn}: {name} must be >= {min_value}, got {value}")
    return value


def check_token_mask(mask: object, name: str, fn: str, tokens: Tensor, tokens_name: str) -> Tensor:
    """A bool ``[B, N]`` mask matching ``tokens [B, N, D]``, at least one True (real) per row
    (a value check under the :func:`require` policy)."""
    m = check_tensor(mask, name, fn, ndim=2, kind="bool", dims="(B, N)")
    if tuple(m.shape) != tuple(tokens.shape[:2]):
        raise ValueError(
            f"{fn}: {name} has shape {_shape(m)} but {tokens_name} has "
            f"{tuple(tokens.shape[:2])} (batch, tokens)"
        )
    check_same_device(fn, **{tokens_name: tokens, name: m})
    empty_row = f"{fn}: every row of {name} needs at least one True (real) token"
    require(m.any(dim=1).all(), lambda: empty_row, empty_row)
    return m
