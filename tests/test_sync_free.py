"""Training steps make no device-to-host synchronisation on accelerators.

A CUDA step stalls its queue whenever the host reads a device value: ``.item()`` / ``bool()``
/ ``int()`` (``aten._local_scalar_dense``), ops whose output size depends on values
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``), ``equal``, copies to the
host, and blocking copies from the host. The tests below run one full trainer step (forward,
backward, optimizer) of every shipped recipe on the CPU through *the accelerator path*:
``textreid._checks._HOST_DEVICE_TYPES`` is emptied, so every branch that asks "are reads free
on this device?" answers as it does for a CUDA tensor, and count those operations.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import textreid
from tests.methods._helpers import make_batch
from textreid import _checks
from textreid.losses import IDLoss
from textreid.pipeline import build_method
from textreid.recipes import get_recipe
from textreid.tokenization import CLIPTokenizer
from textreid.training import Trainer

_SYNCING_OPS = frozenset(
    {
        "_local_scalar_dense", "is_nonzero", "item", "nonzero", "masked_select", "equal",
        "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
        "masked_scatter", "repeat_interleave",
    }
)  # fmt: skip
_INDEXING_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
_HOST_READS = frozenset({"cpu", "tolist", "numpy"})


def _where() -> str:
    """The innermost textreid function on the stack (``torch`` if none)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "/textreid/" in path and "/tests/" not in path:
            return frame.f_code.co_name
        frame = frame.f_back  # type: ignore[assignment]
    return "torch"


class SyncCounter(TorchDispatchMode):
    """Counts ``(op, textreid function)`` of every operation that syncs on an accelerator.

    ``host_tensors`` are exempt: tensors that live on the host on every device (PyTorch's
    Adam keeps its step counters there unless ``capturable`` or ``fused``).
    """

    def __init__(self, host_tensors: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        self.host_ids = {id(t) for t in host_tensors}
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        first = args[0] if args else None
        if name in _SYNCING_OPS and not (
            name == "repeat_interleave" and "output_size" in (kwargs or {})
        ):
            if id(first) not in self.host_ids:
                self.counts[(name, _where())] += 1
        elif name in _INDEXING_OPS and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
            for i in args[1]
            if i is not None
        ):
            self.counts[(f"{name}[bool mask]", _where())] += 1
        return func(*args, **(kwargs or {}))


