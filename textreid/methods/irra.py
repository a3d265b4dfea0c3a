"""IRRA: implicit relation reasoning and similarity distribution matching.

Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image Person
Retrieval", CVPR 2023, arXiv 2303.12501. The objective is
``L = L_sdm + L_id + L_mlm`` (weights 1 each): SDM on the global features, identity
classification of both global features, and masked language modelling through a
cross-modal transformer whose masked text tokens attend to the image tokens.
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from textreid._checks import check_positive, reads_are_free
from textreid.losses.combine import LossOutput
from textreid.losses.id import IDLoss
from textreid.losses.mlm import MLMLoss
from textreid.losses.sdm import SDMLoss
from textreid.methods.base import DualEncoderMethod, require_batch_keys
from textreid.models.clip import CLIPDualEncoder
from textreid.models.cross_modal import CrossModalTransformer, MLMHead
from textreid.text import mask_for_mlm

__all__ = ["IRRAMethod", "IRRAWeights", "convert_irra_checkpoint", "irra_to_textreid"]

IRRA_MASK_TOKEN_ID = 49405


@dataclass(frozen=True)
class IRRAWeights:
    """Loss weights of IRRA's objective (the paper's are all 1)."""

    sdm: float = 1.0
    id: float = 1.0
    mlm: float = 1.0


class _IRRAStep(NamedTuple):
    """What one IRRA-family forward computes before the method-specific losses.

    ``image_feats [B, D]`` and ``text_feats [B, D]`` are float32 global features,
    ``image_tokens [B, P, D]`` (class token first) and ``text_tokens [B, L, D]`` every projected
    token of the caption behind ``text_feats``; ``mlm`` is the unweighted MLM loss (None without
    the MLM branch).
    """

    image_feats: Tensor
    image_tokens: Tensor
    text_feats: Tensor
    text_tokens: Tensor
    mlm: Tensor | None


class _IRRABase(DualEncoderMethod):
    """IRRA's encoder step shared by IRRA and FMFA: CLIP towers, ID classifier and the
    implicit relation reasoning (cross-modal MLM) branch. Subclasses add the losses on the
    global (and token) features in :meth:`_terms`."""

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        temperature: float,
        cmt_depth: int,
        mlm: bool,
        mask_token_id: int,
        mlm_probability: float,
        global_text_from_masked_caption: bool,
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        check_positive(temperature, "temperature", fn)
        dim = encoder.config.embed_dim
        vocab = encoder.config.text.vocab_size
        if mlm and not 0 < mask_token_id < vocab:
            raise ValueError(f"{fn}: mask_token_id must lie in (0, {vocab}), got {mask_token_id}")
        if global_text_from_masked_caption and not mlm:
            raise ValueError(f"{fn}: global_text_from_masked_caption needs mlm=True")
        self.temperature = temperature
        self.use_mlm = mlm
        self.mask_token_id = mask_token_id
        self.mlm_probability = mlm_probability
        self.global_text_from_masked_caption = global_text_from_masked_caption
        self.id_loss = IDLoss(num_classes, dim)
        if mlm:
            heads = max(1, dim // 64)
            # Named "irr" so IRRA's per-module rules (substring "cross") hit the same tensors
            # as in the reference: cross_attn and cross_modal_transformer, not the LayerNorms.
            self.irr = CrossModalTransformer(dim, depth=cmt_depth, heads=heads)
            self.mlm_head = MLMHead(dim, vocab, depth=cmt_depth)
            self.mlm_loss = MLMLoss(vocab)

    def _encode(self, batch: dict[str, Tensor]) -> _IRRAStep:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        images, ids = batch["images"], batch["text_ids"]
        image_feats, image_tokens = self.encoder.encode_image(images, return_tokens=True)
        mlm: Tensor | None = None
        if self.use_mlm:
            masked, labels = mask_for_mlm(
                ids,
                self.mask_token_id,
                self.encoder.config.text.vocab_size,
                probability=self.mlm_probability,
            )
            masked_feats, masked_tokens = self.encoder.encode_text(masked, return_tokens=True)
            hidden = self.irr(masked_tokens, image_tokens)
            if reads_are_free(hidden.device):
                # The vocabulary projection dominates the cost; only masked positions have a
                # label, so project those alone (same loss as IRRA's full [B, L, V] logits).
                # Their number is a host value here, so the gather costs no sync.
                picked = labels != 0
                logits = self.mlm_head(hidden[picked][None])
                mlm = self.mlm_loss(logits.float(), labels[picked][None])
            else:
                # On an accelerator that number lives on the device and a gather would wait
                # for it every step: project every position, as IRRA does, and let the
                # loss's ignore_index drop the unmasked ones (same value, fixed shapes).
                mlm = self.mlm_loss(self.mlm_head(hidden).float(), labels)
        if self.global_text_from_masked_caption:
            text_feats, text_tokens = masked_feats, masked_tokens
        else:
            text_feats, text_tokens = self.encoder.encode_text(ids, return_tokens=True)
        return _IRRAStep(
            image_feats.float(), image_tokens.float(), text_feats.float(), text_tokens.float(), mlm
        )

    @abstractmethod
    def _terms(self, step: _IRRAStep, pids: Tensor) -> dict[str, Tensor]:
        """The weighted loss terms of one batch."""

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        terms = self._terms(self._encode(batch), batch["pids"])
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


class IRRAMethod(_IRRABase):
    """IRRA's training objective around a CLIP dual encoder.

    Args:
        encoder: the CLIP dual encoder (ViT-B/16 at 384x128 in the paper).
        num_classes: training identities (size of the shared ID classifier).
        temperature: SDM temperature (0.02; fixed, not learned, as in IRRA).
        weights: per-term weights.
        cmt_depth: layers of the cross-modal transformer (4).
        mlm: train the implicit relation reasoning branch (MLM); off gives SDM + ID only.
        mask_token_id: id of the MLM mask token (IRRA replaces the last BPE merge, 49405).
        mlm_probability: fraction of caption tokens masked (0.15, 80/10/10 rule).
        global_text_from_masked_caption: reproduce IRRA's released code, where an in-place
            bug makes SDM and ID see the *masked* caption (research notes: IRRA issues #13,
            #21, #29). Off by default: SDM and ID use the clean caption.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]`` (training labels
    ``0..num_classes-1``). Loss terms: ``sdm``, ``id`` and (with ``mlm``) ``mlm``, each
    already multiplied by its weight; ``total`` is their sum.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        temperature: float = 0.02,
        weights: IRRAWeights = IRRAWeights(),
        cmt_depth: int = 4,
        mlm: bool = True,
        mask_token_id: int = IRRA_MASK_TOKEN_ID,
        mlm_probability: float = 0.15,
        global_text_from_masked_caption: bool = False,
    ) -> None:
        super().__init__(
            encoder,
            num_classes,
            temperature=temperature,
            cmt_depth=cmt_depth,
            mlm=mlm,
            mask_token_id=mask_token_id,
            mlm_probability=mlm_probability,
            global_text_from_masked_caption=global_text_from_masked_caption,
        )
        self.weights = weights
        self.sdm = SDMLoss(temperature=temperature)

    def _terms(self, step: _IRRAStep, pids: Tensor) -> dict[str, Tensor]:
        w = self.weights
        terms = {} if step.mlm is None else {"mlm": w.mlm * step.mlm}
        terms["sdm"] = w.sdm * self.sdm(step.image_feats, step.text_feats, pids)
        terms["id"] = w.id * self.id_loss(step.image_feats, step.text_feats, pids)
        return terms


