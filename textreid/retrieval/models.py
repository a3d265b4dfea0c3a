"""Retrieval models: what a trained method keeps for search, and how it scores.

A :class:`RetrievalModel` encodes captions and images into *features*, a mapping of named
tensors with one row per item (:data:`~textreid.retrieval.scorers.Features`), and names the
:class:`~textreid.retrieval.scorers.Scorer` that compares a query block with a gallery chunk.
Every method of :mod:`textreid.methods` exports one (``method.retrieval_model()``, sharing
the method's modules), a :class:`~textreid.Retriever` wraps one, and a saved retriever names
its architecture in ``config.json`` so that loading dispatches through
:func:`register_architecture`'s registry.

Built-in architectures:

=====================  ==========================================  =====================
architecture           features                                    scorer
=====================  ==========================================  =====================
``clip-dual-encoder``  ``global`` (IRRA, FMFA, any CLIP)            ``cosine``
                       (+ ``tokens`` to re-rank: FMFA's)
``ivt-single-stream``  ``global``: each modality encoded alone      ``cosine``
``uca-gaussian``       ``mean`` + ``log_var`` (UCA's Gaussians)     ``gaussian``
``cmr-parts``          ``global`` + ``parts`` (+ ``coarse``)        ``parts``
=====================  ==========================================  =====================
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textreid._checks import check_choice, check_int, check_tensor
from textreid._registry import Registry
from textreid.config import CLIPConfig, TextConfig, VisionConfig
from textreid.heads.gaussian import GaussianHead, TokenPooling
from textreid.heads.gaussian_distances import GaussianDistance
from textreid.heads.token_similarity import SparseTokenSimilarity
from textreid.models.clip import CLIPDualEncoder
from textreid.models.part_decoder import PartQueryDecoder
from textreid.models.single_stream import ModalityExpertBlock, SingleStreamEncoder
from textreid.models.transformer import QuickGELU, ResidualAttentionBlock
from textreid.retrieval.scorers import (
    CosineScorer,
    GaussianScorer,
    PartScorer,
    Scorer,
    scorer_from_config,
)
from textreid.text import caption_key_mask

__all__ = [
    "CLIPRetrievalModel",
    "CMRPartsModel",
    "IVTSingleStreamModel",
    "RetrievalModel",
    "UCAGaussianModel",
    "get_architecture",
    "list_architectures",
    "register_architecture",
]

_M = TypeVar("_M", bound="RetrievalModel")

# Sizes a config file may ask for beyond textreid.config's own (those cover every encoder);
# far above any published head, far below an allocation that would exhaust memory.
_MAX_QUERIES = 4096
_MAX_HIDDEN = 65536
_MAX_LAYERS = 256


class RetrievalModel(nn.Module, ABC):
    """The retrieval side of a trained method: encoders to features, and their scorer.

    Subclasses set :attr:`architecture` (the name saved in ``config.json``) and implement the
    encoders, :meth:`scorer`, :meth:`config_dict` and :meth:`from_config`. ``from_config``
    only builds modules (no weights), so :meth:`textreid.Retriever.from_pretrained` can build
    the model on the ``meta`` device and fill it once the weights match; it must bound every
    size it reads (files are untrusted). Register a new architecture with
    :func:`register_architecture` before loading a folder that names it.

    Shapes: ``encode_text(ids [B, L])`` and ``encode_image(images [B, 3, H, W])`` return
    float32 tensors with ``B`` rows each, under the keys :meth:`scorer` reads.
    """

    architecture: ClassVar[str]

    @abstractmethod
    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        """Query features of token ids ``[B, L]``."""

    @abstractmethod
    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        """Gallery features of preprocessed images ``[B, 3, H, W]``."""

    @abstractmethod
    def scorer(self) -> Scorer:
        """The scorer that compares this model's query and gallery features."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-able settings from which :meth:`from_config` rebuilds the modules."""

    @classmethod
    @abstractmethod
    def from_config(cls: type[_M], config: Mapping[str, Any]) -> _M:
        """Build the modules described by :meth:`config_dict` (fresh weights, current device).

        Raises:
            ValueError: a key is missing or unknown, or a size is beyond textreid's limits.
        """

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """The input ``(H, W)`` of :meth:`encode_image`."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Token positions ``L`` of :meth:`encode_text` (the tokenizer's context length)."""

    def weights_module(self) -> nn.Module:
        """The module whose state dict a saved retriever holds (default: the model itself)."""
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the architecture, its config and every weight (as float32).

        Two models give the same fingerprint exactly when they compute the same features,
        whatever device or floating dtype they sit on; a gallery index records it so that a
        search with another model is refused. Hashes every weight: call it once, not per
        batch.
        """
        digest = hashlib.sha256()
        head = {"architecture": self.architecture, "config": self._fingerprint_config()}
        digest.update(json.dumps(head, sort_keys=True).encode("utf-8"))
        for name, value in sorted(self.weights_module().state_dict().items()):
            t = value.detach().to("cpu")
            if t.is_floating_point():
                t = t.float()
            digest.update(f"\n{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _fingerprint_config(self) -> dict[str, Any]:
        """The part of :meth:`config_dict` that decides the values of the features."""
        return self.config_dict()

    def token_head(self) -> SparseTokenSimilarity | None:
        """The token similarity that re-ranks with this model's ``"tokens"``, or ``None``
        when the model emits no tokens (the default).

        A model that returns ``"tokens"`` (and ``"token_mask"``) beside its scorer's features
        overrides this with the head its tokens were trained for, so that
        :meth:`textreid.Retriever.token_reranker` gives a ready
        :class:`~textreid.retrieval.TokenReranker`. A fresh head per call.
        """
        return None


def _keys(config: Mapping[str, Any], required: tuple[str, ...], fn: str) -> dict[str, Any]:
    """``config`` as a dict with exactly the ``required`` keys."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{fn}: config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(required))
    missing = sorted(set(required) - set(config))
    if unknown or missing:
        raise ValueError(
            f"{fn}: config must have the keys {sorted(required)}; unknown {unknown}, "
            f"missing {missing}"
        )
    return dict(config)


