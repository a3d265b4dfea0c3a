"""Turning other code bases' training checkpoints into textreid folders.

Each converter here reads a foreign file without running code, renames its tensors with a
pure key map from :mod:`textreid.models.convert` and writes what textreid loads: a retriever
folder (:meth:`textreid.Retriever.from_pretrained`) and, when the file holds more than the
retrieval encoder, the whole method's weights. ``textreid convert --from NAME`` calls them.
The module sits above :mod:`textreid.methods` and :mod:`textreid.hub`, both of which it uses.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from textreid._untrusted import torch_load_weights_only
from textreid.config import PreprocessConfig
from textreid.hub import Retriever
from textreid.methods.irra import IRRAMethod
from textreid.models.convert import (
    irra_to_textreid,
    ivt_to_textreid,
    single_stream_config_from_state_dict,
)
from textreid.models.load import load_clip, load_state_dict_strict
from textreid.models.single_stream import SingleStreamEncoder
from textreid.retrieval.models import IVTSingleStreamModel
from textreid.tokenization import CLIPTokenizer
from textreid.wordpiece import WordPieceTokenizer

__all__ = ["convert_irra_checkpoint", "convert_ivt_checkpoint", "load_ivt_checkpoint"]

# IVT's test transform: bicubic resize, ToTensor, Normalize(0.5, 0.5).
_IVT_MEAN = _IVT_STD = (0.5, 0.5, 0.5)


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
    ``irra_method.safetensors`` for continued training with
    :class:`~textreid.methods.IRRAMethod`.

    Args:
        checkpoint: the ``.pth`` file (``{"model": state_dict, ...}`` or a bare state dict).
        out_dir: output folder.
        image_size: the ``(H, W)`` the checkpoint was trained at (IRRA: 384x128); it fixes
            the checkpoint's patch grid, which is not square.
        stride: patch stride used in training (default: the patch size).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: ``image_size`` is not ``(H, W)``, or the file is no IRRA-layout state
            dict (a key of no IRRA module, no CLIP towers, weights that do not fit).
    """
    from safetensors.torch import save_file

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


def load_ivt_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    image_size: tuple[int, ...] = (384, 128),
    stride: int | None = None,
    heads: int | None = None,
) -> SingleStreamEncoder:
    """The single-stream encoder of a checkpoint of IVT's released code, in eval mode.

    IVT (Shu et al., ECCV 2022 Workshops, arXiv 2208.08608) saves ``{"state_dict": ...,
    "optimizer": ..., "epoch": ..., "best_acc": ...}`` (fine-tuned models, and its
    ``checkpoint_best.pth`` pre-training); a bare state dict is read as well. The file is
    read with ``torch.load(weights_only=True)``, which here also accepts numeric numpy
    scalars (IVT stores ``best_acc`` as one) and nothing else beyond tensors and containers.
    Keys are renamed by :func:`~textreid.models.convert.ivt_to_textreid`, sizes read by
    :func:`~textreid.models.convert.single_stream_config_from_state_dict`, and the weights
    loaded strictly. The encoder is built on the ``meta`` device and takes the file's
    tensors, so no size is allocated beyond what the file already holds.

    The weights expect IVT's inputs: BERT ``bert-base-uncased`` WordPiece ids (``[CLS]``
    first, padding id 0, an ``attention_mask`` of the non-padding positions), and images
    resized (bicubic) to ``image_size`` and normalised with mean = std = 0.5.

    Args:
        checkpoint: the ``.pth`` file.
        image_size: the ``(H, W)`` the checkpoint was trained at (IVT: 384x128).
        stride: patch stride (default: inferred from the position embedding; IVT used 12 on
            CUHK-PEDES / ICFG-PEDES and 16 on RSTPReid).
        heads: attention heads (default: width // 64, IVT's 12).

    Returns:
        The encoder, in eval mode (no token dropping).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: ``image_size`` is not ``(H, W)``; the file needs objects beyond tensors
            (it could run code) or is corrupt; it holds no state dict; keys of no IVT module
            or missing ones (listed); sizes that fit no encoder.
    """
    fn = "load_ivt_checkpoint"
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: checkpoint {path} does not exist")
    if len(image_size) != 2:
        raise ValueError(f"{fn}: image_size must be (H, W), got {image_size}")
    obj = torch_load_weights_only(path, fn, numpy_scalars=True)
    raw = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ValueError(
            f"{fn}: {path} holds no state dict (expected {{'state_dict': state_dict, ...}})"
        )
    try:
        state = ivt_to_textreid(raw)
        size = (int(image_size[0]), int(image_size[1]))
        kwargs = single_stream_config_from_state_dict(
            state, image_size=size, stride=stride, heads=heads
        )
        with torch.device("meta"):
            encoder = SingleStreamEncoder(**kwargs)
        weights = {k[len("encoder.") :]: v for k, v in state.items()}
        load_state_dict_strict(encoder, weights, assign=True)
    except ValueError as err:
        raise ValueError(f"{fn}: {path}: {err}") from None
    return encoder.eval()


