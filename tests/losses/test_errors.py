"""Every documented bad input raises its message, for every loss (one test per message)."""

from __future__ import annotations

import re
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


# Labels of every integer dtype, and the checks of the token / part / multi-level losses.

SMALL_INT_DTYPES = [torch.int32, torch.int16, torch.uint8]


@pytest.mark.parametrize("name", ["IDLoss", "CMPCLoss"])
@pytest.mark.parametrize("dtype", SMALL_INT_DTYPES)
def test_classifier_losses_take_any_integer_pids(name: str, dtype: torch.dtype) -> None:
    v, t = _ok(), _ok()
    want = LOSSES[name](v, t, PIDS)
    torch.testing.assert_close(LOSSES[name](v, t, PIDS.to(dtype)), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["IDLoss", "CMPCLoss"])
def test_classifier_losses_refuse_bool_pids(name: str) -> None:
    with pytest.raises(TypeError, match=f"{name}: pids must be an integer tensor, got torch.bool"):
        LOSSES[name](_ok(), _ok(), torch.tensor([True, False, True]))


def _mlm_inputs() -> tuple[Tensor, Tensor]:
    logits = torch.randn(2, 5, 10)
    labels = torch.tensor([[0, 3, 0, 9, 0], [1, 0, 0, 0, 4]])
    return logits, labels


@pytest.mark.parametrize("dtype", SMALL_INT_DTYPES)
def test_mlm_takes_any_integer_labels(dtype: torch.dtype) -> None:
    from textreid.losses import MLMLoss

    logits, labels = _mlm_inputs()
    want = MLMLoss()(logits, labels)
    torch.testing.assert_close(MLMLoss()(logits, labels.to(dtype)), want, rtol=0, atol=0)


def test_mlm_labels_on_another_device() -> None:
    from textreid.losses import MLMLoss

    logits, labels = _mlm_inputs()
    with pytest.raises(ValueError, match="MLMLoss: logits is on cpu but labels is on meta"):
        MLMLoss(check_finite=False)(logits, labels.to("meta"))


def _amr_inputs() -> tuple[Tensor, Tensor]:
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[-100, 2, 5, -100], [0, -100, -100, 3]])
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16])
def test_attribute_mask_takes_any_integer_labels(dtype: torch.dtype) -> None:
    from textreid.losses import AttributeMaskReconstructionLoss

    loss = AttributeMaskReconstructionLoss(weighting="none")
    logits, labels = _amr_inputs()
    want = loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels.to(dtype)), want, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [6, -3])
@pytest.mark.parametrize("check_finite", [True, False])
def test_attribute_mask_labels_out_of_range(bad: int, check_finite: bool) -> None:
    from textreid.losses import AttributeMaskReconstructionLoss

    loss = AttributeMaskReconstructionLoss(weighting="none", check_finite=check_finite)
    logits, labels = _amr_inputs()
    labels[1, 1] = bad
    with pytest.raises(
        ValueError,
        match=r"AttributeMaskReconstructionLoss: labels must lie in \[0, 6\) or equal "
        rf"ignore_index -100, got 1 values outside it \(min {bad}, max {bad}\)",
    ):
        loss(logits, labels)


def test_attribute_mask_range_honours_ignore_index() -> None:
    from textreid.losses import AttributeMaskReconstructionLoss

    logits, labels = _amr_inputs()
    loss = AttributeMaskReconstructionLoss(ignore_index=-1, weighting="none")
    want = loss(logits, labels.masked_fill(labels == -100, -1))
    torch.testing.assert_close(
        want, AttributeMaskReconstructionLoss(weighting="none")(logits, labels)
    )
    with pytest.raises(ValueError, match=r"or equal ignore_index -1, got 4 values outside it"):
        loss(logits, labels)


def test_attribute_mask_ignore_index_must_be_int() -> None:
    from textreid.losses import AttributeMaskReconstructionLoss

    with pytest.raises(
        TypeError, match="AttributeMaskReconstructionLoss: ignore_index must be an int, got float"
    ):
        AttributeMaskReconstructionLoss(ignore_index=-100.0)  # type: ignore[arg-type]


