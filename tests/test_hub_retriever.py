"""What a Retriever says about itself and its hits: repr, model cards, k against the gallery
size, the hits' paths and ids, and half-precision inference."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from textreid import Retriever
from textreid.hub import ModelCard
from textreid.models import create_model
from textreid.retrieval import GalleryIndex, SearchResult
from textreid.testing import FakeHub

SIZE = (64, 32)
TEXTS = ["a man in a red jacket", "a woman with a white bag", "a child in blue shorts"]


def _retriever(card: ModelCard | None = None) -> Retriever:
    torch.manual_seed(0)
    return Retriever(create_model("tiny", image_size=SIZE), card=card)


def _images(n: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    paths = []
    for i in range(n):
        arr = torch.randint(0, 256, (40, 20, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(folder / f"img_{i:02d}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


# -- repr ------------------------------------------------------------------------------------
def test_repr_is_one_line_naming_what_the_retriever_is(tmp_path: Path) -> None:
    built = _retriever()
    assert repr(built) == (
        "Retriever(architecture='clip-dual-encoder', embed_dim=64, scorer='cosine', "
        "device=cpu, dtype=torch.float32, source=None (built in code), untrained)"
    )
    card = ModelCard(recipe="tiny-irra", dataset="SynthPEDES", trained=True, epochs=3, seed=7)
    folder = _retriever(card).save_pretrained(tmp_path / "saved")
    loaded = Retriever.from_pretrained(folder, dtype=torch.bfloat16)
    assert repr(loaded) == (
        "Retriever(architecture='clip-dual-encoder', embed_dim=64, scorer='cosine', "
        f"device=cpu, dtype=torch.bfloat16, source='{folder}', trained: recipe 'tiny-irra' "
        "on SynthPEDES, 3 epochs, seed 7)"
    )
    with FakeHub() as hub:
        hub.add_repo("org/tiny", {p.name: p.read_bytes() for p in folder.iterdir()})
        remote = Retriever.from_pretrained(
            "org/tiny", revision="main", endpoint=hub.endpoint, cache_dir=tmp_path / "c"
        )
    assert "source='hf-hub:org/tiny@main'" in repr(remote)
    assert "\n" not in repr(remote)


# -- model cards -----------------------------------------------------------------------------
def test_an_untrained_card_does_not_claim_training(tmp_path: Path) -> None:
    folder = _retriever().save_pretrained(tmp_path / "untrained")
    card = (folder / "README.md").read_text()
    assert "trained with textreid" not in card
    assert "textreid did not train it" in card
    assert "Not trained by textreid: no recipe, dataset or metrics to report." in card
    assert json.loads((folder / "config.json").read_text())["card"]["trained"] is False
    assert Retriever.from_pretrained(folder).card.trained is False


def test_a_trained_card_says_how(tmp_path: Path) -> None:
    card = ModelCard(
        recipe="irra",
        dataset="CUHK-PEDES",
        metrics={"R1": 73.4, "mAP": 66.1},
        trained=True,
        epochs=60,
        seed=1,
        base_model="openai/clip-vit-base-patch16",
    )
    text = card.render("org/irra")
    assert "A text-to-image person retrieval model trained with textreid (recipe 'irra' on " in text
    assert "CUHK-PEDES, 60 epochs, seed 1)." in text
    for line in (
        "base_model: openai/clip-vit-base-patch16",
        "- Recipe: `irra`",
        "- Dataset: CUHK-PEDES",
        "- Epochs: 60",
        "- Seed: 1",
        "- Initialised from: openai/clip-vit-base-patch16",
        "## Text-to-image retrieval (%, test split)",
        "| 73.40 | 66.10 |",
    ):
        assert line in text.splitlines()
    folder = _retriever(card).save_pretrained(tmp_path / "trained")
    assert Retriever.from_pretrained(folder).card == card


def test_old_cards_read_as_trained_only_when_a_recipe_was_recorded() -> None:
    old_default = "A text-to-image person retrieval model trained with textreid."
    plain = ModelCard.from_dict({"description": old_default, "recipe": None, "metrics": {}})
    assert plain.trained is False
    assert plain.description is None  # the old default claimed training for every model
    run = ModelCard.from_dict({"description": old_default, "recipe": "irra", "dataset": "x"})
    assert run.trained is True
    with pytest.raises(ValueError, match=r"unknown keys \['epoch'\]"):
        ModelCard.from_dict({"epoch": 3})


# -- k and the gallery size --------------------------------------------------------------------
def test_k_beyond_the_gallery_is_clamped_with_a_warning(tmp_path: Path) -> None:
    r = _retriever()
    _images(4, tmp_path / "g")
    index = r.index_images(tmp_path / "g")
    with pytest.warns(
        UserWarning,
        match=r"^Retriever\.search: k=5 is larger than the gallery \(4 items\); returning all "
        r"4 hits per caption$",
    ):
        hits = r.search(TEXTS, index, k=5)
    full = r.search(TEXTS, index, k=4)
    assert hits.indices.shape == (3, 4)
    assert torch.equal(hits.indices, full.indices)
    with pytest.raises(ValueError, match=r"^Retriever\.search: k must be >= 1, got 0$"):
        r.search(TEXTS, index, k=0)
    with pytest.raises(TypeError, match=r"^Retriever\.search: k must be an int, got float$"):
        r.search(TEXTS, index, k=2.0)  # type: ignore[arg-type]


# -- paths and ids of the hits -----------------------------------------------------------------
def test_hits_carry_the_gallery_paths_and_ids(tmp_path: Path) -> None:
    r = _retriever()
    paths = _images(5, tmp_path / "g")
    ids = [10, 11, 12, 13, 14]
    index = r.index_images(paths, ids=ids)
    hits = r.search(TEXTS, index, k=3)
    rows = hits.indices.tolist()
    assert hits.gallery_paths == [[str(paths[j]) for j in row] for row in rows]
    assert hits.gallery_ids == [[ids[j] for j in row] for row in rows]
    back = pickle.loads(pickle.dumps(hits))
    assert (back.gallery_paths, back.gallery_ids) == (hits.gallery_paths, hits.gallery_ids)
    # A folder index knows paths but not ids; raw features know neither.
    folder_hits = r.search(TEXTS, r.index_images(tmp_path / "g"), k=2)
    assert folder_hits.gallery_ids is None
    assert folder_hits.gallery_paths == [
        [str(paths[j]) for j in row] for row in folder_hits.indices.tolist()
    ]
    raw = r.search(TEXTS, r.encode_images(paths), k=2)
    assert raw.gallery_paths is None
    assert raw.gallery_ids is None
    assert "gallery_paths" not in repr(raw)
    assert SearchResult(hits.scores, hits.indices).gallery_paths is None


def test_gallery_images_given_as_paths_name_the_hits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from textreid.retrieval.models import CLIPRetrievalModel

    r = Retriever(CLIPRetrievalModel(create_model("tiny", image_size=SIZE), token_features=True))
    paths = _images(4, tmp_path / "g")
    index = r.index_images(paths, store_tokens=False)
    hits = r.search(TEXTS, GalleryIndex(index.feature_map), k=2, rerank=True, gallery_images=paths)
    assert hits.gallery_paths == [[str(paths[j]) for j in row] for row in hits.indices.tolist()]


# -- half precision ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gives_the_float32_top_k_where_scores_are_apart(
    dtype: torch.dtype, tmp_path: Path
) -> None:
    r32 = _retriever()
    half = Retriever(copy.deepcopy(r32.retrieval_model), dtype=dtype)
    assert half.dtype == dtype
    assert half.model_fingerprint == r32.model_fingerprint  # the same model, another precision
    assert {p.dtype for p in half.model.parameters()} == {dtype}
    q32 = r32.encode_text(TEXTS)
    q16 = half.encode_text(TEXTS)
    assert q16.dtype == dtype
    # Tie-free galleries: for each caption, rows at cosines 0.9, 0.7, ..., -0.1 of its
    # float32 embedding (the rest orthogonal noise), far apart next to half rounding.
    g = torch.Generator().manual_seed(0)
    cosines = torch.tensor([0.3, 0.9, -0.1, 0.5, 0.1, 0.7])
    for text, q in zip(TEXTS, q32):
        noise = torch.randn(len(cosines), q.numel(), generator=g)
        noise -= (noise @ q)[:, None] * q
        noise /= noise.norm(dim=1, keepdim=True)
        gallery = cosines[:, None] * q + (1 - cosines[:, None] ** 2).sqrt() * noise
        want = r32.search(text, gallery, k=4)
        got = half.search(text, gallery.to(dtype), k=4)
        assert want.indices.tolist() == [[1, 5, 3, 0]]
        assert got.scores.dtype == torch.float32
        assert torch.equal(got.indices, want.indices)
        torch.testing.assert_close(got.scores, want.scores, atol=0.02, rtol=0)
    torch.testing.assert_close(q16.float(), q32, atol=0.02, rtol=0)
    paths = _images(3, tmp_path / "g")
    assert half.encode_images(paths).dtype == dtype


def test_half_precision_from_pretrained_and_back_to_float32_files(tmp_path: Path) -> None:
    folder = _retriever().save_pretrained(tmp_path / "saved")
    half = Retriever.from_pretrained(folder, dtype=torch.float16)
    assert half.dtype == torch.float16
    assert half.encode_text(TEXTS).dtype == torch.float16
    # Saving writes float32 weights whatever the inference precision.
    again = Retriever.from_pretrained(half.save_pretrained(tmp_path / "again"))
    assert again.dtype == torch.float32
    with pytest.raises(ValueError, match=r"^Retriever: dtype must be None \(float32\) or one of"):
        Retriever(create_model("tiny", image_size=SIZE), dtype=torch.int8)
    with pytest.raises(ValueError, match=r"^Retriever\.from_pretrained: dtype must be"):
        Retriever.from_pretrained(folder, dtype=torch.float64)


@pytest.mark.parametrize(
    ("recipe", "head"), [("tiny-uca", "text_head"), ("tiny-cmr", "part_decoder")]
)
def test_half_precision_runs_the_encoder_in_half_and_heads_in_float32(
    recipe: str, head: str
) -> None:
    import dataclasses

    from tests.methods._helpers import recipe_tokenizer
    from textreid.pipeline import build_method
    from textreid.recipes import get_recipe

    size = (48, 24)  # the tiny recipes' convolutional stem tiles sides divisible by 12
    base = get_recipe(recipe)
    small = base.replace(
        model_overrides={**base.model_overrides, "image_size": size},
        data=dataclasses.replace(base.data, image_size=size),
    )
    torch.manual_seed(0)
    tokenizer = recipe_tokenizer(small)
    model = build_method(small, 8, tokenizer=tokenizer).retrieval_model()
    r32 = Retriever(copy.deepcopy(model), tokenizer)
    half = Retriever(model, tokenizer, dtype=torch.bfloat16)
    assert {p.dtype for p in model.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in getattr(model, head).parameters()} == {torch.float32}
    images = torch.rand(5, 3, *size, generator=torch.Generator().manual_seed(2))
    feats = half.encode_image_features(images)
    assert {v.dtype for v in feats.values()} == {torch.bfloat16}
    got = half.search(TEXTS, feats, k=3)
    want = r32.search(TEXTS, r32.encode_image_features(images), k=3)
    assert got.scores.dtype == torch.float32
    torch.testing.assert_close(got.scores, want.scores, atol=0.1, rtol=0.05)