def irra_to_textreid(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an IRRA-layout state dict (also FMFA, RDE) to :class:`IRRAMethod`'s names.

    ``base_model.*`` (OpenAI CLIP names) -> ``encoder.*``; ``classifier.*`` ->
    ``id_loss.classifier.*``; ``cross_attn.*``, ``cross_modal_transformer.*``, ``ln_pre_t``,
    ``ln_pre_i``, ``ln_post`` -> ``irr.*``; ``mlm_head.*`` stays. A DataParallel ``module.``
    prefix is stripped; CLIP bookkeeping entries (``input_resolution``, ``context_length``,
    ``vocab_size``) are dropped; fp16 tensors become float32.

    Raises:
        ValueError: a key of no known IRRA module (listed).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    irr_prefixes = ("cross_attn.", "cross_modal_transformer.", "ln_pre_t.", "ln_pre_i.", "ln_post.")
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        tensor = value.float() if value.is_floating_point() else value
        if k.startswith("base_model."):
            name = k[len("base_model.") :]
            if name in ("input_resolution", "context_length", "vocab_size"):
                continue
            out["encoder." + name] = tensor
        elif k.startswith("classifier."):
            out["id_loss." + k] = tensor
        elif k.startswith(irr_prefixes):
            out["irr." + k] = tensor
        elif k.startswith("mlm_head."):
            out[k] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"irra_to_textreid: {len(unknown)} keys belong to no IRRA module: {sorted(unknown)[:10]}"
        )
    return out


