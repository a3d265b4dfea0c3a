"""UCA-style uncertainty-aware coarse-to-fine alignment around a CLIP dual encoder.

Deng, Chen, Li and Tang, "Uncertainty-aware coarse-to-fine alignment for text-image person
retrieval", Visual Intelligence 2025, doi:10.1007/s44267-025-00078-x. Only the abstract is
public (no code, no formulas, no hyper-parameters): **every concrete choice here is ours**.
The abstract's three tasks become

.. math::
    \\mathcal{L} = \\mathcal{L}_{dist}(N^v, N^t) + \\mathcal{L}_{point}(z^v, z^t)
    + \\mathcal{L}_{rec}

with Gaussians :math:`N = \\mathcal N(\\mu, \\operatorname{diag}\\sigma^2)` per image and caption,
reparameterised points :math:`z = \\mu + \\epsilon \\odot \\sigma`, distribution contrast
(:class:`~textreid.losses.DistributionContrastLoss`), point contrast over inter- and
intra-modal points (:class:`~textreid.losses.PointContrastLoss`) and the uncertainty-weighted
reconstruction of masked attribute words
(:class:`~textreid.losses.AttributeMaskReconstructionLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from textreid._checks import reads_are_free
from textreid.heads.gaussian import GaussianEmbedding, GaussianHead
from textreid.losses.attribute_mask import AttributeMaskReconstructionLoss
from textreid.losses.combine import LossOutput
from textreid.losses.distribution_contrast import DistributionContrastLoss
from textreid.losses.point_contrast import PointContrastLoss
from textreid.methods._text import caption_key_mask
from textreid.methods.base import (
    DualEncoderMethod,
    MethodContext,
    register_method,
    require_batch_keys,
)
from textreid.methods.irra import IRRA_MASK_TOKEN_ID
from textreid.models.clip import CLIPDualEncoder
from textreid.models.cross_modal import CrossModalTransformer, MLMHead
from textreid.retrieval.models import UCAGaussianModel
from textreid.text import attribute_token_sequences, mask_attribute_tokens

__all__ = ["UCAMethod", "UCAWeights"]


@dataclass(frozen=True)
class UCAWeights:
    """Loss weights of the UCA-style objective (ours: all 1)."""

    distribution: float = 1.0
    point: float = 1.0
    reconstruction: float = 1.0


def _variance_head(dim: int, init_log_var: float) -> GaussianHead:
    head = GaussianHead(dim, dim, token_pooling="attention", init_log_var=init_log_var)
    # The mean is the encoder's own global feature (see UCAMethod), so the head's mean branch
    # is never called; freezing it keeps the optimizer and weight decay off it.
    head.mean_proj.requires_grad_(False)
    if head.mean_pool is not None:
        head.mean_pool.requires_grad_(False)
    return head


class UCAMethod(DualEncoderMethod):
    """UCA-style training around a CLIP dual encoder (all formulas ours; paper not public).

    **Design choice: the Gaussian mean is the encoder's global feature**, L2-normalised
    (:math:`\\mu = n(f)`); only the log-variance comes from a
    :class:`~textreid.heads.GaussianHead` per modality (attention pooling over the projected
    tokens, caption padding masked). Retrieval by the means is therefore exactly retrieval by
    the encoder's outputs, and the exported :class:`~textreid.Retriever` (the CLIP towers alone)
    ranks as the trained model does. The heads' own mean branches are unused and frozen.

    Per batch: the image and caption Gaussians; ``num_samples`` reparameterised points of each;
    distribution contrast on the Gaussians; point contrast on the points; then attribute words
    of the caption (:func:`~textreid.text.mask_attribute_tokens`, all
    occurrences) are replaced by the mask token, the masked caption's tokens cross-attend
    (:class:`~textreid.models.CrossModalTransformer`) to the image's sampled points followed by
    its patch tokens, and an :class:`~textreid.models.MLMHead` reconstructs the words, weighted
    by :math:`1/(1 + u)` with :math:`u` the mean of the image's and the caption's
    :meth:`~textreid.heads.GaussianEmbedding.uncertainty` (detached).

    Args:
        encoder: the CLIP dual encoder.
        attribute_sequences: token-id sequences of the attribute words, e.g.
            ``attribute_token_sequences(tokenizer.encode)``.
        mask_token_id: id written over masked attribute tokens (IRRA's ``<|mask|>``, 49405).
        distance: Gaussian distance of the distribution contrast (squared 2-Wasserstein).
        distribution_temperature: its temperature (0.04, i.e. IRRA's 0.02 on cosines at zero
            variance).
        point_temperature: point-contrast temperature on cosines (0.02).
        num_samples: points per item K (7, PCME's value).
        intra_modal_weight: weight of the image-image / caption-caption point terms (1).
        init_log_var: initial log-variance of the heads (-5).
        cmt_depth: layers of the reconstruction transformer.
        weights: per-term weights.

    Batch keys: ``images [B, 3, H, W]``, ``text_ids [B, L]``, ``pids [B]``. Loss terms (each
    already weighted; ``total`` is their sum): ``distribution``, ``point``,
    ``reconstruction``.
    """

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        attribute_sequences: Sequence[Sequence[int]],
        *,
        mask_token_id: int = IRRA_MASK_TOKEN_ID,
        distance: str = "wasserstein",
        distribution_temperature: float = 0.04,
        point_temperature: float = 0.02,
        num_samples: int = 7,
        intra_modal_weight: float = 1.0,
        init_log_var: float = -5.0,
        cmt_depth: int = 4,
        weights: UCAWeights = UCAWeights(),
    ) -> None:
        super().__init__(encoder)
        fn = type(self).__name__
        dim = encoder.config.embed_dim
        vocab = encoder.config.text.vocab_size
        if not 0 < mask_token_id < vocab:
            raise ValueError(f"{fn}: mask_token_id must lie in (0, {vocab}), got {mask_token_id}")
        self.attribute_sequences = [tuple(int(i) for i in s) for s in attribute_sequences]
        if not self.attribute_sequences or not all(self.attribute_sequences):
            raise ValueError(
                f"{fn}: attribute_sequences must be a non-empty list of non-empty id sequences"
            )
        self.mask_token_id = mask_token_id
        self.num_samples = num_samples
        self.weights = weights
        self.image_head = _variance_head(dim, init_log_var)
        self.text_head = _variance_head(dim, init_log_var)
        self.distribution_loss = DistributionContrastLoss(distance, distribution_temperature)
        self.point_loss = PointContrastLoss(num_samples, point_temperature, intra_modal_weight)
        self.reconstruction = CrossModalTransformer(dim, depth=cmt_depth, heads=max(1, dim // 64))
        self.mlm_head = MLMHead(dim, vocab, depth=max(cmt_depth, 1))
        self.reconstruction_loss = AttributeMaskReconstructionLoss()

    @classmethod
    def from_context(cls, context: MethodContext, **kwargs: Any) -> UCAMethod:
        """Build UCA for a recipe: the attribute words tokenised by the recipe's tokenizer,
        whose mask token (when it has one) is the default ``mask_token_id``."""
        tokenizer = context.tokenizer
        if tokenizer.mask_token_id is not None:
            kwargs.setdefault("mask_token_id", tokenizer.mask_token_id)
        sequences = attribute_token_sequences(tokenizer.encode)
        return cls(context.clip_encoder(), sequences, **kwargs)

    def retrieval_model(self) -> UCAGaussianModel:
        """The encoder and the variance heads as a ``uca-gaussian`` retrieval model (shared,
        not copied), scored with the distance the distribution contrast trains."""
        return UCAGaussianModel(
            self.encoder, self.image_head, self.text_head, distance=self.distribution_loss.distance
        )

    def embed(
        self, images: Tensor, text_ids: Tensor
    ) -> tuple[GaussianEmbedding, GaussianEmbedding]:
        """The image and caption Gaussians (float32 fields ``[B, D]``)."""
        image = self._image_gaussian(*self.encoder.encode_image(images, return_tokens=True))
        text = self._text_gaussian(
            text_ids, *self.encoder.encode_text(text_ids, return_tokens=True)
        )
        return image, text

    def _image_gaussian(self, feats: Tensor, tokens: Tensor) -> GaussianEmbedding:
        log_var = self.image_head(tokens.float()).log_var
        return GaussianEmbedding(F.normalize(feats.float(), dim=-1), log_var)

    def _text_gaussian(self, ids: Tensor, feats: Tensor, tokens: Tensor) -> GaussianEmbedding:
        mask = caption_key_mask(ids, type(self).__name__)
        log_var = self.text_head(tokens.float(), key_mask=mask).log_var
        return GaussianEmbedding(F.normalize(feats.float(), dim=-1), log_var)

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        require_batch_keys(batch, ("images", "text_ids", "pids"), type(self).__name__)
        ids, pids = batch["text_ids"], batch["pids"]
        image_feats, image_tokens = self.encoder.encode_image(batch["images"], return_tokens=True)
        image = self._image_gaussian(image_feats, image_tokens)
        text = self._text_gaussian(ids, *self.encoder.encode_text(ids, return_tokens=True))
        image_points = image.sample(self.num_samples)
        text_points = text.sample(self.num_samples)
        w = self.weights
        terms = {
            "distribution": w.distribution * self.distribution_loss(image, text, pids),
            "point": w.point
            * self.point_loss(
                image, text, pids, image_samples=image_points, text_samples=text_points
            ),
        }
        masking = mask_attribute_tokens(ids, self.attribute_sequences, self.mask_token_id)
        _, masked_tokens = self.encoder.encode_text(masking.input_ids, return_tokens=True)
        context = torch.cat([image_points, image_tokens.float()], dim=1)
        hidden = self.reconstruction(masked_tokens.float(), context)
        if reads_are_free(hidden.device):
            # The vocabulary projection dominates the cost: stop after the last position that
            # carries a label (the loss ignores every later one, so its value is unchanged).
            # That position is a host value here, so finding it costs no sync.
            labelled = masking.labels.ne(self.reconstruction_loss.ignore_index).any(0).nonzero()
            end = int(labelled.max()) + 1 if labelled.numel() else 1
        else:
            # On an accelerator finding it would wait for the device every step: project
            # every position instead (same value, fixed shapes).
            end = hidden.shape[1]
        logits = self.mlm_head(hidden[:, :end])
        uncertainty = 0.5 * (image.uncertainty() + text.uncertainty())
        terms["reconstruction"] = w.reconstruction * self.reconstruction_loss(
            logits, masking.labels[:, :end], uncertainty
        )
        total = torch.stack(list(terms.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


register_method("uca", UCAMethod.from_context)