def _bounded(value: object, name: str, fn: str, *, min_value: int, limit: int) -> int:
    size = check_int(value, name, fn, min_value=min_value)
    if size > limit:
        raise ValueError(f"{fn}: {name} must be <= {limit} (textreid's limit), got {size}")
    return size


def _global(feats: Tensor) -> Tensor:
    return F.normalize(feats.float(), dim=-1)


_TOKEN_HEAD_KEYS = ("temperature", "threshold", "include_padding")


def _token_head_config(head: SparseTokenSimilarity) -> dict[str, Any]:
    return {
        "temperature": head.temperature,
        "threshold": head.threshold,
        "include_padding": head.include_padding,
    }


def _token_head_from_config(config: object, fn: str) -> SparseTokenSimilarity:
    c = _keys(config if isinstance(config, Mapping) else {}, _TOKEN_HEAD_KEYS, fn)
    if not isinstance(c["include_padding"], bool):
        raise ValueError(
            f"{fn}: include_padding must be true or false, got {c['include_padding']!r}"
        )
    for key in ("temperature", "threshold"):
        value = c[key]
        if isinstance(value, bool) or not (
            isinstance(value, (int, float)) or (key == "threshold" and value is None)
        ):
            raise ValueError(f"{fn}: {key} must be a number, got {value!r}")
    # The head checks the ranges (temperature within textreid's bounds, threshold >= 0).
    return SparseTokenSimilarity(
        temperature=float(c["temperature"]),
        threshold=None if c["threshold"] is None else float(c["threshold"]),
        include_padding=c["include_padding"],
    )


class _CLIPBacked(RetrievalModel):
    """A retrieval model around a CLIP dual encoder, whose config fixes the input sizes."""

    encoder: CLIPDualEncoder

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.encoder.config.vision.image_size
        return (h, w)

    @property
    def context_length(self) -> int:
        return self.encoder.config.text.context_length


