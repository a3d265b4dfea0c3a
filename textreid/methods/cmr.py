"""Part-level correspondence with a commonality-based margin ranking loss (experimental).

Park, Jeong, Kim and Kwak, "Improving Text-based Person Search via Part-level Cross-modal
Correspondence", arXiv 2501.00318, 2024. A decoder of learnable part queries, shared by both
modalities, turns each encoder's tokens into part embeddings; part k of an image and part k
of a caption are compared directly. The decoder's queries give *coarse* embeddings besides
the fine part embeddings, as the paper describes. Only the paper's first page is readable: the
query counts, decoder depth, the coarse embeddings' loss, loss weights, the retrieval fusion
and the exact commonality margin are **our choices**, and the ranking loss is
:class:`~textreid.losses.CommonalityMarginRankingLoss`'s provisional design.

.. math::
    \\mathcal{L} = \\mathcal{L}_{global}(v, t) + \\mathcal{L}_{id}(v, t)
    + \\mathcal{L}_{rank}(C^v, C^t) + \\mathcal{L}_{cmr}(P^v, P^t)

with :math:`v, t` the CLIP global features, :math:`C^v, C^t` ``[B, Q, D]`` the coarse
embeddings and :math:`P^v, P^t` ``[B, K, D]`` the fine part embeddings. Retrieval fuses the
three similarities (:class:`~textreid.retrieval.scorers.PartScorer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from textreid._checks import check_choice, check_int, check_positive
from textreid.losses.combine import LossOutput
from textreid.losses.commonality import CommonalityMarginRankingLoss
from textreid.losses.id import IDLoss
from textreid.losses.infonce import InfoNCELoss
from textreid.losses.sdm import SDMLoss
from textreid.methods._text import caption_key_mask
from textreid.methods.base import DualEncoderMethod, register_method, require_batch_keys
from textreid.models.clip import CLIPDualEncoder
from textreid.models.part_decoder import PartEmbeddings, PartQueryDecoder
from textreid.retrieval.models import CMRPartsModel
from textreid.retrieval.scorers import PartScorer

__all__ = ["CMRMethod", "CMRWeights"]


@dataclass(frozen=True)
class CMRWeights:
    """Loss weights (ours: all 1). ``align`` weighs the global loss (SDM or InfoNCE),
    ``coarse`` the ranking loss of the coarse embeddings."""

    align: float = 1.0
    id: float = 1.0
    cmr: float = 1.0
    coarse: float = 1.0


class CMRMethod(DualEncoderMethod):
    """Global alignment + ID + commonality-based margin ranking on part embeddings.

    A :class:`~textreid.models.PartQueryDecoder` (shared queries and weights, modality-specific
    key/value LayerNorms) reads the projected image tokens (class token included) and the
    caption's tokens up to its end token; its first ``num_coarse`` outputs are the coarse
    embeddings, the next ``num_parts`` the fine part embeddings. Both come from the same
    shared queries (the paper's coarse-to-fine embeddings), so coarse query j of an image and
    of a caption are aligned like the parts.

    What the paper's first page does not say, and we chose: the coarse embeddings are trained
    with the same bidirectional ranking loss at the fixed margin ``margin`` (commonality is a
    property of body parts, which the coarse embeddings are not; the loss is
    :class:`~textreid.losses.CommonalityMarginRankingLoss` with every commonality 0), and
    retrieval scores

    .. math::
        s(t, v) = \\cos(t, v) + w_p \\frac1K \\sum_k \\cos(P^t_k, P^v_k)
        + w_c \\frac1Q \\sum_j \\cos(C^t_j, C^v_j)

    with :math:`w_p` = ``part_score_weight`` and :math:`w_c` = ``coarse_score_weight``
    (:class:`~textreid.retrieval.scorers.PartScorer`, which :meth:`retrieval_model` uses).

    Args:
        encoder: the CLIP dual encoder.
        num_classes: training identities (ID classifier size).
        num_parts: fine part queries K (ours: 6).
        num_coarse: coarse queries Q (ours: 2; 0 drops the coarse branch and its loss).
        decoder_depth: transformer layers of the decoder after its cross-attention (ours: 2).
        global_loss: ``"sdm"`` (:class:`~textreid.losses.SDMLoss`) or ``"infonce"``
            (:class:`~textreid.losses.InfoNCELoss`, identity positives) on the global features.
        temperature: temperature of the global loss (0.02, fixed).
        margin: part margin :math:`m_0` of the ranking loss (0.2).
        min_margin: smallest margin for the most common parts (0.05).
        negatives: ``"hardest"`` or ``"all"`` negatives per part.
        part_score_weight: :math:`w_p`, the fine parts' share of the retrieval score (1).
        coarse_score_weight: :math:`w_c`, the coarse embeddings' share (1; unused without
            coarse queries).
        weights: per-term weights.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``. Loss terms (each
    already weighted; ``total`` is their sum): ``sdm`` or ``infonce``, ``id``, ``cmr`` and,
    with coarse queries, ``coarse``.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        num_classes: int,
        *,
        num_parts: int = 6,
        num_coarse: int = 2,
        decoder_depth: int = 2,
        global_loss: str = "sdm",
        temperature: float = 0.02,
        margin: float = 0.2,
        min_margin: float = 0.05,
        negatives: str = "hardest",
        part_score_weight: float = 1.0,
        coarse_score_weight: float = 1.0,
        weights: CMRWeights = CMRWeights(),
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        check_choice(global_loss, "global_loss", fn, ("sdm", "infonce"))
        check_positive(temperature, "temperature", fn)
        check_int(num_parts, "num_parts", fn, min_value=1)
        check_int(num_coarse, "num_coarse", fn, min_value=0)
        check_positive(part_score_weight, "part_score_weight", fn, allow_zero=True)
        check_positive(coarse_score_weight, "coarse_score_weight", fn, allow_zero=True)
        dim = encoder.config.embed_dim
        self.global_loss_name = global_loss
        self.weights = weights
        self.part_score_weight = float(part_score_weight)
        self.coarse_score_weight = float(coarse_score_weight) if num_coarse else 0.0
        self.part_decoder = PartQueryDecoder(
            num_coarse + num_parts,
            dim,
            depth=decoder_depth,
            num_coarse=num_coarse,
            heads=max(1, dim // 64),
        )
        self.global_loss: SDMLoss | InfoNCELoss = (
            SDMLoss(temperature=temperature)
            if global_loss == "sdm"
            else InfoNCELoss(temperature=temperature)
        )
        self.id_loss = IDLoss(num_classes, dim)
        self.cmr = CommonalityMarginRankingLoss(margin, min_margin, negatives)
        # min_margin = margin pins every margin at m0: the plain ranking loss
        self.coarse_loss = CommonalityMarginRankingLoss(margin, margin, negatives)

    def retrieval_model(self) -> CMRPartsModel:
        """The encoder and the part decoder as a ``cmr-parts`` retrieval model (shared, not
        copied)."""
        scorer = PartScorer(
            part_weight=self.part_score_weight, coarse_weight=self.coarse_score_weight
        )
        return CMRPartsModel(self.encoder, self.part_decoder, scorer=scorer)

    def decode(
        self, image_tokens: Tensor, text_tokens: Tensor, text_ids: Tensor
    ) -> tuple[PartEmbeddings, PartEmbeddings]:
        """Coarse and fine embeddings of the images and the captions from the encoders'
        tokens (caption padding masked): ``(image, text)``, each
        ``PartEmbeddings([B, Q, D], [B, K, D])``."""
        mask = caption_key_mask(text_ids, type(self).__name__)
        image = self.part_decoder(image_tokens, "image")
        text = self.part_decoder(text_tokens, "text", key_mask=mask)
        return image, text

    def part_embeddings(
        self, image_tokens: Tensor, text_tokens: Tensor, text_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Fine part embeddings ``([B, K, D], [B, K, D])`` from the encoders' tokens."""
        image, text = self.decode(image_tokens, text_tokens, text_ids)
        return image.fine, text.fine

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        ids, pids = batch["text_ids"], batch["pids"]
        image_feats, image_tokens = self.encoder.encode_image(batch["images"], return_tokens=True)
        text_feats, text_tokens = self.encoder.encode_text(ids, return_tokens=True)
        image_feats, text_feats = image_feats.float(), text_feats.float()
        image, text = self.decode(image_tokens.float(), text_tokens.float(), ids)
        w = self.weights
        terms = {
            self.global_loss_name: w.align * self.global_loss(image_feats, text_feats, pids),
            "id": w.id * self.id_loss(image_feats, text_feats, pids),
            "cmr": w.cmr * self.cmr(image.fine, text.fine, pids),
        }
        if self.part_decoder.num_coarse:
            terms["coarse"] = w.coarse * self.coarse_loss(image.coarse, text.coarse, pids)
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


register_method("cmr", CMRMethod.from_context)