def _parts(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 5, generator=g, dtype=dtype), torch.randn(
        4, 3, 5, generator=g, dtype=dtype
    )


@pytest.mark.parametrize(
    ("image_dtype", "text_dtype", "want_dtype"),
    [
        (torch.float32, torch.float64, torch.float64),
        (torch.float64, torch.float16, torch.float64),
        (torch.float16, torch.float32, torch.float32),
        (torch.bfloat16, torch.float16, torch.float32),
    ],
)
def test_commonality_loss_mixed_dtypes(
    image_dtype: torch.dtype, text_dtype: torch.dtype, want_dtype: torch.dtype
) -> None:
    from textreid.losses import CommonalityMarginRankingLoss

    v, t = _parts()
    v, t = v.to(image_dtype), t.to(text_dtype)
    pids = torch.tensor([0, 1, 1, 2])
    loss = CommonalityMarginRankingLoss(negatives="all")
    got = loss(v, t, pids)
    # The same (already rounded) values, both sides in the compute dtype.
    want = loss(v.to(want_dtype), t.to(want_dtype), pids)
    assert got.dtype == want_dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_commonality_loss_devices() -> None:
    from textreid.losses import CommonalityMarginRankingLoss

    v, t = _parts()
    pids = torch.tensor([0, 1, 1, 2])
    loss = CommonalityMarginRankingLoss()
    with pytest.raises(
        ValueError,
        match="CommonalityMarginRankingLoss: image_parts is on cpu but text_parts is on meta",
    ):
        loss(v, t.to("meta"), pids)
    with pytest.raises(
        ValueError, match="CommonalityMarginRankingLoss: image_parts is on cpu but pids is on meta"
    ):
        loss(v, t, pids.to("meta"))
    with pytest.raises(
        ValueError,
        match="CommonalityMarginRankingLoss: image_parts is on cpu but commonality is on meta",
    ):
        loss(v, t, pids, commonality=torch.zeros(3, device="meta"))


def test_commonality_loss_messages_name_its_arguments() -> None:
    from textreid.losses import CommonalityMarginRankingLoss

    v, t = _parts()
    with pytest.raises(
        ValueError, match="CommonalityMarginRankingLoss: pids has 3 entries but image_parts has 4"
    ):
        CommonalityMarginRankingLoss()(v, t, PIDS)


def test_part_commonality_checks_its_arguments() -> None:
    from textreid.losses import part_commonality

    v, t = _parts()
    pids = torch.tensor([0, 1, 1, 2])
    with pytest.raises(
        ValueError, match="part_commonality: image_parts has 3 parts but text_parts"
    ):
        part_commonality(v, t[:, :2], pids, pids)
    with pytest.raises(
        ValueError, match="part_commonality: image_parts has width 5 but text_parts"
    ):
        part_commonality(v, t[..., :4], pids, pids)
    with pytest.raises(
        ValueError, match=r"part_commonality: image_parts must be 3-D \(B_i, K, D\), got shape"
    ):
        part_commonality(v[0], t, pids, pids)
    with pytest.raises(
        ValueError, match="part_commonality: text_pids has 3 entries but text_parts"
    ):
        part_commonality(v, t, pids, pids[:3])
    with pytest.raises(TypeError, match="part_commonality: image_pids must be an integer tensor"):
        part_commonality(v, t, pids.float(), pids)
    with pytest.raises(ValueError, match="part_commonality: image_parts is on cpu but text_parts"):
        part_commonality(v, t.to("meta"), pids, pids)
    bad = v.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="part_commonality: image_parts contains 1 non-finite"):
        part_commonality(bad, t, pids, pids)


def test_part_commonality_mixed_dtypes() -> None:
    from textreid.losses import part_commonality

    v, t = _parts()
    pids = torch.tensor([0, 1, 1, 2])
    got = part_commonality(v.float(), t, pids.int(), pids.to(torch.int16))
    torch.testing.assert_close(got, part_commonality(v.float().double(), t, pids, pids))


