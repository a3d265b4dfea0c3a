"""Numeric conventions shared by losses, heads and retrieval."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Real

import torch
from torch import Tensor

__all__: list[str] = []

MIN_TEMPERATURE = 1e-4
"""Smallest accepted temperature ``τ`` (largest logit scale ``1/τ = 10⁴``). Published values
lie well inside: IRRA/FMFA 0.02, CLIP 0.07 with its learned scale clamped at 100, BLIP's
learned temperature clamped at 0.001, IVT 0.5, FMFA's token pooling 1.0. At ``10⁴`` a cosine
logit stays below ``10⁴`` and a softmax gradient below ``2·10⁴`` per pair, far inside every
compute dtype."""

MAX_TEMPERATURE = 1.0 / MIN_TEMPERATURE
"""Largest accepted temperature (smallest logit scale ``10⁻⁴``): beyond it every logit is
indistinguishable from 0 and the loss from its value at random features."""

_ZERO_ROW_GRAD_CAP = 1e6
"""Largest gradient factor :func:`l2_normalize` applies to a zero or near-zero row (see
:func:`zero_row_eps`)."""


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype reductions run in: float32 for half/bfloat16/float32 (and integer) inputs,
    float64 when any input is float64. Half precision loses too much in softmax, log-sum-exp,
    min/max ranges and long dot products, so it is always accumulated in float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _autocast_exists(device_type: str) -> bool:
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is None:  # torch < 2.4 has autocast on these two only
        return device_type in ("cpu", "cuda")
    return bool(available(device_type))


@contextmanager
def float32_region(*tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Run a numerically sensitive block outside autocast; yields ``tensors`` upcast.

    Autocast decides per operation: under ``torch.autocast(dtype=float16)`` a matrix product
    runs in float16 even when its inputs were just upcast to float32, so casting inside a loss
    is not enough. This region turns autocast off for the device types of ``tensors`` and
    yields them with float16/bfloat16 ones upcast to float32 (float32 and float64 unchanged,
    like :func:`compute_dtype`); everything inside then runs in the dtype it is given. Every
    loss and head runs its similarities, logits, softmax / log-sum-exp, logs, norms and
    Gaussian distances in such a region (the pair-loss bases do it for their subclasses).

    A caller that keeps the given half tensors (so that :func:`l2_normalize` floors the norm
    for the dtype the gradient lands in) ignores the yielded copies and casts to its compute
    dtype itself.

    Args:
        tensors: the inputs of the block, on one device (at least one; autocast is turned
            off for its device type).

    Yields:
        ``tensors``, half precision upcast to float32.
    """
    upcast = tuple(t.to(compute_dtype(t)) if t.is_floating_point() else t for t in tensors)
    # One device (the callers validate that); a plain `with` is what torch.compile traces.
    device_type = tensors[0].device.type
    if not _autocast_exists(device_type):
        yield upcast
        return
    with torch.autocast(device_type, enabled=False):
        yield upcast


