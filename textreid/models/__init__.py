"""Encoders: CLIP-style vision and text towers, the dual encoder, registry and weight loading."""

from __future__ import annotations

from textreid.models.clip import CLIPDualEncoder
from textreid.models.convert import (
    clean_state_dict,
    clip_config_from_hf_dict,
    clip_config_from_open_clip_dict,
    clip_config_to_hf_dict,
    config_from_state_dict,
    detect_layout,
    export_hf,
    hf_to_openai,
    irra_to_textreid,
    ivt_to_textreid,
    openai_to_hf,
    single_stream_config_from_state_dict,
    to_openai_layout,
)
from textreid.models.cross_modal import CrossModalTransformer, MLMHead
from textreid.models.load import load_clip, load_state_dict_strict, read_weights, save_hf
from textreid.models.part_decoder import PartEmbeddings, PartQueryDecoder
from textreid.models.pos_embed import resample_pos_embed
from textreid.models.registry import (
    create_model,
    get_model_config,
    list_models,
    override_config,
    register_model,
)
from textreid.models.single_stream import (
    ModalityExpertBlock,
    SingleStreamEncoder,
    TokenDropper,
    token_drop_indices,
)
from textreid.models.text import TextTransformer
from textreid.models.vit import ConvStem, VisionTransformer

__all__ = [
    "CLIPDualEncoder",
    "ConvStem",
    "CrossModalTransformer",
    "MLMHead",
    "ModalityExpertBlock",
    "PartEmbeddings",
    "PartQueryDecoder",
    "SingleStreamEncoder",
    "TextTransformer",
    "TokenDropper",
    "VisionTransformer",
    "clean_state_dict",
    "clip_config_from_hf_dict",
    "clip_config_from_open_clip_dict",
    "clip_config_to_hf_dict",
    "config_from_state_dict",
    "create_model",
    "detect_layout",
    "export_hf",
    "get_model_config",
    "hf_to_openai",
    "irra_to_textreid",
    "ivt_to_textreid",
    "list_models",
    "load_clip",
    "load_state_dict_strict",
    "openai_to_hf",
    "override_config",
    "read_weights",
    "register_model",
    "resample_pos_embed",
    "save_hf",
    "single_stream_config_from_state_dict",
    "to_openai_layout",
    "token_drop_indices",
]