class CLIPRetrievalModel(_CLIPBacked):
    """A CLIP dual encoder scored by cosine: IRRA, FMFA, zero-shot CLIP (``clip-dual-encoder``).

    Features: ``global`` ``[B, D]``, the L2-normalised projected features. With
    ``token_features=True`` also the projected tokens for token re-ranking
    (:class:`~textreid.retrieval.TokenReranker`), as FMFA's EFA loss sees them: captions
    ``tokens`` ``[B, L, D]`` (every position) and ``token_mask`` bool ``[B, L]`` (True up to
    the end token, :func:`~textreid.text.caption_key_mask`); images ``tokens`` ``[B, P, D]``,
    the patch tokens without the class token (no mask: every patch is real). Tokens are float32
    and not normalised (the head normalises where its formula does). The cosine scorer reads
    ``global`` only. The saved weights are the encoder's own (OpenAI / open_clip key layout),
    as in format version 1.

    Args:
        encoder: the dual encoder (shared, not copied).
        token_features: also emit the tokens. Costs nothing in the forward pass, but the
            tokens are ``L`` (captions) or ``P`` (images) times the size of the global
            features.
        token_head: the token similarity that re-ranks with them
            (:meth:`token_head`); default FMFA's, ``SparseTokenSimilarity(include_padding=True)``.
            Saved in ``config.json`` with ``token_features``.

    Raises:
        TypeError: ``encoder`` or ``token_head`` of the wrong type.
        ValueError: ``token_features`` not a bool, or ``token_head`` without
            ``token_features=True``.
    """

    architecture: ClassVar[str] = "clip-dual-encoder"

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        *,
        token_features: bool = False,
        token_head: SparseTokenSimilarity | None = None,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        if not isinstance(encoder, CLIPDualEncoder):
            raise TypeError(
                f"{fn}: encoder must be a CLIPDualEncoder, got {type(encoder).__name__}"
            )
        check_choice(token_features, "token_features", fn, (True, False))
        if token_head is not None:
            if not isinstance(token_head, SparseTokenSimilarity):
                raise TypeError(
                    f"{fn}: token_head must be a SparseTokenSimilarity, "
                    f"got {type(token_head).__name__}"
                )
            if not token_features:
                raise ValueError(
                    f"{fn}: token_head is given but token_features=False; the head scores "
                    "tokens, so pass token_features=True (or no token_head)"
                )
        self.encoder = encoder
        self.token_features = token_features
        # Settings, not the module: token_head() hands out a fresh head each time.
        self._token_head: dict[str, Any] | None = None
        if token_features:
            head = (
                token_head
                if token_head is not None
                else SparseTokenSimilarity(include_padding=True)
            )
            self._token_head = _token_head_config(head)

    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        if not self.token_features:
            return {"global": _global(self.encoder.encode_text(ids))}
        feats, tokens = self.encoder.encode_text(ids, return_tokens=True)
        mask = caption_key_mask(ids, f"{type(self).__name__}.encode_text")
        return {"global": _global(feats), "tokens": tokens.float(), "token_mask": mask}

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        if not self.token_features:
            return {"global": _global(self.encoder.encode_image(images))}
        feats, tokens = self.encoder.encode_image(images, return_tokens=True)
        # FMFA's EFA drops the class token: it is the global feature, not a patch.
        return {"global": _global(feats), "tokens": tokens[:, 1:].float()}

    def scorer(self) -> Scorer:
        return CosineScorer()

    def token_head(self) -> SparseTokenSimilarity | None:
        if self._token_head is None:
            return None
        return SparseTokenSimilarity(**self._token_head)

    def config_dict(self) -> dict[str, Any]:
        # Without tokens the config is the encoder's alone, as textreid 0.1 wrote it.
        config = self.encoder.config.to_dict()
        if self._token_head is not None:
            config.update(token_features=True, token_head=dict(self._token_head))
        return config

    def _fingerprint_config(self) -> dict[str, Any]:
        # Tokens add features but change none: an index built with or without them holds
        # the same global features, so both models search it.
        return self.encoder.config.to_dict()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CLIPRetrievalModel:
        fn = f"{cls.__name__}.from_config"
        if not isinstance(config, Mapping):
            raise TypeError(f"{fn}: config must be a mapping, got {type(config).__name__}")
        clip = dict(config)
        tokens = clip.pop("token_features", False)
        head = clip.pop("token_head", None)
        if not isinstance(tokens, bool):
            raise ValueError(f"{fn}: token_features must be true or false, got {tokens!r}")
        if tokens != (head is not None):
            raise ValueError(
                f"{fn}: token_features is {str(tokens).lower()} but token_head is "
                f"{'absent' if head is None else 'given'}; a config with token features "
                "names their head, one without has none"
            )
        encoder = CLIPDualEncoder(CLIPConfig.from_dict(clip))
        token_head = None if head is None else _token_head_from_config(head, f"{fn}: token_head")
        return cls(encoder, token_features=tokens, token_head=token_head)

    def weights_module(self) -> nn.Module:
        return self.encoder


