"""WeightedSum: totals, detached weighted terms, precomputed terms, parameters, errors."""

from __future__ import annotations

import pytest
import torch

from textreid.losses import (
    CMPCLoss,
    IDLoss,
    InfoNCELoss,
    LossOutput,
    SDMLoss,
    TripletLoss,
    WeightedSum,
)


def test_total_and_terms() -> None:
    v, t, pids = (
        torch.randn(4, 8, requires_grad=True),
        torch.randn(4, 8),
        torch.tensor([0, 1, 1, 2]),
    )
    idl = IDLoss(3, 8)
    obj = WeightedSum({"sdm": (1.0, SDMLoss()), "id": (0.5, idl), "mlm": 2.0})
    mlm = torch.tensor(1.25, requires_grad=True)
    out = obj(v, t, pids, precomputed={"mlm": mlm})
    assert isinstance(out, LossOutput)
    sdm, ident = SDMLoss()(v, t, pids), idl(v, t, pids)
    torch.testing.assert_close(out.total, sdm + 0.5 * ident + 2.5)
    assert list(out.terms) == ["sdm", "id", "mlm"]
    torch.testing.assert_close(out.terms["id"], 0.5 * ident.detach())
    assert all(not term.requires_grad for term in out.terms.values())
    out.total.backward()
    assert v.grad is not None
    assert mlm.grad is not None
    assert idl.classifier.weight.grad is not None
    assert {id(p) for p in obj.parameters()} == {id(p) for p in idl.parameters()}


def test_logit_scale_goes_only_to_terms_that_take_it() -> None:
    v, t = torch.randn(4, 8), torch.randn(4, 8)
    obj = WeightedSum(
        {"sdm": (1.0, SDMLoss()), "nce": (1.0, InfoNCELoss()), "tri": (1.0, TripletLoss())}
    )
    out = obj(v, t, logit_scale=10.0)
    torch.testing.assert_close(out.terms["sdm"], SDMLoss(temperature=0.1)(v, t))
    torch.testing.assert_close(out.terms["nce"], InfoNCELoss(temperature=0.1)(v, t))


def test_precomputed_must_match_declared_terms() -> None:
    obj = WeightedSum({"sdm": (1.0, SDMLoss()), "mlm": 1.0})
    v, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(
        ValueError,
        match=r"WeightedSum: precomputed must hold exactly the weight-only terms \['mlm'\]; missing \['mlm'\], unexpected \[\]",
    ):
        obj(v, t)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['efa'\]"):
        obj(v, t, precomputed={"mlm": torch.tensor(1.0), "efa": torch.tensor(1.0)})


def test_non_scalar_term() -> None:
    obj = WeightedSum({"sdm": (1.0, SDMLoss(reduction="none"))})
    with pytest.raises(
        ValueError, match="WeightedSum: term 'sdm' must give a scalar tensor, got DirectionalLosses"
    ):
        obj(torch.randn(2, 3), torch.randn(2, 3))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="WeightedSum: terms is empty"):
        WeightedSum({})
    with pytest.raises(
        ValueError, match=r"WeightedSum: the weight of 'sdm' must be >= 0, got -1\.0"
    ):
        WeightedSum({"sdm": (-1.0, SDMLoss())})
    with pytest.raises(
        TypeError,
        match=r"WeightedSum: terms\['sdm'\] must be a weight or a \(weight, nn.Module\) pair, got str",
    ):
        WeightedSum({"sdm": "SDMLoss"})


def test_paired_only_loss_takes_pids() -> None:
    # CMPCLoss.forward has no image_pids/text_pids: they must not be passed when not given.
    v, t, pids = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 1, 1, 2])
    cmpc = CMPCLoss(3, 8)
    out = WeightedSum({"cmpc": (2.0, cmpc), "sdm": (1.0, SDMLoss())})(v, t, pids)
    torch.testing.assert_close(out.terms["cmpc"], 2.0 * cmpc(v, t, pids).detach())


def test_unequal_sides_reach_the_terms() -> None:
    v, t = torch.randn(2, 8), torch.randn(4, 8)
    ip, tp = torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1])
    out = WeightedSum({"sdm": (1.0, SDMLoss())})(v, t, image_pids=ip, text_pids=tp)
    torch.testing.assert_close(out.total, SDMLoss()(v, t, image_pids=ip, text_pids=tp))
    with pytest.raises(
        ValueError, match="SDMLoss: image_pids and text_pids must be given together"
    ):
        WeightedSum({"sdm": (1.0, SDMLoss())})(v, t, image_pids=ip)
