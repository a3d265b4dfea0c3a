"""The part-level correspondence method: global loss + ID + commonality margin ranking."""

from __future__ import annotations

import pytest
import torch

from tests.methods._helpers import SIZE, make_batch, params_without_grad
from textreid.losses import CommonalityMarginRankingLoss, InfoNCELoss, SDMLoss
from textreid.methods import CMRMethod, CMRWeights
from textreid.models import create_model
from textreid.tokenization import CLIPTokenizer


def _method(**kw: object) -> CMRMethod:
    torch.manual_seed(0)
    return CMRMethod(create_model("tiny", image_size=SIZE), 3, decoder_depth=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("global_loss", ["sdm", "infonce"])
def test_each_term_equals_its_loss_on_the_same_features(
    tokenizer: CLIPTokenizer, global_loss: str
) -> None:
    m = _method(global_loss=global_loss, num_parts=4, margin=0.3)
    batch = make_batch(tokenizer)
    out = m(batch)
    assert list(out.terms) == [global_loss, "id", "cmr"]
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    ids, pids = batch["text_ids"], batch["pids"]
    with torch.no_grad():
        v, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        t, t_tok = m.encoder.encode_text(ids, return_tokens=True)
        real = torch.arange(77)[None] <= ids.argmax(-1, keepdim=True)
        vp = m.part_decoder(v_tok, "image").fine
        tp = m.part_decoder(t_tok, "text", key_mask=real).fine
        glob = (SDMLoss(0.02) if global_loss == "sdm" else InfoNCELoss(0.02))(v, t, pids)
        cmr = CommonalityMarginRankingLoss(margin=0.3, min_margin=0.05)(vp, tp, pids)
    assert vp.shape == (4, 4, 64)
    torch.testing.assert_close(out.terms[global_loss], glob, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms["id"], m.id_loss(v, t, pids).detach())
    torch.testing.assert_close(out.terms["cmr"], cmr, rtol=1e-5, atol=1e-5)


def test_weights_gradients_and_determinism(tokenizer: CLIPTokenizer) -> None:
    batch = make_batch(tokenizer)
    a = _method()(batch)
    b = _method(weights=CMRWeights(align=2.0, id=0.0, cmr=3.0))(batch)
    torch.testing.assert_close(b.terms["sdm"], 2 * a.terms["sdm"])
    torch.testing.assert_close(b.terms["cmr"], 3 * a.terms["cmr"])
    assert float(b.terms["id"]) == 0.0
    assert torch.equal(_method()(batch).total, a.total)
    m = _method()
    m(batch).total.backward()
    # Fixed temperature: CLIP's logit scale is not part of the objective.
    assert params_without_grad(m) == []
    assert not m.encoder.logit_scale.requires_grad  # fixed temperature


def test_retrieval_is_the_clip_encoder_and_errors(tokenizer: CLIPTokenizer) -> None:
    m = _method()
    assert m.retrieval_encoder() is m.encoder
    with pytest.raises(ValueError, match="CMRMethod: global_loss must be one of"):
        _method(global_loss="triplet")
    with pytest.raises(ValueError, match=r"CMRMethod: the batch has no \['images'\]"):
        m({"text_ids": torch.zeros(2, 77).long(), "pids": torch.zeros(2).long()})
    with pytest.raises(ValueError, match=r"min_margin 0\.5 exceeds margin 0\.2"):
        _method(min_margin=0.5)
