"""Every documented bad input raises its message, for every loss (one test per message)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from textreid.losses import (
    ASDMLoss,
    CMPCLoss,
    CMPMLoss,
    IDLoss,
    InfoNCELoss,
    SDMLoss,
    TripletLoss,
)

Call = Callable[..., object]

LOSSES: dict[str, Call] = {
    "SDMLoss": SDMLoss(),
    "ASDMLoss": ASDMLoss(),
    "InfoNCELoss": InfoNCELoss(),
    "CMPMLoss": CMPMLoss(),
    "TripletLoss": TripletLoss(),
    "IDLoss": IDLoss(8, 4),
    "CMPCLoss": CMPCLoss(8, 4),
}
NAMES = list(LOSSES)
PIDS = torch.tensor([0, 1, 2])


def _ok(n: int = 3) -> Tensor:
    return torch.randn(n, 4)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank(name: str) -> None:
    with pytest.raises(
        ValueError, match=rf"{name}: image_feats must be 2-D \(B, D\), got shape \(3, 4, 1\)"
    ):
        LOSSES[name](torch.randn(3, 4, 1), _ok(), PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_not_a_tensor(name: str) -> None:
    with pytest.raises(TypeError, match=f"{name}: text_feats must be a torch.Tensor, got list"):
        LOSSES[name](_ok(), [[0.0] * 4] * 3, PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_integer_features(name: str) -> None:
    with pytest.raises(
        TypeError, match=f"{name}: image_feats has dtype torch.int64; expected a floating dtype"
    ):
        LOSSES[name](torch.ones(3, 4, dtype=torch.long), _ok(), PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_rows(name: str) -> None:
    with pytest.raises(
        ValueError,
        match=f"{name}: pids needs one caption per image row, but image_feats has 3 rows and text_feats has 2",
    ):
        LOSSES[name](_ok(), _ok(2), PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_pids_length(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: pids has 2 entries but image_feats has 3 rows"):
        LOSSES[name](_ok(), _ok(), PIDS[:2])


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_width(name: str) -> None:
    with pytest.raises(
        ValueError, match=f"{name}: image_feats has width 4 but text_feats has width 5"
    ):
        LOSSES[name](_ok(), torch.randn(3, 5), PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_float_pids(name: str) -> None:
    with pytest.raises(
        TypeError, match=f"{name}: pids must be an integer tensor, got torch.float32"
    ):
        LOSSES[name](_ok(), _ok(), PIDS.float())


@pytest.mark.parametrize("name", NAMES)
def test_nan_features(name: str) -> None:
    bad = _ok()
    bad[1, 2] = float("nan")
    with pytest.raises(
        ValueError, match=rf"{name}: text_feats contains 1 non-finite values \(NaN/inf\)"
    ):
        LOSSES[name](_ok(), bad, PIDS)


@pytest.mark.parametrize("name", ["SDMLoss", "InfoNCELoss", "TripletLoss", "CMPMLoss"])
def test_nan_allowed_when_check_disabled(name: str) -> None:
    loss = type(LOSSES[name])(check_finite=False)
    bad = _ok()
    bad[0, 0] = float("inf")
    loss(bad, _ok(), PIDS)  # no error: the caller opted out


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}: empty batch \(image_feats has 0 rows\)"):
        LOSSES[name](torch.randn(0, 4), torch.randn(0, 4), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_devices(name: str) -> None:
    with pytest.raises(
        ValueError, match=f"{name}: image_feats is on cpu but text_feats is on meta"
    ):
        LOSSES[name](_ok(), torch.randn(3, 4, device="meta"), PIDS)


@pytest.mark.parametrize("name", NAMES)
def test_pids_on_another_device(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: image_feats is on cpu but pids is on meta"):
        LOSSES[name](_ok(), _ok(), PIDS.to("meta"))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "CMPCLoss"])
def test_pids_and_side_pids_together(name: str) -> None:
    with pytest.raises(
        ValueError, match=f"{name}: pass either pids or image_pids/text_pids, not both"
    ):
        LOSSES[name](_ok(), _ok(), PIDS, image_pids=PIDS, text_pids=PIDS)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("CMPCLoss", "IDLoss")])
def test_side_pids_alone(name: str) -> None:
    with pytest.raises(
        ValueError, match=f"{name}: image_pids and text_pids must be given together"
    ):
        LOSSES[name](_ok(), _ok(), image_pids=PIDS)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("CMPCLoss", "IDLoss")])
def test_unequal_sides_without_ids(name: str) -> None:
    with pytest.raises(
        ValueError, match=f"{name}: without pids the i-th image must match the i-th caption"
    ):
        LOSSES[name](_ok(), _ok(5))


@pytest.mark.parametrize("name", ["SDMLoss", "ASDMLoss", "InfoNCELoss"])
def test_bad_logit_scale(name: str) -> None:
    loss = LOSSES[name]
    with pytest.raises(ValueError, match=f"{name}: logit_scale must be > 0, got -1.0"):
        loss(_ok(), _ok(), logit_scale=-1.0)
    with pytest.raises(
        ValueError, match=rf"{name}: logit_scale must hold a single value, got shape \(2,\)"
    ):
        loss(_ok(), _ok(), logit_scale=torch.ones(2))
    with pytest.raises(
        ValueError, match=f"{name}: image_feats is on cpu but logit_scale is on meta"
    ):
        loss(_ok(), _ok(), logit_scale=torch.ones((), device="meta"))
    with pytest.raises(
        TypeError, match=f"{name}: logit_scale must be a float or a 1-element tensor, got str"
    ):
        loss(_ok(), _ok(), logit_scale="50")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SDMLoss(temperature=0.0), "SDMLoss: temperature must be > 0, got 0.0"),
        (lambda: SDMLoss(epsilon=-1.0), "SDMLoss: epsilon must be > 0, got -1.0"),
        (lambda: SDMLoss(reduction="avg"), "SDMLoss: reduction must be one of"),
        (lambda: ASDMLoss(alpha=-0.1), r"ASDMLoss: alpha must be >= 0, got -0.1"),
        (lambda: InfoNCELoss(temperature=-1.0), "InfoNCELoss: temperature must be > 0"),
        (lambda: CMPMLoss(epsilon=0.0), "CMPMLoss: epsilon must be > 0"),
        (lambda: TripletLoss(margin=-0.2), "TripletLoss: margin must be >= 0, got -0.2"),
        (
            lambda: TripletLoss(mining="semi"),
            r"TripletLoss: mining must be one of \('hardest', 'sum'\), got 'semi'",
        ),
        (lambda: IDLoss(0, 4), "IDLoss: num_classes must be > 0, got 0"),
        (lambda: CMPCLoss(4, 0), "CMPCLoss: dim must be > 0, got 0"),
    ],
)
def test_bad_constructor_arguments(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_functional_names_itself() -> None:
    from textreid.losses.functional import sdm_loss

    with pytest.raises(ValueError, match="sdm_loss: empty batch"):
        sdm_loss(torch.randn(0, 4), torch.randn(0, 4))


def test_cmpc_pids_out_of_range() -> None:
    with pytest.raises(
        ValueError,
        match=r"CMPCLoss: pids must lie in 0\.\.7 \(num_classes=8\), got values in 0\.\.9",
    ):
        LOSSES["CMPCLoss"](_ok(), _ok(), torch.tensor([0, 9, 1]))


def test_cmpc_requires_pids() -> None:
    with pytest.raises(ValueError, match=r"CMPCLoss: pids .* are required"):
        LOSSES["CMPCLoss"](_ok(), _ok(), None)
