"""IRRA's method (SDM + ID + MLM around CLIP) and the import of IRRA-layout checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from textreid import Retriever
from textreid.convert import convert_irra_checkpoint
from textreid.losses import IDLoss, SDMLoss
from textreid.methods.irra import IRRAMethod
from textreid.models import create_model
from textreid.models.convert import irra_to_textreid

SIZE = (64, 32)


def _batch(b: int = 4, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(b, 77, dtype=torch.long)
    for i in range(b):
        n = 5 + i
        ids[i, 0] = 49406
        ids[i, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=g)
        ids[i, n + 1] = 49407
    return {
        "images": torch.randn(b, 3, *SIZE, generator=g),
        "text_ids": ids,
        "pids": torch.tensor([0, 0, 1, 2][:b]),
    }


def _method(**kw: object) -> IRRAMethod:
    torch.manual_seed(0)
    return IRRAMethod(create_model("tiny", image_size=SIZE), num_classes=3, cmt_depth=1, **kw)  # type: ignore[arg-type]


def test_objective_is_the_sum_of_sdm_id_and_mlm() -> None:
    m = _method()
    batch = _batch()
    torch.manual_seed(5)
    out = m(batch)
    assert set(out.terms) == {"sdm", "id", "mlm"}
    torch.testing.assert_close(out.total.detach(), sum(out.terms.values()))
    # SDM and ID computed independently on the clean caption's features.
    with torch.no_grad():
        v = m.encoder.encode_image(batch["images"])
        t = m.encoder.encode_text(batch["text_ids"])
        sdm = SDMLoss(temperature=0.02)(v, t, batch["pids"])
        idl = m.id_loss(v, t, batch["pids"])
    torch.testing.assert_close(out.terms["sdm"], sdm)
    torch.testing.assert_close(out.terms["id"], idl)
    assert 0 < float(out.terms["mlm"]) < 2 * math.log(49408)


def test_every_parameter_gets_a_gradient() -> None:
    m = _method()
    m(_batch()).total.backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # IRRA's temperature is fixed: the CLIP logit scale is frozen, not left without a gradient.
    assert not m.encoder.logit_scale.requires_grad


def test_masked_caption_quirk_changes_only_the_global_text_feature() -> None:
    batch = _batch()
    clean, quirk = _method(), _method(global_text_from_masked_caption=True)
    torch.manual_seed(7)
    a = clean(batch)
    torch.manual_seed(7)
    b = quirk(batch)
    torch.testing.assert_close(a.terms["mlm"], b.terms["mlm"])
    assert not torch.allclose(a.terms["sdm"], b.terms["sdm"])


def test_sdm_id_only_variant_and_bad_arguments() -> None:
    m = _method(mlm=False)
    assert set(m(_batch()).terms) == {"sdm", "id"}
    with pytest.raises(ValueError, match="global_text_from_masked_caption needs mlm=True"):
        _method(mlm=False, global_text_from_masked_caption=True)
    with pytest.raises(ValueError, match=r"batch has no \['pids'\]"):
        _method()({"images": torch.zeros(1, 3, *SIZE), "text_ids": torch.zeros(1, 77).long()})
    with pytest.raises(TypeError, match="encoder must be a CLIPDualEncoder"):
        IRRAMethod(torch.nn.Linear(2, 2), 3)  # type: ignore[arg-type]


def test_irra_param_rules_hit_the_reference_modules() -> None:
    from textreid.training import build_param_groups, irra_param_rules

    m = _method()
    groups = build_param_groups(m, lr=1e-5, weight_decay=4e-5, rules=irra_param_rules())
    lr_of = {}
    for g in groups:
        for p in g["params"]:
            lr_of[id(p)] = (g["lr"], g["weight_decay"])
    named = dict(m.named_parameters())
    assert lr_of[id(named["irr.cross_attn.in_proj_weight"])] == pytest.approx((5e-5, 4e-5))
    assert lr_of[id(named["irr.ln_pre_t.weight"])] == pytest.approx(
        (1e-5, 4e-5)
    )  # no "cross" in IRRA's name
    assert lr_of[id(named["irr.ln_pre_t.bias"])] == pytest.approx((2e-5, 0.0))
    assert lr_of[id(named["id_loss.classifier.weight"])] == pytest.approx((5e-5, 4e-5))
    assert lr_of[id(named["mlm_head.fc.weight"])] == pytest.approx((5e-5, 4e-5))
    assert lr_of[id(named["encoder.visual.conv1.weight"])] == pytest.approx((1e-5, 4e-5))


# --- IRRA checkpoint import -------------------------------------------------------------


def _irra_state_dict(
    width: int = 64, layers: int = 2, cmt: int = 1, classes: int = 5
) -> dict[str, Tensor]:
    """Random weights under IRRA's documented key list (research notes, IRRA §1.8)."""
    g = torch.Generator().manual_seed(3)

    def r(*shape: int) -> Tensor:
        return (torch.randn(*shape, generator=g) * 0.05).half()

    sd: dict[str, Tensor] = {}

    def blocks(prefix: str, w: int, n: int) -> None:
        for i in range(n):
            p = f"{prefix}.resblocks.{i}."
            sd.update(
                {
                    p + "ln_1.weight": 1 + r(w),
                    p + "ln_1.bias": r(w),
                    p + "attn.in_proj_weight": r(3 * w, w),
                    p + "attn.in_proj_bias": r(3 * w),
                    p + "attn.out_proj.weight": r(w, w),
                    p + "attn.out_proj.bias": r(w),
                    p + "ln_2.weight": 1 + r(w),
                    p + "ln_2.bias": r(w),
                    p + "mlp.c_fc.weight": r(4 * w, w),
                    p + "mlp.c_fc.bias": r(4 * w),
                    p + "mlp.c_proj.weight": r(w, 4 * w),
                    p + "mlp.c_proj.bias": r(w),
                }
            )

    v = "base_model.visual."
    sd.update(
        {
            v + "class_embedding": r(width),
            v + "positional_embedding": r(1 + 4 * 2, width),
            v + "conv1.weight": r(width, 3, 16, 16),
            v + "ln_pre.weight": 1 + r(width),
            v + "ln_pre.bias": r(width),
            v + "ln_post.weight": 1 + r(width),
            v + "ln_post.bias": r(width),
            v + "proj": r(width, 64),
            "base_model.token_embedding.weight": r(49408, width),
            "base_model.positional_embedding": r(77, width),
            "base_model.ln_final.weight": 1 + r(width),
            "base_model.ln_final.bias": r(width),
            "base_model.text_projection": r(width, 64),
        }
    )
    blocks("base_model.visual.transformer", width, layers)
    blocks("base_model.transformer", width, layers)
    blocks("cross_modal_transformer", 64, cmt)
    sd.update(
        {
            "classifier.weight": r(classes, 64),
            "classifier.bias": r(classes),
            "cross_attn.in_proj_weight": r(192, 64),
            "cross_attn.in_proj_bias": r(192),
            "cross_attn.out_proj.weight": r(64, 64),
            "cross_attn.out_proj.bias": r(64),
            "ln_pre_t.weight": 1 + r(64),
            "ln_pre_t.bias": r(64),
            "ln_pre_i.weight": 1 + r(64),
            "ln_pre_i.bias": r(64),
            "ln_post.weight": 1 + r(64),
            "ln_post.bias": r(64),
            "mlm_head.dense.weight": r(64, 64),
            "mlm_head.dense.bias": r(64),
            "mlm_head.ln.weight": 1 + r(64),
            "mlm_head.ln.bias": r(64),
            "mlm_head.fc.weight": r(49408, 64),
            "mlm_head.fc.bias": r(49408),
        }
    )
    return {("module." + k): t for k, t in sd.items()}  # FMFA-style DataParallel prefix