class HostTransferCounter(TorchFunctionMode):
    """Counts copies to the host and blocking copies to a device (both sync on CUDA)."""

    def __init__(self, counts: collections.Counter[tuple[str, str]]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS:
            self.counts[(f"Tensor.{name}", _where())] += 1
        elif name in ("to", "tensor", "as_tensor") and not kwargs.get("non_blocking", False):
            device = kwargs.get("device") or next(
                (a for a in args[1:] if isinstance(a, (torch.device, str))), None
            )
            if device is not None:
                self.counts[(f"blocking {name}(device)", _where())] += 1
        return func(*args, **kwargs)


@pytest.fixture
def accelerator_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every policy branch takes the accelerator side, with the default (non-eager) checks."""
    monkeypatch.setattr(_checks, "_HOST_DEVICE_TYPES", frozenset())
    monkeypatch.delenv(_checks.EAGER_CHECKS_ENV, raising=False)


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(mask_token="<|mask|>")


def _trainer(name: str, tokenizer: CLIPTokenizer, out: Path) -> tuple[Trainer, dict[str, Any]]:
    """The recipe's method and trainer settings on the tiny model of its family."""
    recipe = get_recipe(name)
    tiny = get_recipe("tiny-ivt" if recipe.method == "ivt" else "tiny-irra")
    recipe = recipe.replace(model=tiny.model, model_overrides=tiny.model_overrides, pretrained=None)
    torch.manual_seed(0)
    method = build_method(recipe, 3, tokenizer=tokenizer)
    config = dataclasses.replace(
        recipe.trainer,
        output_dir=str(out),
        device="cpu",
        progress=False,
        tensorboard=False,
        log_every=2,
    )
    batch = make_batch(tokenizer, size=tuple(tiny.data.image_size))
    return Trainer(method, [batch], config), batch


def _step(trainer: Trainer, batch: dict[str, Any]) -> None:
    """What ``Trainer._run_epoch`` does for one batch that completes an update."""
    trainer._forward_backward(batch, 1, True)
    trainer._optimizer_step()


def _count_step(trainer: Trainer, batch: dict[str, Any]) -> dict[tuple[str, str], int]:
    _step(trainer, batch)  # creates the optimizer state
    steps = tuple(s["step"] for s in trainer.optimizer.state.values() if "step" in s)
    assert all(s.device.type == "cpu" for s in steps)
    counter = SyncCounter(host_tensors=steps)
    with HostTransferCounter(counter.counts), counter:
        _step(trainer, batch)
    return dict(counter.counts)


# What may still reach the host in a default step, each with its reason. IVT derives the
# word and phrase levels by decoding the captions when the batch brings no text_levels
# (string work on the host), and its token dropper draws a permutation from a host generator
# (reproducing the released code's draws), whose values are host memory on every device.
_IVT_HOST_WORK = {
    ("Tensor.cpu", "derive_levels"): 1,  # the captions to decode: a real device read
    ("Tensor.tolist", "_id_list"): 4,  # decoding them, from host memory
    ("blocking to(device)", "derive_levels"): 2,  # the re-tokenised levels
    ("_local_scalar_dense", "derive_levels"): 1,  # seed of Python's random, host generator
    ("Tensor.tolist", "token_drop_indices"): 2,  # host generator draws
    ("_local_scalar_dense", "token_drop_indices"): 2,  # host generator draws
}


@pytest.mark.parametrize(
    ("recipe", "allowed"),
    [
        ("irra", {}),
        ("fmfa", {}),
        ("fmfa-v1", {}),
        ("cmr", {}),
        ("uca", {}),
        ("ivt", _IVT_HOST_WORK),
    ],
)
def test_a_default_training_step_makes_no_host_sync_on_accelerators(
    recipe: str,
    allowed: dict[tuple[str, str], int],
    tokenizer: CLIPTokenizer,
    tmp_path: Path,
    accelerator_path: None,
) -> None:
    trainer, batch = _trainer(recipe, tokenizer, tmp_path)
    assert _count_step(trainer, batch) == allowed


def test_ivt_with_its_levels_in_the_batch_only_draws_on_the_host(
    tokenizer: CLIPTokenizer, tmp_path: Path, accelerator_path: None
) -> None:
    trainer, batch = _trainer("ivt", tokenizer, tmp_path)
    batch["text_levels"] = trainer.method.derive_levels(batch["text_ids"])  # type: ignore[operator]
    counts = _count_step(trainer, batch)
    assert {k: v for k, v in counts.items() if k[1] != "token_drop_indices"} == {}


def test_the_counter_sees_the_syncs_of_the_cpu_path(
    tokenizer: CLIPTokenizer, tmp_path: Path
) -> None:
    # Without the override the same step takes the eager checks and the exact MLM gather:
    # the counter must see them, or the zero above would prove nothing.
    trainer, batch = _trainer("irra", tokenizer, tmp_path)
    counts = _count_step(trainer, batch)
    assert counts[("_local_scalar_dense", "require")] >= 10  # finite, ranges, classifier
    assert counts[("index[bool mask]", "_encode")] == 2  # the masked positions
    assert counts[("index_put[bool mask]", "_forward_backward")] == 1  # their gradient


def test_logging_is_one_transfer_every_log_every_updates(
    tokenizer: CLIPTokenizer, tmp_path: Path, accelerator_path: None
) -> None:
    trainer, batch = _trainer("tiny-irra", tokenizer, tmp_path)
    assert trainer.config.grad_clip_norm is not None  # the gradient norm is logged too
    records: list[dict[str, Any]] = []

    class Keep(textreid.training.Callback):
        def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
            records.append(record)

    trainer.callbacks.append(Keep())
    trainer.train_loader = [batch, batch, batch, batch]
    counter = SyncCounter()
    # Count the whole epoch loop; the optimizer's host step counters are the only exemption.
    original = trainer._optimizer_step

    def step() -> Any:
        out = original()
        counter.host_ids |= {id(s["step"]) for s in trainer.optimizer.state.values() if "step" in s}
        return out

    trainer._optimizer_step = step  # type: ignore[method-assign]
    trainer._t0 = 0.0
    with HostTransferCounter(counter.counts), counter:
        trainer._run_epoch()
    transfers = {k: v for k, v in counter.counts.items() if k[1] == "_mean_over_ranks"}
    # Four updates with log_every=2: two log lines, plus the epoch's mean; one read each.
    assert transfers == {("Tensor.tolist", "_mean_over_ranks"): 3}
    assert [r["step"] for r in records] == [2, 4]
    assert all(isinstance(r["grad_norm"], float) and r["grad_norm"] > 0 for r in records)


def test_bad_labels_still_fail_on_the_accelerator_path(accelerator_path: None) -> None:
    loss = IDLoss(3, 4)
    feats = torch.randn(2, 4)
    with pytest.raises(RuntimeError, match=r"IDLoss: pids must lie in 0\.\.2 .*eager_checks"):
        loss(feats, feats, torch.tensor([0, 3]))
    with textreid.eager_checks(), pytest.raises(ValueError, match=r"got values in 0\.\.3"):
        loss(feats, feats, torch.tensor([0, 3]))