def check_temperature(value: object, name: str, fn: str) -> float:
    """A temperature (or a logit scale, its inverse) in ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``.

    The range is symmetric, ``[1e-4, 1e4]``, so the same check serves ``τ`` and ``1/τ``.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` is refused).
        ValueError: ``value`` is NaN, infinite or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{fn}: {name} must be a float, got {type(value).__name__}")
    v = float(value)
    if not v > 0:  # NaN fails every comparison
        raise ValueError(f"{fn}: {name} must be > 0, got {value}")
    if not MIN_TEMPERATURE <= v <= MAX_TEMPERATURE:
        raise ValueError(
            f"{fn}: {name} must be finite and in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
            f"so that scaled cosines cannot overflow, got {value}"
        )
    return v


def zero_row_eps(dtype: torch.dtype) -> float:
    """The norm floor of :func:`l2_normalize` for features stored in ``dtype``.

    ``1/eps`` bounds the gradient of the normalisation everywhere, including at a zero row,
    and that gradient lands in ``dtype``. The floor is ``10⁻⁶`` (a row a million times shorter
    than unit-scale features carries no usable direction) and, for float16, ``1/√65504 ≈
    0.0039``: the factor ``1/eps ≤ 256`` then leaves the same factor of headroom for the
    upstream gradient below float16's largest value. bfloat16 has float32's range and so
    float32's floor; float64 shares it too, so that float64 stays a faithful reference of a
    float32 computation.
    """
    cap = min(_ZERO_ROW_GRAD_CAP, math.sqrt(torch.finfo(dtype).max))
    return 1.0 / cap


def pow2_scale(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """Per slice along ``dim`` (kept, size 1): a detached power of two ``s`` with
    ``max|x| / s`` in ``[0.5, 2)``, clamped to the normal range of ``x.dtype``; 0.5 for an
    all-zero slice.

    Dividing by a power of two is exact, so ``x / s`` keeps every bit of ``x`` while its
    squares can neither overflow nor underflow.
    """
    amax = x.detach().abs().amax(dim=dim, keepdim=True)
    _, exponent = torch.frexp(amax)  # amax = m * 2**exponent with m in [0.5, 1)
    info = torch.finfo(x.dtype)
    lo, hi = int(math.log2(info.tiny)), int(math.log2(info.max))
    return torch.ldexp(torch.ones_like(amax), (exponent - 1).clamp(lo, hi))


def l2_norm(x: Tensor, dim: int = -1, *, keepdim: bool = False) -> Tensor:
    """Euclidean norms along ``dim`` computed without overflow or underflow of the squares.

    Scales each slice by a power of two first, so the result equals
    :func:`torch.linalg.vector_norm` bit for bit wherever that does not overflow (features
    around ``1e19`` in float32) or flush to zero (around ``1e-20``). The result is ``inf`` only
    when the norm itself exceeds the dtype. Computed in ``x.dtype``; callers upcast half inputs.
    """
    s = pow2_scale(x, dim)
    out: Tensor = torch.linalg.vector_norm(x / s, dim=dim, keepdim=True) * s
    return out if keepdim else out.squeeze(dim)


def l2_normalize(
    x: Tensor,
    dim: int = -1,
    *,
    dtype: torch.dtype | None = None,
    grad_dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Rows scaled to unit L2 norm: ``x / max(‖x‖, eps)``, overflow-safe and zero-row-safe.

    The one feature normalisation of the package (losses, heads, retrieval). It computes in
    ``dtype`` (default :func:`compute_dtype`: float32 for half inputs) and returns that dtype.
    Each row is first divided by a power of two near its largest entry (exact), so rows from
    ``1e-30`` to ``1e30`` — and float16 rows whose squares would overflow float16 — normalise
    correctly; for ordinary rows the result equals :func:`torch.nn.functional.normalize` bit
    for bit.

    ``eps`` is :func:`zero_row_eps` of ``grad_dtype`` (default ``x.dtype``: 1e-6; 0.0039 for
    float16). A row shorter
    than ``eps`` is divided by ``eps`` instead of its norm, so the zero row maps to zero and
    the Jacobian is bounded by ``1/eps`` everywhere: at a zero row it is exactly
    :math:`I/\text{eps}` (``torch.nn.functional.normalize``'s absolute 1e-12 gives ``10¹²``).

    Args:
        x: floating tensor of any shape.
        dim: the dimension normalised.
        dtype: compute and result dtype.
        grad_dtype: the dtype the gradient finally lands in, when ``x`` is an upcast copy of
            half-precision features (default ``x.dtype``).

    Returns:
        ``x`` normalised along ``dim``, in ``dtype``.
    """
    eps = zero_row_eps(x.dtype if grad_dtype is None else grad_dtype)
    xd = x.to(compute_dtype(x) if dtype is None else dtype)
    s = pow2_scale(xd, dim)
    y = xd / s
    # max(‖x‖, eps) / s, so the division below never overflows however large the row is
    denom = torch.maximum(torch.linalg.vector_norm(y, dim=dim, keepdim=True), eps / s)
    return y / denom