class IVTSingleStreamModel(RetrievalModel):
    """IVT's single-stream encoder, each modality encoded on its own, cosine on the class
    tokens (``ivt-single-stream``).

    Features: ``global`` ``[B, D]``, the L2-normalised class-token states. Caption padding
    is masked, as in training.

    Args:
        encoder: the single-stream encoder (shared, not copied).
        pad_token_id: how caption padding is told apart. ``None`` (default, textreid's IVT
            recipe with the CLIP tokenizer): every position after the end token, which has
            the largest id (:func:`~textreid.text.caption_key_mask`). An id: every position
            holding it, e.g. ``0`` for BERT's ``[PAD]`` (IVT's released checkpoints, with a
            :class:`~textreid.wordpiece.WordPieceTokenizer`, whose end token ``[SEP]`` does
            not have the largest id).

    Raises:
        TypeError: ``encoder`` is not a :class:`~textreid.models.SingleStreamEncoder`.
        ValueError: ``pad_token_id`` is not ``None`` or an id of the encoder's vocabulary.
    """

    architecture: ClassVar[str] = "ivt-single-stream"
    _KEYS = (
        "image_size",
        "patch_size",
        "stride",
        "vocab_size",
        "max_text_len",
        "width",
        "depth",
        "heads",
        "mlp_ratio",
        "drop_ratio",
        "pad_token_id",
    )

    def __init__(self, encoder: SingleStreamEncoder, *, pad_token_id: int | None = None) -> None:
        super().__init__()
        fn = type(self).__name__
        if not isinstance(encoder, SingleStreamEncoder):
            raise TypeError(
                f"{fn}: encoder must be a SingleStreamEncoder, got {type(encoder).__name__}"
            )
        if pad_token_id is not None:
            check_int(pad_token_id, "pad_token_id", fn, min_value=0)
            if pad_token_id >= encoder.vocab_size:
                raise ValueError(
                    f"{fn}: pad_token_id must be None or an id below the encoder's vocab_size "
                    f"{encoder.vocab_size}, got {pad_token_id}"
                )
        self.encoder = encoder
        self.pad_token_id = pad_token_id

    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        fn = f"{type(self).__name__}.encode_text"
        if self.pad_token_id is None:
            mask = caption_key_mask(ids, fn)
        else:
            mask = check_tensor(ids, "ids", fn, ndim=2, kind="int", dims="(B, L)") != (
                self.pad_token_id
            )
        return {"global": _global(self.encoder.encode_text(ids, mask))}

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        return {"global": _global(self.encoder.encode_image(images))}

    def scorer(self) -> Scorer:
        return CosineScorer()

    def config_dict(self) -> dict[str, Any]:
        e = self.encoder
        kernel, stride = e.patch_embed.kernel_size, e.patch_embed.stride
        hidden, heads = round(4.0 * e.width), 1
        if len(e.blocks):
            block = e.blocks[0]
            assert isinstance(block, ModalityExpertBlock)
            hidden, heads = block.mlp_vis.c_fc.out_features, block.attn.heads
        return {
            "image_size": list(e.image_size),
            "patch_size": int(kernel[0]),
            "stride": int(stride[0]),
            "vocab_size": e.vocab_size,
            "max_text_len": e.position_embeddings.num_embeddings,
            "width": e.width,
            "depth": len(e.blocks),
            "heads": int(heads),
            "mlp_ratio": hidden / e.width,
            "drop_ratio": e.dropper.ratio,
            "pad_token_id": self.pad_token_id,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> IVTSingleStreamModel:
        fn = f"{cls.__name__}.from_config"
        c = _keys(config, cls._KEYS, fn)
        # The encoder is a vision tower and a text tower sharing weights: textreid.config's
        # bounds for those (patch count, widths, depth, vocabulary) apply as they are.
        vision = VisionConfig(
            image_size=c["image_size"],
            patch_size=c["patch_size"],
            width=c["width"],
            layers=c["depth"],
            heads=c["heads"],
            act="gelu",
            stride=c["stride"],
            mlp_ratio=c["mlp_ratio"],
        )
        text = TextConfig(
            context_length=c["max_text_len"],
            vocab_size=c["vocab_size"],
            width=c["width"],
            layers=c["depth"],
            heads=c["heads"],
            act="gelu",
            mlp_ratio=c["mlp_ratio"],
        )
        encoder = SingleStreamEncoder(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            stride=vision.effective_stride,
            vocab_size=text.vocab_size,
            max_text_len=text.context_length,
            width=vision.width,
            depth=vision.layers,
            heads=vision.heads,
            mlp_ratio=vision.mlp_ratio,
            drop_ratio=float(c["drop_ratio"]),
        )
        return cls(encoder, pad_token_id=c["pad_token_id"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.encoder.image_size
        return (h, w)

    @property
    def context_length(self) -> int:
        return self.encoder.position_embeddings.num_embeddings


def _head_config(head: GaussianHead) -> dict[str, Any]:
    pool = head.log_var_pool
    return {
        "token_pooling": head.token_pooling,
        "normalize_mean": head.normalize_mean,
        "attention_hidden": pool.proj.out_features if pool is not None else 256,
    }


def _head_from_config(config: object, dim: int, fn: str) -> GaussianHead:
    c = _keys(
        config if isinstance(config, Mapping) else {},
        ("token_pooling", "normalize_mean", "attention_hidden"),
        fn,
    )
    if not isinstance(c["normalize_mean"], bool):
        raise ValueError(f"{fn}: normalize_mean must be true or false, got {c['normalize_mean']!r}")
    pooling: TokenPooling = check_choice(
        c["token_pooling"], "token_pooling", fn, ("first", "mean", "max", "attention")
    )
    hidden = _bounded(c["attention_hidden"], "attention_hidden", fn, min_value=1, limit=_MAX_HIDDEN)
    return GaussianHead(
        dim,
        dim,
        normalize_mean=c["normalize_mean"],
        token_pooling=pooling,
        attention_hidden=hidden,
    )


class UCAGaussianModel(_CLIPBacked):
    """CLIP with UCA's Gaussian heads, scored by a Gaussian distance (``uca-gaussian``).

    Features: ``mean`` ``[B, D]``, the L2-normalised CLIP feature (UCA's mean, see
    :class:`~textreid.methods.UCAMethod`), and ``log_var`` ``[B, D]`` from the modality's
    :class:`~textreid.heads.GaussianHead` over the encoder's tokens (caption padding masked).

    Args:
        encoder: the dual encoder.
        image_head: the image variance head (input and output width ``D``).
        text_head: the caption variance head.
        distance: the Gaussian distance of :meth:`scorer`, any of
            :data:`textreid.heads.GAUSSIAN_DISTANCES` (default ``"csd"``, the
            :class:`~textreid.retrieval.scorers.GaussianScorer` default; :class:`UCAMethod`
            passes the distance it trains with). A search may choose another.
    """

    architecture: ClassVar[str] = "uca-gaussian"

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        image_head: GaussianHead,
        text_head: GaussianHead,
        *,
        distance: str = "csd",
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        dim = encoder.config.embed_dim
        for name, head in (("image_head", image_head), ("text_head", text_head)):
            if not isinstance(head, GaussianHead):
                raise TypeError(f"{fn}: {name} must be a GaussianHead, got {type(head).__name__}")
            if (head.in_dim, head.embed_dim) != (dim, dim):
                raise ValueError(
                    f"{fn}: {name} maps {head.in_dim} -> {head.embed_dim} but the encoder's "
                    f"embed_dim is {dim}"
                )
        self.encoder = encoder
        self.image_head = image_head
        self.text_head = text_head
        self.distance: GaussianDistance = GaussianScorer(distance=distance).distance  # type: ignore[arg-type]

    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        feats, tokens = self.encoder.encode_text(ids, return_tokens=True)
        mask = caption_key_mask(ids, f"{type(self).__name__}.encode_text")
        log_var = self.text_head(tokens.float(), key_mask=mask).log_var
        return {"mean": _global(feats), "log_var": log_var}

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        feats, tokens = self.encoder.encode_image(images, return_tokens=True)
        return {"mean": _global(feats), "log_var": self.image_head(tokens.float()).log_var}

    def scorer(self) -> Scorer:
        return GaussianScorer(distance=self.distance)

    def config_dict(self) -> dict[str, Any]:
        return {
            "clip": self.encoder.config.to_dict(),
            "image_head": _head_config(self.image_head),
            "text_head": _head_config(self.text_head),
            "distance": self.distance,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UCAGaussianModel:
        fn = f"{cls.__name__}.from_config"
        c = _keys(config, ("clip", "image_head", "text_head", "distance"), fn)
        encoder = CLIPDualEncoder(CLIPConfig.from_dict(c["clip"]))
        dim = encoder.config.embed_dim
        return cls(
            encoder,
            _head_from_config(c["image_head"], dim, f"{fn}: image_head"),
            _head_from_config(c["text_head"], dim, f"{fn}: text_head"),
            distance=c["distance"],
        )


class CMRPartsModel(_CLIPBacked):
    """CLIP with the part-query decoder, global + part similarity fused (``cmr-parts``).

    Features: ``global`` ``[B, D]`` (L2-normalised CLIP features), ``parts`` ``[B, K, D]``
    (the decoder's fine part embeddings) and, when the decoder has coarse queries,
    ``coarse`` ``[B, Q, D]``. Caption padding is masked from the decoder, as in training.

    Args:
        encoder: the dual encoder.
        part_decoder: the part-query decoder (width ``D``).
        scorer: the part scorer with the method's fusion (default ``PartScorer()``).
    """

    architecture: ClassVar[str] = "cmr-parts"

    def __init__(
        self,
        encoder: CLIPDualEncoder,
        part_decoder: PartQueryDecoder,
        *,
        scorer: PartScorer | None = None,
    ) -> None:
        super().__init__()
        fn = type(self).__name__
        if not isinstance(part_decoder, PartQueryDecoder):
            raise TypeError(
                f"{fn}: part_decoder must be a PartQueryDecoder, got {type(part_decoder).__name__}"
            )
        if part_decoder.dim != encoder.config.embed_dim:
            raise ValueError(
                f"{fn}: part_decoder has dim {part_decoder.dim} but the encoder's embed_dim "
                f"is {encoder.config.embed_dim}"
            )
        self.encoder = encoder
        self.part_decoder = part_decoder
        self._scorer = scorer if scorer is not None else PartScorer()

    def _features(
        self, feats: Tensor, tokens: Tensor, modality: str, mask: Tensor | None
    ) -> dict[str, Tensor]:
        parts = self.part_decoder(tokens.float(), modality, key_mask=mask)
        out = {"global": _global(feats), "parts": parts.fine}
        if self.part_decoder.num_coarse:
            out["coarse"] = parts.coarse
        return out

    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        feats, tokens = self.encoder.encode_text(ids, return_tokens=True)
        mask = caption_key_mask(ids, f"{type(self).__name__}.encode_text")
        return self._features(feats, tokens, "text", mask)

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        feats, tokens = self.encoder.encode_image(images, return_tokens=True)
        return self._features(feats, tokens, "image", None)

    def scorer(self) -> Scorer:
        return self._scorer

    def config_dict(self) -> dict[str, Any]:
        d = self.part_decoder
        act = "quick_gelu"
        if len(d.transformer.resblocks):
            block = d.transformer.resblocks[0]
            assert isinstance(block, ResidualAttentionBlock)
            act = "quick_gelu" if isinstance(block.mlp.act, QuickGELU) else "gelu"
        return {
            "clip": self.encoder.config.to_dict(),
            "decoder": {
                "num_queries": d.num_queries,
                "num_coarse": d.num_coarse,
                "depth": d.transformer.layers,
                "heads": d.cross_attn.heads,
                "act": act,
            },
            "scorer": self._scorer.to_config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CMRPartsModel:
        fn = f"{cls.__name__}.from_config"
        c = _keys(config, ("clip", "decoder", "scorer"), fn)
        encoder = CLIPDualEncoder(CLIPConfig.from_dict(c["clip"]))
        d = _keys(
            c["decoder"] if isinstance(c["decoder"], Mapping) else {},
            ("num_queries", "num_coarse", "depth", "heads", "act"),
            f"{fn}: decoder",
        )
        queries = _bounded(d["num_queries"], "num_queries", fn, min_value=1, limit=_MAX_QUERIES)
        decoder = PartQueryDecoder(
            queries,
            encoder.config.embed_dim,
            depth=_bounded(d["depth"], "depth", fn, min_value=0, limit=_MAX_LAYERS),
            num_coarse=_bounded(d["num_coarse"], "num_coarse", fn, min_value=0, limit=queries),
            heads=_bounded(d["heads"], "heads", fn, min_value=1, limit=encoder.config.embed_dim),
            act=check_choice(d["act"], "act", fn, ("quick_gelu", "gelu")),
        )
        scorer = _scorer_of_kind(c["scorer"], PartScorer, f"{fn}: scorer")
        return cls(encoder, decoder, scorer=scorer)


_S = TypeVar("_S", bound=Scorer)


def _scorer_of_kind(config: object, cls: type[_S], fn: str) -> _S:
    """The scorer described by ``config``, which must be a ``cls``."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{fn}: expected a scorer config (a mapping), got {type(config).__name__}")
    scorer = scorer_from_config(dict(config))
    if not isinstance(scorer, cls):
        raise ValueError(f"{fn}: expected a {cls.kind!r} scorer, got kind {scorer.kind!r}")
    return scorer


_ARCHITECTURES: Registry[type[RetrievalModel]] = Registry("architecture", arg="cls")


def register_architecture(name: str, cls: type[RetrievalModel], *, overwrite: bool = False) -> None:
    """Register a :class:`RetrievalModel` subclass under ``name``, its ``architecture``.

    A saved retriever names its architecture in ``config.json``; loading builds the model
    with the registered class's ``from_config``. Register your own architecture before
    loading a folder that names it.

    Args:
        name: the architecture name; must equal ``cls.architecture``.
        cls: the subclass.
        overwrite: replace an existing architecture of that name.

    Raises:
        TypeError: ``cls`` is not a :class:`RetrievalModel` subclass, or ``name`` not a str.
        ValueError: ``name`` is empty, differs from ``cls.architecture``, or is taken and
            ``overwrite`` is False.
    """
    fn = "register_architecture"
    if not (isinstance(cls, type) and issubclass(cls, RetrievalModel)):
        raise TypeError(f"{fn}: cls must be a RetrievalModel subclass, got {cls!r}")
    declared = getattr(cls, "architecture", None)
    if declared != name:
        raise ValueError(
            f"{fn}: name {name!r} differs from {cls.__name__}.architecture {declared!r}; a "
            "saved retriever is loaded by the name its model declares"
        )
    _ARCHITECTURES.register(name, cls, overwrite=overwrite, fn=fn)


def list_architectures() -> list[str]:
    """Registered architecture names, sorted."""
    return _ARCHITECTURES.names()


def get_architecture(name: str) -> type[RetrievalModel]:
    """The :class:`RetrievalModel` subclass registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    return _ARCHITECTURES.get(name, fn="get_architecture")


for _cls in (CLIPRetrievalModel, IVTSingleStreamModel, UCAGaussianModel, CMRPartsModel):
    register_architecture(_cls.architecture, _cls)
