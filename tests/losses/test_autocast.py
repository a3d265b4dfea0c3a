"""Every exported loss and head under float16 and bfloat16 CPU autocast matches float32.

A model trained with mixed precision hands the losses half-precision features (the output of
an autocast linear layer) or float32 ones (a layer autocast leaves alone). Either way the
numerically sensitive part (similarities, logits, softmax, log, norms, Gaussian distances)
must run in float32: the result and the gradients must equal the float32 computation on the
same values, the features rounded to the half dtype, up to float32 rounding (values) and the
half dtype's rounding of the gradient it lands in (gradients).

The cases are enumerated from ``textreid.losses.__all__`` and ``textreid.heads.__all__``, so a
new export fails :func:`test_every_export_has_a_case` until it has a case or a reasoned skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import textreid.heads as heads
import textreid.losses as losses
from textreid.heads import GaussianEmbedding
from textreid.losses import DirectionalLosses, LossOutput, PairBatch, PairLoss

B, D, K = 8, 64, 3
HALF = [torch.float16, torch.bfloat16]

Inputs = dict[str, Tensor]


@dataclass(frozen=True)
class Case:
    """One export: float32 leaves it differentiates, and a call returning a scalar.

    ``value_tol`` bounds ``|autocast - float32| / (|float32| + 1)``; ``grad_tol`` bounds the
    gradient error relative to the largest float32 gradient, in units of the half dtype's
    machine epsilon (the gradient of a half feature lands in half). A head whose own layers
    run in half under autocast (as they should) states a value tolerance in those units too.
    """

    leaves: Callable[[torch.Generator], Inputs]
    call: Callable[[Inputs], Tensor]
    ints: Callable[[], Inputs] = lambda: {}
    value_tol: float = 1e-5
    value_tol_eps: float = 0.0
    grad_tol: float = 2.0
    module: Callable[[], nn.Module] | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)


def _feats(g: torch.Generator, *names: str, shape: tuple[int, ...] = (B, D)) -> Inputs:
    # Unit-scale rows, as an encoder's projection gives: |x| ~ sqrt(D) * 0.5
    return {n: 0.5 * torch.randn(*shape, generator=g) for n in names}


def _pids() -> Tensor:
    return torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])


def _gauss(x: Inputs, side: str) -> GaussianEmbedding:
    return GaussianEmbedding(x[f"{side}_mean"], x[f"{side}_log_var"])


def _gauss_leaves(g: torch.Generator) -> Inputs:
    out = {}
    for side in ("image", "text"):
        out[f"{side}_mean"] = F.normalize(torch.randn(B, D, generator=g), dim=1)
        out[f"{side}_log_var"] = torch.randn(B, D, generator=g) * 0.5 - 3.0
    return out


def _scalar(out: Tensor | DirectionalLosses | LossOutput | heads.GaussianScores) -> Tensor:
    if isinstance(out, LossOutput):
        return out.total
    if isinstance(out, tuple):
        return sum((t.float().sum() for t in out), torch.zeros(()))
    return out.float().sum()


def _pair(loss: Callable[[], nn.Module], pids: bool = True) -> Case:
    def call(x: Inputs) -> Tensor:
        module = loss()
        return _scalar(module(x["image"], x["text"], _pids() if pids else None))

    return Case(lambda g: _feats(g, "image", "text"), call)


def _gaussian_pair(loss: Callable[[], nn.Module], **kw: object) -> Case:
    def call(x: Inputs) -> Tensor:
        gen = torch.Generator().manual_seed(5)
        extra = {"generator": gen} if getattr(loss(), "uses_samples", False) else {}
        return _scalar(loss()(_gauss(x, "image"), _gauss(x, "text"), _pids(), **extra))

    return Case(_gauss_leaves, call, **kw)  # type: ignore[arg-type]


def _distance(fn: Callable[..., Tensor]) -> Case:
    return Case(_gauss_leaves, lambda x: fn(_gauss(x, "image"), _gauss(x, "text")).sum())


def _samples(g: torch.Generator) -> Inputs:
    return _feats(g, "x", "y", shape=(B, K, D))


def _tokens(g: torch.Generator) -> Inputs:
    return {
        "image": 0.5 * torch.randn(B, 6, D, generator=g),
        "text": 0.5 * torch.randn(B, 5, D, generator=g),
    }


class _UserPairLoss(PairLoss):
    """A loss a user writes on the base: the plain CLIP loss on raw matrix products."""

    uses_logit_scale = True

    def default_logit_scale(self) -> float:
        return 50.0

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        # batch.dtype: the compute dtype the base promises (float32 for half features)
        i = F.normalize(batch.image_feats.to(batch.dtype), dim=1)
        t = F.normalize(batch.text_feats.to(batch.dtype), dim=1)
        logits = batch.logit_scale * i @ t.t()
        target = torch.arange(logits.shape[0])
        return DirectionalLosses(
            F.cross_entropy(logits, target, reduction="none"),
            F.cross_entropy(logits.t(), target, reduction="none"),
        )


def _seeded(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return build()

    return make


def _weighted_sum() -> nn.Module:
    return losses.WeightedSum({"sdm": (1.0, losses.SDMLoss()), "id": (0.5, _seeded(
        lambda: losses.IDLoss(5, D))())})  # fmt: skip


def _mla(x: Inputs) -> Tensor:
    views, levels = [x["image0"], x["image1"]], [x["text0"], x["text1"]]
    return _scalar(losses.MultiLevelAlignmentLoss()(views, levels, _pids()))


def _mlm_leaves(g: torch.Generator) -> Inputs:
    return {"logits": 3.0 * torch.randn(4, 5, 50, generator=g)}


def _mlm_labels() -> Tensor:
    return torch.tensor([[0, 3, 0, 7, 0], [1, 0, 0, 0, 9], [0, 0, 4, 0, 0], [2, 2, 0, 0, 0]])


def _amr(x: Inputs) -> Tensor:
    labels = _mlm_labels().masked_fill(_mlm_labels() == 0, -100)
    uncertainty = x["uncertainty"].abs()
    return losses.AttributeMaskReconstructionLoss()(x["logits"], labels, uncertainty)


def _gaussian_head(pooling: str) -> Case:
    def call(x: Inputs) -> Tensor:
        torch.manual_seed(0)
        head = heads.GaussianHead(D, 32, token_pooling=pooling)  # type: ignore[arg-type]
        out = head(x["tokens"])
        probe = torch.linspace(-1.0, 1.0, 32)  # a unit mean's squares sum to a constant
        return (out.mean.float() * probe).sum() + out.uncertainty().sum()

    # The head's linear layers run in the half dtype under autocast (that is the point of
    # it) and it returns what they give; its softmax and normalisation run in float32.
    return Case(lambda g: {"tokens": torch.randn(B, 6, D, generator=g)}, call, value_tol_eps=8.0,
                grad_tol=16.0)  # fmt: skip


CASES: dict[str, Case] = {
    "ASDMLoss": _pair(losses.ASDMLoss),
    "AttributeMaskReconstructionLoss": Case(
        lambda g: {**_mlm_leaves(g), "uncertainty": torch.rand(4, generator=g)}, _amr
    ),
    "CMPCLoss": _pair(_seeded(lambda: losses.CMPCLoss(5, D))),
    "CMPMLoss": _pair(losses.CMPMLoss),
    "CSDLoss": _gaussian_pair(losses.CSDLoss),
    "CommonalityMarginRankingLoss": Case(
        lambda g: _feats(g, "image", "text", shape=(B, K, D)),
        lambda x: _scalar(losses.CommonalityMarginRankingLoss()(x["image"], x["text"], _pids())),
    ),
    "DistributionContrastLoss": _gaussian_pair(losses.DistributionContrastLoss),
    "EFALoss": Case(_tokens, lambda x: losses.EFALoss()(x["image"], x["text"])),
    "GaussianKLLoss": Case(_gauss_leaves, lambda x: losses.GaussianKLLoss()(_gauss(x, "image"))),
    "IDLoss": _pair(_seeded(lambda: losses.IDLoss(5, D))),
    "InfoNCELoss": _pair(losses.InfoNCELoss, pids=False),
    "MLMLoss": Case(_mlm_leaves, lambda x: losses.MLMLoss()(x["logits"], _mlm_labels())),
    "MultiLevelAlignmentLoss": Case(
        lambda g: _feats(g, "image0", "image1", "text0", "text1"), _mla
    ),
    "PCMELoss": _gaussian_pair(losses.PCMELoss),
    "PairLoss": _pair(_UserPairLoss, pids=False),
    "PointContrastLoss": _gaussian_pair(losses.PointContrastLoss),
    "SDMLoss": _pair(losses.SDMLoss),
    "TripletLoss": _pair(losses.TripletLoss),
    "WeightedSum": _pair(_weighted_sum),
    "part_commonality": Case(
        lambda g: _feats(g, "image", "text", shape=(B, K, D)),
        lambda x: losses.part_commonality(x["image"], x["text"], _pids(), _pids()).sum(),
    ),
    # heads
    "GaussianHead": _gaussian_head("attention"),
    "SparseTokenSimilarity": Case(
        _tokens, lambda x: heads.SparseTokenSimilarity()(x["image"], x["text"]).sum()
    ),
    "bhattacharyya_distance": _distance(heads.bhattacharyya_distance),
    "csd_distance": _distance(heads.csd_distance),
    "gaussian_distance": _distance(lambda a, b: heads.gaussian_distance(a, b, "kl")),
    "gaussian_scores": Case(
        _gauss_leaves,
        lambda x: _scalar(heads.gaussian_scores(_gauss(x, "text"), _gauss(x, "image"))),
    ),
    "kl_divergence": _distance(heads.kl_divergence),
    "log_expected_likelihood": _distance(heads.log_expected_likelihood),
    "match_probability": Case(_samples, lambda x: heads.match_probability(x["x"], x["y"]).sum()),
    "maxsim_logsumexp": Case(
        _tokens, lambda x: heads.maxsim_logsumexp(x["text"][:, None], x["image"][None]).sum()
    ),
    "sample_match_logits": Case(
        _samples, lambda x: heads.sample_match_logits(x["x"], x["y"], 15.0, 15.0).sum()
    ),
    "sparse_aggregate": Case(
        _tokens, lambda x: heads.sparse_aggregate(x["text"], x["image"]).square().sum()
    ),
    "symmetric_kl_divergence": _distance(heads.symmetric_kl_divergence),
    "wasserstein2_distance": _distance(heads.wasserstein2_distance),
}

SKIPPED = {
    # containers and declarations: they compute nothing
    "DirectionalLosses": "a NamedTuple of two tensors",
    "GaussianPairBatch": "the validated call a GaussianPairLoss passes on",
    "PairBatch": "the validated call a PairLoss passes on",
    "Hyperparameter": "a validated attribute declaration",
    "LossOutput": "a NamedTuple of tensors",
    "GaussianEmbedding": "a pair of tensors; its maths is in the distances and losses",
    "GaussianScores": "a NamedTuple of tensors",
    "GAUSSIAN_DISTANCES": "a tuple of names",
    "GaussianPairLoss": "abstract; every subclass in the package is a case",
    # identities in one process (the distributed tests run them across ranks)
    "gather_features": "the identity without torch.distributed",
    "gather_with_grad": "the identity without torch.distributed",
    "blockwise_pairs": "assembles the blocks of a given function (covered via EFALoss)",
}


def test_every_export_has_a_case() -> None:
    exported = set(losses.__all__) | set(heads.__all__)
    missing = exported - set(CASES) - set(SKIPPED)
    assert not missing, f"give these exports an autocast case or a reasoned skip: {missing}"
    assert not (set(CASES) | set(SKIPPED)) - exported


def _run(case: Case, x: Inputs, cast: torch.dtype | None, autocast: torch.dtype | None) -> Tensor:
    given = {k: v.to(cast) if cast is not None else v for k, v in x.items()}
    if autocast is None:
        return case.call(given)
    with torch.autocast("cpu", dtype=autocast):
        return case.call(given)


def _leaves(case: Case, dtype: torch.dtype) -> tuple[Inputs, Inputs]:
    """Float32 leaves holding values exactly representable in ``dtype``, twice."""
    raw = case.leaves(torch.Generator().manual_seed(0))
    rounded = {k: v.to(dtype).float() for k, v in raw.items()}
    return (
        {k: v.clone().requires_grad_(True) for k, v in rounded.items()},
        {k: v.clone().requires_grad_(True) for k, v in rounded.items()},
    )


def _backward(got: Tensor, ref: Tensor) -> None:
    assert got.requires_grad == ref.requires_grad
    if ref.requires_grad:  # part_commonality is detached by design
        got.backward()
        ref.backward()


def _compare(
    case: Case, dtype: torch.dtype, got: Tensor, ref: Tensor, x: Inputs, xr: Inputs
) -> None:
    eps = torch.finfo(dtype).eps
    assert got.dtype in (torch.float32, torch.float64), f"the result is {got.dtype}"
    assert torch.isfinite(got), f"autocast gives {got.item()} where float32 gives {ref.item()}"
    tol = case.value_tol + case.value_tol_eps * eps
    err = abs(got.item() - ref.item()) / (abs(ref.item()) + 1.0)
    assert err <= tol, (
        f"value {got.item()} vs float32 {ref.item()}: rel. error {err:.2e} > {tol:.1e}"
    )
    for k in x:
        g, gr = x[k].grad, xr[k].grad
        if gr is None:  # an input the loss does not differentiate (a detached weight)
            assert g is None, f"{k} gets a gradient under autocast only"
            continue
        assert g is not None, f"no gradient for {k} under autocast"
        assert torch.isfinite(g).all(), f"non-finite gradient for {k}"
        scale = gr.abs().max().item() + 1e-12
        gerr = (g - gr).abs().max().item() / scale
        assert gerr <= case.grad_tol * eps, f"gradient of {k}: rel. error {gerr:.2e}"


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_half_features_under_autocast_match_float32(name: str, dtype: torch.dtype) -> None:
    """Half-precision features (an autocast layer's output) give the float32 result."""
    case = CASES[name]
    x, xr = _leaves(case, dtype)
    got = _run(case, x, dtype, dtype)
    ref = _run(case, xr, None, None)
    _backward(got, ref)
    _compare(case, dtype, got, ref, x, xr)


@pytest.mark.parametrize("dtype", HALF, ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_features_under_autocast_match_float32(name: str, dtype: torch.dtype) -> None:
    """Float32 features stay float32 inside: autocast must not recast the similarities."""
    case = CASES[name]
    x, xr = _leaves(case, dtype)
    got = _run(case, x, None, dtype)
    ref = _run(case, xr, None, None)
    _backward(got, ref)
    _compare(case, dtype, got, ref, x, xr)


@pytest.mark.parametrize("loss", [losses.SDMLoss(), losses.ASDMLoss(), losses.CMPMLoss()])
def test_epsilon_floor_of_an_unmatched_row_survives_float16(loss: nn.Module) -> None:
    """A row without any match is compared with the epsilon floor (1e-8), which float16
    flushes to zero: log(0) would make the row, and the loss, infinite."""
    assert torch.tensor(1e-8, dtype=torch.float16) == 0  # why it must not be computed in half
    g = torch.Generator().manual_seed(1)
    x = {k: v.half().float() for k, v in _feats(g, "image", "text").items()}
    ids = {"image_pids": torch.arange(B), "text_pids": torch.arange(B) + 1}  # image 0 unmatched
    ref = loss(x["image"], x["text"], **ids)
    with torch.autocast("cpu", dtype=torch.float16):
        got = loss(x["image"].half(), x["text"].half(), **ids)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
