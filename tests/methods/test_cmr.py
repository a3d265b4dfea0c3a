"""The part-level correspondence method: global loss + ID + commonality margin ranking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.methods._helpers import SIZE, make_batch, params_without_grad
from textreid.losses import CommonalityMarginRankingLoss, InfoNCELoss, SDMLoss
from textreid.methods import CMRMethod, CMRWeights
from textreid.models import create_model
from textreid.recipes import get_recipe
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
    assert list(out.terms) == [global_loss, "id", "cmr", "coarse"]
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    ids, pids = batch["text_ids"], batch["pids"]
    with torch.no_grad():
        v, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        t, t_tok = m.encoder.encode_text(ids, return_tokens=True)
        real = torch.arange(77)[None] <= ids.argmax(-1, keepdim=True)
        (vc, vp), (tc, tp) = m.part_decoder(v_tok, "image"), m.part_decoder(t_tok, "text", real)
        glob = (SDMLoss(0.02) if global_loss == "sdm" else InfoNCELoss(0.02))(v, t, pids)
        cmr = CommonalityMarginRankingLoss(margin=0.3, min_margin=0.05)(vp, tp, pids)
        # the coarse embeddings: the same ranking loss, every margin fixed at 0.3
        coarse = CommonalityMarginRankingLoss(margin=0.3, min_margin=0.3)(vc, tc, pids)
        hinge = torch.relu(
            0.3
            - torch.einsum("ikd,ikd->ki", F.normalize(vc, dim=-1), F.normalize(tc, dim=-1))[
                ..., None
            ]
            + torch.einsum("ikd,jkd->kij", F.normalize(vc, dim=-1), F.normalize(tc, dim=-1))
        )
        neg = pids[:, None] != pids[None, :]
        by_hand = (hinge * neg).amax(-1).mean(0).mean() + (
            torch.relu(
                0.3
                - torch.einsum("ikd,ikd->ki", F.normalize(vc, dim=-1), F.normalize(tc, dim=-1))[
                    :, None, :
                ]
                + torch.einsum("ikd,jkd->kij", F.normalize(vc, dim=-1), F.normalize(tc, dim=-1))
            )
            * neg
        ).amax(-2).mean(0).mean()
    assert vp.shape == (4, 4, 64)
    assert vc.shape == (4, 2, 64)
    torch.testing.assert_close(coarse, by_hand)
    torch.testing.assert_close(out.terms["coarse"], coarse, rtol=1e-5, atol=1e-5)
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


def test_coarse_branch_is_on_in_the_recipe_and_can_be_switched_off(
    tokenizer: CLIPTokenizer,
) -> None:
    assert get_recipe("cmr").method_kwargs["num_coarse"] == 2
    assert get_recipe("tiny-cmr").method_kwargs["num_coarse"] == 2
    m = _method(num_coarse=0)
    assert list(m(make_batch(tokenizer)).terms) == ["sdm", "id", "cmr"]
    assert m.part_decoder.num_coarse == 0
    assert m.retrieval_model().scorer().to_config()["coarse_weight"] == 0.0


def test_retrieval_fuses_with_the_method_weights(tokenizer: CLIPTokenizer) -> None:
    m = _method(num_parts=3, part_score_weight=0.5, coarse_score_weight=2.0).eval()
    batch = make_batch(tokenizer)
    model = m.retrieval_model()
    assert model.part_decoder is m.part_decoder  # shared, not copied
    with torch.no_grad():
        q, g = model.encode_text(batch["text_ids"]), model.encode_image(batch["images"])
        scorer = model.scorer()
        got = scorer.score(scorer.prepare(q, "query"), scorer.prepare(g, "gallery"))
        v, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        t, t_tok = m.encoder.encode_text(batch["text_ids"], return_tokens=True)
        image, text = m.decode(v_tok, t_tok, batch["text_ids"])

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    want = cos(t, v)
    for k in range(3):
        want = want + 0.5 / 3 * cos(text.fine[:, k], image.fine[:, k])
    for j in range(2):
        want = want + 2.0 / 2 * cos(text.coarse[:, j], image.coarse[:, j])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