def test_mla_devices_and_names() -> None:
    from textreid.losses import MultiLevelAlignmentLoss

    loss = MultiLevelAlignmentLoss()
    views = [_ok(), _ok()]
    levels = [_ok(), _ok()]
    with pytest.raises(
        ValueError,
        match=r"MultiLevelAlignmentLoss: image_views\[0\] is on cpu but text_levels\[1\] is on meta",
    ):
        loss(views, [levels[0], levels[1].to("meta")], PIDS)
    with pytest.raises(
        ValueError, match=r"MultiLevelAlignmentLoss: image_views\[0\] is on cpu but pids is on meta"
    ):
        loss(views, levels, PIDS.to("meta"))
    bad = _ok()
    bad[2, 1] = float("inf")
    with pytest.raises(
        ValueError, match=r"MultiLevelAlignmentLoss: text_levels\[1\] contains 1 non-finite"
    ):
        loss(views, [levels[0], bad], PIDS)
    torch.testing.assert_close(loss(views, levels, PIDS.int()), loss(views, levels, PIDS))


@pytest.mark.parametrize(
    ("image_shape", "text_shape", "message"),
    [
        ((3, 0, 4), (3, 5, 4), "EFALoss: image_tokens (B, P, D) has 0 tokens, shape (3, 0, 4)"),
        ((3, 6, 4), (3, 0, 4), "EFALoss: text_tokens (B, L, D) has 0 tokens, shape (3, 0, 4)"),
    ],
)
def test_efa_zero_tokens(
    image_shape: tuple[int, ...], text_shape: tuple[int, ...], message: str
) -> None:
    from textreid.losses import EFALoss

    with pytest.raises(ValueError, match=re.escape(message)):
        EFALoss()(torch.randn(image_shape), torch.randn(text_shape))


def test_efa_devices_checked_before_values() -> None:
    from textreid.losses import EFALoss

    with pytest.raises(
        ValueError, match="EFALoss: image_tokens is on cpu but text_tokens is on meta"
    ):
        EFALoss()(torch.randn(3, 6, 4), torch.randn(3, 5, 4, device="meta"))


MASK_ID, VOCAB = 49405, 49408


@pytest.mark.parametrize("mask_token_id", [1, 0, -5])
def test_mask_for_mlm_mask_token_below_ordinary_tokens(mask_token_id: int) -> None:
    from textreid.text import mask_for_mlm

    with pytest.raises(
        ValueError,
        match=rf"mask_for_mlm: mask_token_id must be at least 2, got {mask_token_id}: the tokens "
        r"that get masked are the ids 0 < id < mask_token_id \(0 is padding",
    ):
        mask_for_mlm(torch.tensor([[49406, 5, 7, 49407]]), mask_token_id, VOCAB)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"probability": "0.15"}, TypeError, "mask_for_mlm: probability must be a real number, got str"),
        ({"probability": True}, TypeError, "mask_for_mlm: probability must be a real number, got bool"),
        ({"generator": 3}, TypeError, "mask_for_mlm: generator must be a torch.Generator or None, got int"),
        ({"mask_token_id": 7.0}, TypeError, "mask_for_mlm: mask_token_id must be an int, got float"),
    ],
)  # fmt: skip
def test_mask_for_mlm_argument_types(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    from textreid.text import mask_for_mlm

    args: dict[str, object] = {"mask_token_id": MASK_ID, "vocab_size": VOCAB, **kwargs}
    with pytest.raises(error, match=message):
        mask_for_mlm(torch.tensor([[49406, 5, 7, 49407]]), **args)  # type: ignore[arg-type]


def test_mask_for_mlm_generator_device() -> None:
    from textreid.text import mask_for_mlm

    ids = torch.tensor([[49406, 5, 7, 49407]], device="meta")
    with pytest.raises(ValueError, match="mask_for_mlm: ids is on meta but generator is on cpu"):
        mask_for_mlm(ids, MASK_ID, VOCAB, generator=torch.Generator())
