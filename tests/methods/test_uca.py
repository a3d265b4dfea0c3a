"""The UCA-style method: distribution + point contrast + attribute reconstruction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.methods._helpers import SIZE, make_batch, params_without_grad
from textreid.losses import (
    AttributeMaskReconstructionLoss,
    DistributionContrastLoss,
    PointContrastLoss,
)
from textreid.methods import UCAMethod, UCAWeights
from textreid.models import create_model
from textreid.text import attribute_token_sequences, mask_attribute_tokens
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
    assert list(out.terms) == ["distribution", "point", "reconstruction"]
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    ids, pids = batch["text_ids"], batch["pids"]
    with torch.no_grad():
        torch.manual_seed(7)
        image, text = m.embed(batch["images"], ids)
        zv, zt = image.sample(3), text.sample(3)
        dist = DistributionContrastLoss("wasserstein", 0.04)(image, text, pids)
        point = PointContrastLoss(3, 0.02, 1.0)(
            image, text, pids, image_samples=zv, text_samples=zt
        )
        masking = mask_attribute_tokens(ids, m.attribute_sequences, 49405)
        _, v_tok = m.encoder.encode_image(batch["images"], return_tokens=True)
        _, masked = m.encoder.encode_text(masking.input_ids, return_tokens=True)
        logits = m.mlm_head(m.reconstruction(masked, torch.cat([zv, v_tok], dim=1)))
        u = (image.log_var.exp().mean(-1) + text.log_var.exp().mean(-1)) / 2
        rec = AttributeMaskReconstructionLoss()(logits, masking.labels, u)
    for name, ref in {"distribution": dist, "point": point, "reconstruction": rec}.items():
        torch.testing.assert_close(out.terms[name], ref, rtol=1e-5, atol=1e-5)
    assert int(masking.mask.sum()) >= 8  # every caption holds colour and garment words
    red = tokenizer.encode("red")[0]
    assert bool((masking.labels[0] == red).any())


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
    w = _method(tokenizer, weights=UCAWeights(distribution=2.0, point=0.5, reconstruction=0.0))
    torch.manual_seed(1)
    c = w(batch)
    torch.testing.assert_close(c.terms["distribution"], 2 * a.terms["distribution"])
    torch.testing.assert_close(c.terms["point"], 0.5 * a.terms["point"])
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
