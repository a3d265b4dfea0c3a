"""FMFA's method: A-SDM + EFA + ID + MLM around CLIP, built on IRRA's shared step."""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import SIZE, make_batch, params_without_grad
from textreid.losses import ASDMLoss, EFALoss, IDLoss, MLMLoss
from textreid.methods import FMFAMethod, FMFAWeights
from textreid.models import create_model
from textreid.text import mask_for_mlm
from textreid.tokenization import CLIPTokenizer


def _method(**kw: object) -> FMFAMethod:
    torch.manual_seed(0)
    return FMFAMethod(create_model("tiny", image_size=SIZE), 3, cmt_depth=1, **kw)  # type: ignore[arg-type]


def test_each_term_equals_its_loss_on_the_same_features(tokenizer: CLIPTokenizer) -> None:
    m = _method(alpha=10.0, efa_temperature=0.1, margin_patch=0.1)
    batch = make_batch(tokenizer)
    torch.manual_seed(3)
    out = m(batch)
    assert list(out.terms) == ["mlm", "asdm", "efa", "id"]
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    ids, pids = batch["text_ids"], batch["pids"]
    with torch.no_grad():
        torch.manual_seed(3)
        masked, labels = mask_for_mlm(ids, 49405, 49408)
        v, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        _, m_tok = m.encoder.encode_text(masked, return_tokens=True)
        mlm = MLMLoss(49408)(m.mlm_head(m.irr(m_tok, v_tok)), labels)
        t, t_tok = m.encoder.encode_text(ids, return_tokens=True)
        asdm = ASDMLoss(alpha=10.0, temperature=0.02)(v, t, pids)
        efa = EFALoss(temperature=0.1, margin_text=0.1, margin_patch=0.1)(v_tok[:, 1:], t_tok)
        idl = m.id_loss(v, t, pids)
    for name, ref in {"mlm": mlm, "asdm": asdm, "efa": efa, "id": idl}.items():
        torch.testing.assert_close(out.terms[name], ref, rtol=1e-5, atol=1e-5)
    assert isinstance(m.id_loss, IDLoss)


def test_weights_scale_their_terms(tokenizer: CLIPTokenizer) -> None:
    batch = make_batch(tokenizer)
    torch.manual_seed(1)
    a = _method()(batch)
    torch.manual_seed(1)
    b = _method(weights=FMFAWeights(asdm=2.0, id=0.5, mlm=3.0, efa=0.25))(batch)
    for name, w in {"asdm": 2.0, "id": 0.5, "mlm": 3.0, "efa": 0.25}.items():
        torch.testing.assert_close(b.terms[name], w * a.terms[name])


def test_every_parameter_gets_a_gradient(tokenizer: CLIPTokenizer) -> None:
    m = _method()
    m(make_batch(tokenizer)).total.backward()
    # The temperature is fixed (as in IRRA and FMFA), so CLIP's logit scale is not trained.
    assert params_without_grad(m) == []
    assert not m.encoder.logit_scale.requires_grad  # fixed temperature


def test_deterministic_under_a_seed(tokenizer: CLIPTokenizer) -> None:
    m = _method()
    batch = make_batch(tokenizer)
    torch.manual_seed(11)
    a = m(batch)
    torch.manual_seed(11)
    b = m(batch)
    assert all(torch.equal(a.terms[k], b.terms[k]) for k in a.terms)
    assert torch.equal(a.total, b.total)


def test_masked_caption_quirk_also_feeds_efa(tokenizer: CLIPTokenizer) -> None:
    batch = make_batch(tokenizer)
    torch.manual_seed(4)
    clean = _method()(batch)
    torch.manual_seed(4)
    quirk = _method(global_text_from_masked_caption=True)(batch)
    torch.testing.assert_close(clean.terms["mlm"], quirk.terms["mlm"])
    assert not torch.allclose(clean.terms["efa"], quirk.terms["efa"])


def test_without_mlm_and_bad_input(tokenizer: CLIPTokenizer) -> None:
    m = _method(mlm=False)
    assert list(m(make_batch(tokenizer)).terms) == ["asdm", "efa", "id"]
    assert not hasattr(m, "irr")
    with pytest.raises(ValueError, match=r"FMFAMethod: the batch has no \['pids'\]"):
        m({"images": torch.zeros(2, 3, *SIZE), "text_ids": torch.zeros(2, 77).long()})
    with pytest.raises(ValueError, match="FMFAMethod: global_text_from_masked_caption needs"):
        _method(mlm=False, global_text_from_masked_caption=True)
    with pytest.raises(ValueError, match="ASDMLoss"):
        _method(alpha=-1.0)