def convert_irra_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    image_size: tuple[int, ...] = (384, 128),
    stride: int | None = None,
) -> Path:
    """Turn an IRRA-family ``best.pth`` into a textreid retriever folder.

    The file is read with ``torch.load(weights_only=True)`` (no arbitrary pickles). The CLIP
    towers become the retriever (``config.json`` + ``model.safetensors``); the whole method
    (cross-modal transformer, MLM head, ID classifier) is also written, in textreid names, to
    ``irra_method.safetensors`` for continued training with :class:`IRRAMethod`.

    Args:
        checkpoint: the ``.pth`` file (``{"model": state_dict, ...}`` or a bare state dict).
        out_dir: output folder.
        image_size: the ``(H, W)`` the checkpoint was trained at (IRRA: 384x128); it fixes
            the checkpoint's patch grid, which is not square.
        stride: patch stride used in training (default: the patch size).

    Returns:
        The output folder.
    """
    from safetensors.torch import save_file

    from textreid._untrusted import torch_load_weights_only
    from textreid.config import PreprocessConfig
    from textreid.hub import Retriever
    from textreid.models.load import load_clip, load_state_dict_strict
    from textreid.tokenization import CLIPTokenizer

    fn = "convert_irra_checkpoint"
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: checkpoint {path} does not exist")
    if len(image_size) != 2:
        raise ValueError(f"{fn}: image_size must be (H, W), got {image_size}")
    obj = torch_load_weights_only(path, fn)
    raw = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ValueError(f"{fn}: {path} holds no state dict (expected {{'model': state_dict}})")
    state = irra_to_textreid(raw)
    # IRRA keeps its temperature fixed (0.02) and saves no logit scale: store the one it used.
    state.setdefault("encoder.logit_scale", torch.tensor(math.log(1 / 0.02)))
    clip_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if "visual.conv1.weight" not in clip_state:
        raise ValueError(f"{fn}: {path} has no base_model.visual.conv1.weight; not an IRRA file")
    patch = int(clip_state["visual.conv1.weight"].shape[-1])
    step = stride or patch
    size = (int(image_size[0]), int(image_size[1]))
    grid = ((size[0] - patch) // step + 1, (size[1] - patch) // step + 1)
    encoder = load_clip(
        clip_state,
        image_size=size,
        stride=stride,
        checkpoint_grid=grid,
        vision={"pos_embed_resample_mode": "bilinear", "pos_embed_antialias": False},
    )
    out = Path(out_dir)
    mlm = any(k.startswith("irr.") for k in state)
    if "id_loss.classifier.weight" in state:
        num_classes = int(state["id_loss.classifier.weight"].shape[0])
        depth = len(
            {
                k.split(".")[3]
                for k in state
                if k.startswith("irr.cross_modal_transformer.resblocks.")
            }
        )
        method = IRRAMethod(encoder, num_classes, cmt_depth=max(depth, 1), mlm=mlm)
        load_state_dict_strict(method, state)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in method.state_dict().items()},
            str(out / "irra_method.safetensors"),
        )
    tokenizer = CLIPTokenizer(
        context_length=encoder.config.text.context_length, mask_token="<|mask|>" if mlm else None
    )
    retriever = Retriever(encoder, tokenizer, PreprocessConfig(image_size=size))
    retriever.card.description = f"Converted from the IRRA-layout checkpoint {path.name}."
    retriever.card.recipe = "irra"
    return retriever.save_pretrained(out)