def _ref_transformer(
    x: Tensor, sd: dict[str, Tensor], prefix: str, n: int, heads: int, causal: bool
) -> Tensor:
    """Straight-line pre-LN transformer from raw tensors (independent of textreid)."""
    for i in range(n):
        p = f"{prefix}.resblocks.{i}."
        h = F.layer_norm(x, x.shape[-1:], sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        q, k, v = F.linear(h, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(
            3, -1
        )
        b, n_tok, w = q.shape
        q, k, v = (t.reshape(b, n_tok, heads, w // heads).transpose(1, 2) for t in (q, k, v))
        att = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
        if causal:
            att = att.masked_fill(torch.ones(n_tok, n_tok).triu(1).bool(), float("-inf"))
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n_tok, w)
        x = x + F.linear(o, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, x.shape[-1:], sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return x


def test_irra_checkpoint_converts_and_embeds_like_the_raw_weights(tmp_path: Path) -> None:
    raw = _irra_state_dict()
    path = tmp_path / "best.pth"
    torch.save({"model": raw, "epoch": 3}, path)
    out = convert_irra_checkpoint(path, tmp_path / "converted", image_size=SIZE)
    assert (out / "irra_method.safetensors").is_file()
    r = Retriever.from_pretrained(out)

    sd = {k[len("module.base_model.") :]: v.float() for k, v in raw.items() if "base_model." in k}
    g = torch.Generator().manual_seed(9)
    images = torch.randn(2, 3, *SIZE, generator=g)
    x = F.conv2d(images, sd["visual.conv1.weight"], stride=16).flatten(2).transpose(1, 2)
    x = (
        torch.cat([sd["visual.class_embedding"].expand(2, 1, -1), x], 1)
        + sd["visual.positional_embedding"]
    )
    x = F.layer_norm(x, (64,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    x = _ref_transformer(x, sd, "visual.transformer", 2, 1, causal=False)
    x = F.layer_norm(x[:, 0], (64,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    ref_img = F.normalize(x @ sd["visual.proj"], dim=-1)
    torch.testing.assert_close(r.encode_images(images), ref_img, atol=2e-5, rtol=1e-4)

    ids = r.tokenizer(["a man in a blue shirt"])
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    t = _ref_transformer(t, sd, "transformer", 2, 1, causal=True)
    t = F.layer_norm(t, (64,), sd["ln_final.weight"], sd["ln_final.bias"])
    ref_txt = F.normalize(t[0, ids[0].argmax()] @ sd["text_projection"], dim=-1)
    torch.testing.assert_close(
        r.encode_text(["a man in a blue shirt"])[0], ref_txt, atol=2e-5, rtol=1e-4
    )


def test_irra_renaming_covers_every_module_and_rejects_strangers() -> None:
    renamed = irra_to_textreid(_irra_state_dict())
    assert "id_loss.classifier.weight" in renamed
    assert "irr.ln_pre_t.weight" in renamed
    assert "encoder.visual.proj" in renamed
    assert "mlm_head.fc.bias" in renamed
    assert all(v.dtype == torch.float32 for v in renamed.values())
    with pytest.raises(ValueError, match="belong to no IRRA module"):
        irra_to_textreid({"some.other.weight": torch.zeros(1)})


def test_convert_refuses_pickles_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_irra_checkpoint(tmp_path / "none.pth", tmp_path / "o")
    bad = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": IDLoss(2, 2)}, bad)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_irra_checkpoint(bad, tmp_path / "o")