def convert_ivt_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_file: str | os.PathLike[str],
    image_size: tuple[int, ...] = (384, 128),
    stride: int | None = None,
    heads: int | None = None,
) -> Path:
    """Turn a checkpoint of IVT's released code into a textreid retriever folder.

    The encoder is read by :func:`load_ivt_checkpoint` (weights-only, strict) and saved as an
    ``ivt-single-stream`` retriever (:class:`~textreid.retrieval.models.IVTSingleStreamModel`)
    with IVT's own inputs: a :class:`~textreid.wordpiece.WordPieceTokenizer` from
    ``vocab_file`` padding to every text position of the checkpoint (512 for IVT, so no
    caption is cut, as in IVT's code), caption padding masked by the ``[PAD]`` id, and images
    resized bicubically to ``image_size`` and normalised with mean = std = 0.5. The folder
    loads with :meth:`textreid.Retriever.from_pretrained` and works with ``textreid eval`` /
    ``textreid search``; the training-only heads of the file are not kept.

    Args:
        checkpoint: the ``.pth`` file (``{"state_dict": ...}`` or a bare state dict).
        out_dir: output folder.
        vocab_file: the ``vocab.txt`` of the BERT tokenizer the checkpoint was trained with
            (IVT: ``bert-base-uncased``'s; textreid bundles none).
        image_size: the ``(H, W)`` the checkpoint was trained at (IVT: 384x128).
        stride: patch stride (default: inferred from the position embedding).
        heads: attention heads (default: width // 64).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: ``checkpoint`` or ``vocab_file`` does not exist.
        ValueError: a vocabulary that is not a BERT ``vocab.txt`` or has more tokens than the
            checkpoint's word embedding has rows; any error of :func:`load_ivt_checkpoint`.
        OSError: the folder cannot be written (see :meth:`textreid.Retriever.save_pretrained`).
    """
    fn = "convert_ivt_checkpoint"
    path, vocab = Path(checkpoint), Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: checkpoint {path} does not exist")
    if not vocab.exists():
        raise FileNotFoundError(
            f"{fn}: vocab_file {vocab} does not exist; pass the vocab.txt of the BERT tokenizer "
            "the checkpoint was trained with (IVT: bert-base-uncased's)"
        )
    # The vocabulary is checked before the (large) checkpoint is read, and read again once
    # the checkpoint tells the context length.
    try:
        WordPieceTokenizer(vocab)
        encoder = load_ivt_checkpoint(path, image_size=image_size, stride=stride, heads=heads)
        tokenizer = WordPieceTokenizer(
            vocab, context_length=encoder.position_embeddings.num_embeddings
        )
    except ValueError as err:
        raise ValueError(f"{fn}: {err}") from None
    if tokenizer.vocab_size > encoder.vocab_size:
        raise ValueError(
            f"{fn}: {vocab} lists {tokenizer.vocab_size} tokens but the checkpoint's word "
            f"embedding has {encoder.vocab_size} rows; pass the vocabulary it was trained with"
        )
    model = IVTSingleStreamModel(encoder, pad_token_id=tokenizer.pad_token_id)
    preprocess = PreprocessConfig(
        image_size=encoder.image_size, mean=_IVT_MEAN, std=_IVT_STD, interpolation="bicubic"
    )
    retriever = Retriever(model, tokenizer, preprocess)
    retriever.card.description = f"Converted from the IVT checkpoint {path.name}."
    retriever.card.recipe = "ivt"
    return retriever.save_pretrained(out_dir)
