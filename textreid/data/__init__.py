"""Benchmarks, the SynthPEDES generator, datasets, image transforms and samplers."""

from __future__ import annotations

from textreid.data.datasets import (
    ImageDataset,
    ImageTextDataset,
    TextDataset,
    Tokenizer,
    collate_trimmed,
    load_image,
)
from textreid.data.pedes import (
    PedesDataset,
    PedesSplit,
    TrainSample,
    build_dataset,
    list_datasets,
    read_cuhk_pedes,
    read_icfg_pedes,
    read_pedes_json,
    read_rstpreid,
    read_synthpedes,
    register_dataset,
)
from textreid.data.samplers import IdentitySampler
from textreid.data.synthetic import SYNTHPEDES_FORMAT_VERSION, SynthPEDESConfig, write_synthpedes
from textreid.data.transforms import CLIP_MEAN, CLIP_STD, build_transforms

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "SYNTHPEDES_FORMAT_VERSION",
    "IdentitySampler",
    "ImageDataset",
    "ImageTextDataset",
    "PedesDataset",
    "PedesSplit",
    "SynthPEDESConfig",
    "TextDataset",
    "Tokenizer",
    "TrainSample",
    "build_dataset",
    "build_transforms",
    "collate_trimmed",
    "list_datasets",
    "load_image",
    "read_cuhk_pedes",
    "read_icfg_pedes",
    "read_pedes_json",
    "read_rstpreid",
    "read_synthpedes",
    "register_dataset",
    "write_synthpedes",
]
