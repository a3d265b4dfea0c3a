"""The UCA-style method: distribution + point contrast + attribute reconstruction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.methods._helpers import SIZE, make_batch, params_without_grad
from textreid.heads import GaussianEmbedding
from textreid.losses import (
    AttributeMaskReconstructionLoss,
    DistributionContrastLoss,
    GaussianKLLoss,
    PointContrastLoss,
)
from textreid.methods import UCAMethod, UCAWeights
from textreid.models import create_model
from textreid.text import attribute_positions, attribute_token_sequences, mask_attribute_tokens
from textreid.tokenization import CLIPTokenizer


def _method(tokenizer: CLIPTokenizer, **kw: object) -> UCAMethod:
    torch.manual_seed(0)
    seqs = attribute_token_sequences(tokenizer.encode)
    return UCAMethod(create_model("tiny", image_size=SIZE), seqs, cmt_depth=1, **kw)  # type: ignore[arg-type]


def test_each_term_equals_its_loss_on_the_same_features(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer, num_samples=3, init_log_var=-2.0)
    batch = make_batch(tokenizer)
    torch.manual_seed(7)
    out = m(batch)
    assert list(out.terms) == ["distribution", "point", "reconstruction", "kl"]
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    ids, pids = batch["text_ids"], batch["pids"]
    with torch.no_grad():
        torch.manual_seed(7)
        masking = mask_attribute_tokens(ids, m.attribute_sequences, 49405, mask_prob=0.5)
        image, text = m.embed(batch["images"], ids)
        _, vague = m.embed(batch["images"], masking.input_ids)
        # the masked captions are further captions of the same identities
        captions = GaussianEmbedding(
            torch.cat([text.mean, vague.mean]), torch.cat([text.log_var, vague.log_var])
        )
        both = torch.cat([pids, pids])
        zv, zt = image.sample(3), captions.sample(3)
        dist = DistributionContrastLoss("elk", 0.04)(
            image, captions, image_pids=pids, text_pids=both
        )
        point = PointContrastLoss(3, 0.02, 1.0)(
            image, captions, image_pids=pids, text_pids=both, image_samples=zv, text_samples=zt
        )
        _, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        _, masked = m.encoder.encode_text(masking.input_ids, return_tokens=True)
        logits = m.mlm_head(m.reconstruction(masked, torch.cat([zv, v_tok], dim=1)))
        u = (image.log_var.exp().mean(-1) + vague.log_var.exp().mean(-1)) / 2
        rec = AttributeMaskReconstructionLoss()(logits, masking.labels, u)
        kl = GaussianKLLoss()(image) + GaussianKLLoss()(captions)
    refs = {"distribution": dist, "point": point, "reconstruction": rec, "kl": kl}
    for name, ref in refs.items():
        torch.testing.assert_close(out.terms[name], ref, rtol=1e-5, atol=1e-5)
    # a random half of the attribute words (the method's rate), never anything else
    every = attribute_positions(ids, m.attribute_sequences)
    assert 0 < int(masking.mask.sum()) < int(every.sum())
    assert not bool((masking.mask & ~every).any())


def test_means_are_the_encoder_features_so_the_export_ranks_alike(
    tokenizer: CLIPTokenizer,
) -> None:
    m = _method(tokenizer)
    batch = make_batch(tokenizer)
    with torch.no_grad():
        image, text = m.embed(batch["images"], batch["text_ids"])
        v = F.normalize(m.retrieval_encoder().encode_image(batch["images"]), dim=-1)  # type: ignore[union-attr]
        t = F.normalize(m.encode_text(batch["text_ids"]), dim=-1)
    torch.testing.assert_close(image.mean, v)
    torch.testing.assert_close(text.mean, t)
    torch.testing.assert_close(image.log_var, torch.full_like(image.log_var, -5.0))


def test_gradients_weights_and_determinism(tokenizer: CLIPTokenizer) -> None:
    m = _method(tokenizer)
    batch = make_batch(tokenizer)
    torch.manual_seed(1)
    a = m(batch)
    a.total.backward()
    # Fixed temperatures: CLIP's logit scale is not part of the objective. The heads' mean
    # branches are frozen (the mean is the encoder feature), so they are not listed.
    assert params_without_grad(m) == []
    assert not m.encoder.logit_scale.requires_grad  # fixed temperature
    assert m.image_head.log_var_proj.weight.grad is not None
    assert float(m.image_head.log_var_proj.weight.grad.abs().sum()) > 0
    assert not m.text_head.mean_proj.weight.requires_grad
    torch.manual_seed(1)
    b = m(batch)
    assert torch.equal(a.total, b.total)
    w = _method(
        tokenizer, weights=UCAWeights(distribution=2.0, point=0.5, reconstruction=0.0, kl=0.3)
    )
    torch.manual_seed(1)
    c = w(batch)
    torch.testing.assert_close(c.terms["distribution"], 2 * a.terms["distribution"])
    torch.testing.assert_close(c.terms["point"], 0.5 * a.terms["point"])
    torch.testing.assert_close(c.terms["kl"], 0.3 * a.terms["kl"])
    assert float(c.terms["reconstruction"]) == 0.0


def test_errors(tokenizer: CLIPTokenizer) -> None:
    with pytest.raises(ValueError, match="UCAMethod: attribute_sequences must be a non-empty"):
        UCAMethod(create_model("tiny", image_size=SIZE), [])
    with pytest.raises(ValueError, match=r"UCAMethod: mask_token_id must lie in \(0, 49408\)"):
        _method(tokenizer, mask_token_id=49408)
    with pytest.raises(ValueError, match=r"UCAMethod: the batch has no \['pids'\]"):
        _method(tokenizer)(
            {"images": torch.zeros(1, 3, *SIZE), "text_ids": torch.zeros(1, 77).long()}
        )
    with pytest.raises(ValueError, match="DistributionContrastLoss"):
        _method(tokenizer, distance="cosine")


def test_mask_prob_is_checked(tokenizer: CLIPTokenizer) -> None:
    with pytest.raises(ValueError, match=r"UCAMethod: mask_prob must be in \(0, 1\], got 0"):
        _method(tokenizer, mask_prob=0.0)
    with pytest.raises(TypeError, match="UCAMethod: mask_prob must be a float"):
        _method(tokenizer, mask_prob="half")
