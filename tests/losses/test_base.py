"""PairLoss, the base of the pair losses: one signature, the caller's name, declared hyper-parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from textreid.losses import (
    ASDMLoss,
    CMPCLoss,
    CMPMLoss,
    DirectionalLosses,
    IDLoss,
    InfoNCELoss,
    SDMLoss,
    TripletLoss,
    WeightedSum,
)
from textreid.losses.base import Hyperparameter, PairBatch, PairLoss, non_negative
from textreid.losses.functional import (
    asdm_loss,
    cmpc_loss,
    cmpm_loss,
    id_loss,
    infonce_loss,
    sdm_loss,
    triplet_loss,
)

# class -> constructor arguments
CLASSES: dict[type[PairLoss], tuple[int, ...]] = {
    SDMLoss: (),
    ASDMLoss: (),
    InfoNCELoss: (),
    CMPMLoss: (),
    TripletLoss: (),
    IDLoss: (8, 4),
    CMPCLoss: (8, 4),
}
UNSCALED = [CMPMLoss, TripletLoss, IDLoss, CMPCLoss]
PIDS = torch.tensor([0, 1, 2])


def _ok(n: int = 3, d: int = 4) -> Tensor:
    return torch.randn(n, d, dtype=torch.float64)


class MySDM(SDMLoss):
    pass


def test_subclass_reports_its_own_name() -> None:
    with pytest.raises(
        ValueError, match="MySDM: image_feats has width 4 but text_feats has width 5"
    ):
        MySDM()(_ok(), _ok(d=5))
    with pytest.raises(ValueError, match=r"MySDM: temperature must be > 0, got 0\.0"):
        MySDM(temperature=0.0)
    with pytest.raises(ValueError, match=r"MySDM: logit_scale must be > 0, got -1\.0"):
        MySDM()(_ok(), _ok(), logit_scale=-1.0)


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_every_subclass_reports_its_own_name(cls: type[PairLoss]) -> None:
    sub = type("Custom" + cls.__name__, (cls,), {})
    loss = sub(*CLASSES[cls])
    with pytest.raises(ValueError, match=f"Custom{cls.__name__}: pids has 2 entries"):
        loss(_ok(), _ok(), PIDS[:2])
    with pytest.raises(ValueError, match=f"Custom{cls.__name__}: reduction must be one of"):
        sub(*CLASSES[cls], reduction="avg")
    bad = _ok()
    bad[0, 1] = float("nan")
    with pytest.raises(
        ValueError, match=f"Custom{cls.__name__}: image_feats contains 1 non-finite"
    ):
        loss(bad, _ok(), PIDS)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sdm_loss(_ok(), _ok(), temperature=-1.0), "sdm_loss: temperature must be > 0"),
        (lambda: asdm_loss(_ok(), _ok(), alpha=-1.0), "asdm_loss: alpha must be >= 0"),
        (lambda: infonce_loss(_ok(), _ok(), PIDS[:2]), "infonce_loss: pids has 2 entries"),
        (lambda: cmpm_loss(_ok(), _ok(), epsilon=0.0), "cmpm_loss: epsilon must be > 0"),
        (lambda: triplet_loss(_ok(), _ok(), mining="semi"), "triplet_loss: mining must be one of"),
        (
            lambda: id_loss(_ok(), _ok(), PIDS, weight=_ok(2)),
            r"id_loss: pids must lie in 0\.\.1 \(num_classes=2\)",
        ),
        (lambda: cmpc_loss(_ok(), _ok(), weight=_ok(4)), r"cmpc_loss: pids .* are required"),
    ],
)
def test_functional_forms_report_their_own_name(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _params(fn: Callable[..., object]) -> list[tuple[str, object, object]]:
    return [
        (p.name, p.default, p.annotation)
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self"
    ]


def test_every_pair_loss_takes_the_one_signature() -> None:
    want = _params(PairLoss.forward)
    assert [name for name, _, _ in want] == [
        "image_feats", "text_feats", "pids", "image_pids", "text_pids", "logit_scale",
    ]  # fmt: skip
    for cls in CLASSES:
        assert _params(cls.forward) == want, cls.__name__


@pytest.mark.parametrize(
    ("cls", "twin", "not_in_twin", "only_in_twin"),
    [
        (SDMLoss, sdm_loss, (), ()),
        (ASDMLoss, asdm_loss, (), ()),
        # A function has nowhere to keep a learned parameter.
        (InfoNCELoss, infonce_loss, ("learnable",), ()),
        (CMPMLoss, cmpm_loss, (), ()),
        (TripletLoss, triplet_loss, (), ()),
        # The classifier is an argument of the function, owned by the module.
        (IDLoss, id_loss, ("num_classes", "dim"), ("weight", "bias")),
        (CMPCLoss, cmpc_loss, ("num_classes", "dim"), ("weight",)),
    ],
)
def test_functional_signature_is_forward_then_constructor(
    cls: type[PairLoss],
    twin: Callable[..., object],
    not_in_twin: tuple[str, ...],
    only_in_twin: tuple[str, ...],
) -> None:
    ctor = [p for p in _params(cls.__init__) if p[0] not in not_in_twin]
    got = _params(twin)
    extra = [p for p in got if p[0] in only_in_twin]
    assert [p[0] for p in extra] == list(only_in_twin)
    # Same names, order, defaults and annotations: a hyper-parameter cannot drift.
    assert [p for p in got if p[0] not in only_in_twin] == _params(PairLoss.forward) + ctor


@pytest.mark.parametrize("cls", UNSCALED, ids=lambda c: c.__name__)
def test_logit_scale_refused_where_it_cannot_apply(cls: type[PairLoss]) -> None:
    loss = cls(*CLASSES[cls])
    with pytest.raises(TypeError, match=f"{cls.__name__}: logit_scale cannot apply: .+"):
        loss(_ok(), _ok(), PIDS, logit_scale=50.0)
    assert not cls.uses_logit_scale
    assert cls.no_logit_scale_reason != PairLoss.no_logit_scale_reason


def test_functional_refuses_logit_scale_with_its_name() -> None:
    with pytest.raises(TypeError, match="triplet_loss: logit_scale cannot apply: the hinge"):
        triplet_loss(_ok(), _ok(), logit_scale=10.0)
    with pytest.raises(TypeError, match="id_loss: logit_scale cannot apply: a classifier"):
        id_loss(_ok(), _ok(), PIDS, weight=_ok(3), logit_scale=10.0)


@pytest.mark.parametrize(
    ("make", "attribute", "value", "error", "message"),
    [
        (SDMLoss, "temperature", 0.0, ValueError, "SDMLoss: temperature must be > 0, got 0.0"),
        (SDMLoss, "epsilon", -1.0, ValueError, "SDMLoss: epsilon must be > 0"),
        (SDMLoss, "reduction", "avg", ValueError, "SDMLoss: reduction must be one of"),
        (
            ASDMLoss,
            "detach_weight",
            1,
            TypeError,
            "ASDMLoss: detach_weight must be a bool, got int",
        ),
        (TripletLoss, "mining", "semi", ValueError, "TripletLoss: mining must be one of"),
        (MySDM, "temperature", float("nan"), ValueError, "MySDM: temperature must be > 0"),
    ],
)
def test_hyperparameters_are_checked_on_assignment(
    make: Callable[[], PairLoss], attribute: str, value: object, error: type, message: str
) -> None:
    loss = make()
    before = getattr(loss, attribute)
    with pytest.raises(error, match=message):
        setattr(loss, attribute, value)
    assert getattr(loss, attribute) == before


def test_repr_lists_the_hyperparameters() -> None:
    assert repr(SDMLoss()) == "SDMLoss(temperature=0.02, epsilon=1e-08, reduction='mean')"
    assert repr(ASDMLoss(alpha=0.5, reduction="sum")) == (
        "ASDMLoss(alpha=0.5, temperature=0.02, epsilon=1e-08, detach_weight=False, reduction='sum')"
    )
    assert repr(TripletLoss(mining="sum")) == (
        "TripletLoss(margin=0.2, mining='sum', reduction='mean')"
    )
    assert repr(CMPMLoss()) == "CMPMLoss(epsilon=1e-08, reduction='mean')"
    assert repr(InfoNCELoss(learnable=True)) == (
        "InfoNCELoss(temperature=0.07, learnable=True, reduction='mean')"
    )
    assert repr(CMPCLoss(3, 4)) == "CMPCLoss(num_classes=3, dim=4, reduction='mean')"


def test_cmpc_takes_side_ids_of_paired_rows() -> None:
    torch.manual_seed(0)
    loss = CMPCLoss(4, 3, reduction="none").double()
    v, t = _ok(4, 3), _ok(4, 3)
    ip, tp = torch.tensor([0, 1, 1, 3]), torch.tensor([0, 2, 1, 3])
    same = loss(v, t, image_pids=ip, text_pids=ip)
    want = loss(v, t, ip)
    assert torch.equal(same.image_to_text, want.image_to_text)
    assert torch.equal(same.text_to_image, want.text_to_image)
    # Each side's projection is classified as that side's identity.
    mixed = loss(v, t, image_pids=ip, text_pids=tp)
    assert torch.equal(mixed.image_to_text, want.image_to_text)
    assert torch.equal(mixed.text_to_image, loss(v, t, tp).text_to_image)
    with pytest.raises(
        ValueError,
        match="CMPCLoss: image_feats has 3 rows but text_feats has 4; CMPC projects image i "
        "onto its paired caption i",
    ):
        loss(_ok(3, 3), t, image_pids=ip[:3], text_pids=tp)


class _NeedsScale(nn.Module):
    uses_logit_scale = True

    def forward(
        self, image_feats: Tensor, text_feats: Tensor, pids: Tensor | None = None, **kw: object
    ) -> Tensor:
        scale = kw["logit_scale"]
        assert isinstance(scale, float)
        return image_feats.sum() * 0 + scale


class _TakesScaleUndeclared(nn.Module):
    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        pids: Tensor | None = None,
        logit_scale: float | None = None,
    ) -> Tensor:
        return image_feats.sum() * 0 + (1.0 if logit_scale is None else logit_scale)


def test_weighted_sum_sends_logit_scale_to_the_terms_that_declare_it() -> None:
    v, t = _ok(), _ok()
    terms: dict[str, tuple[float, nn.Module]] = {
        name: (1.0, cls(*args).double()) for name, (cls, args) in
        {c.__name__: (c, a) for c, a in CLASSES.items()}.items()
    }  # fmt: skip
    terms["declared"] = (1.0, _NeedsScale())
    terms["undeclared"] = (1.0, _TakesScaleUndeclared())
    out = WeightedSum(terms)(v, t, PIDS, logit_scale=10.0)
    assert float(out.terms["declared"]) == 10.0
    # No signature is inspected: a module that does not declare uses_logit_scale gets none.
    assert float(out.terms["undeclared"]) == 1.0
    sdm = terms["SDMLoss"][1]
    torch.testing.assert_close(out.terms["SDMLoss"], sdm(v, t, PIDS, logit_scale=10.0))
    triplet = terms["TripletLoss"][1]
    torch.testing.assert_close(out.terms["TripletLoss"], triplet(v, t, PIDS))


class MeanPositiveCosine(PairLoss):
    """A loss written on the base: 1 - the cosine of each row's own pair, scaled by ``weight``."""

    no_logit_scale_reason = "it compares raw cosines"
    weight = Hyperparameter(non_negative)

    def __init__(self, weight: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)  # type: ignore[arg-type]
        self.weight = weight

    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        v = torch.nn.functional.normalize(batch.image_feats.to(batch.dtype), dim=1)
        t = torch.nn.functional.normalize(batch.text_feats.to(batch.dtype), dim=1)
        rows = self.weight * (1 - (v * t).sum(dim=1))
        return DirectionalLosses(rows, rows)


def test_a_loss_written_on_the_base() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    loss = MeanPositiveCosine(weight=2.0)
    # Rows: 2·(1 - 1/√2) and 0; "mean" sums the two directions' means.
    want = 2 * (2 * (1 - 2**-0.5) / 2)
    assert loss(v, t).item() == pytest.approx(want, rel=1e-12)
    assert loss(v, t).dtype == torch.float64
    assert repr(loss) == "MeanPositiveCosine(weight=2.0, reduction='mean')"
    with pytest.raises(ValueError, match="MeanPositiveCosine: weight must be >= 0, got -1"):
        MeanPositiveCosine(weight=-1)
    with pytest.raises(TypeError, match="MeanPositiveCosine: logit_scale cannot apply: it"):
        loss(v, t, logit_scale=2.0)
    with pytest.raises(
        ValueError, match="MeanPositiveCosine: without pids the i-th image must match"
    ):
        loss(v, t[:1])


def test_the_base_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        PairLoss()  # type: ignore[abstract]
