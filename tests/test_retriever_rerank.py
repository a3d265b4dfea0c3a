"""Token re-ranking through a Retriever: tokens from the model, stored in the index or
re-computed for the candidates, the model's own head, saved and loaded, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from tests.methods._helpers import recipe_tokenizer
from textreid import Retriever
from textreid.heads import SparseTokenSimilarity
from textreid.methods import FMFAMethod
from textreid.models import CLIPDualEncoder, create_model
from textreid.pipeline import build_method
from textreid.recipes import get_recipe
from textreid.retrieval import CosineScorer, GalleryIndex, TokenReranker, topk_search
from textreid.retrieval.models import CLIPRetrievalModel
from textreid.text import caption_key_mask
from textreid.tokenization import CLIPTokenizer

SIZE = (64, 32)
TEXTS = ["a man in a red jacket", "a woman with a white bag", "a child in blue shorts"]
# Not FMFA's default (1.0): a head rebuilt with defaults instead of the saved one shows.
TEMPERATURE = 0.5


def _model(seed: int = 0, *, tokens: bool = True) -> CLIPRetrievalModel:
    torch.manual_seed(seed)
    encoder = create_model("tiny", image_size=SIZE)
    if not tokens:
        return CLIPRetrievalModel(encoder)
    head = SparseTokenSimilarity(temperature=TEMPERATURE, include_padding=True)
    return CLIPRetrievalModel(encoder, token_features=True, token_head=head)


def _encoder(retriever: Retriever) -> CLIPDualEncoder:
    model = retriever.retrieval_model
    assert isinstance(model, CLIPRetrievalModel)
    return model.encoder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("gallery")
    g = torch.Generator().manual_seed(1)
    paths = []
    for i in range(8):
        arr = torch.randint(0, 256, (40, 20, 3), generator=g, dtype=torch.uint8).numpy()
        p = folder / f"img_{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def retriever() -> Retriever:
    return Retriever(_model())


def test_the_model_emits_the_tokens_fmfa_trains_on() -> None:
    torch.manual_seed(0)
    encoder = create_model("tiny", image_size=SIZE)
    method = FMFAMethod(encoder, num_classes=4, efa_temperature=0.1).eval()
    model = method.retrieval_model()
    assert model.encoder is encoder  # shared, not copied
    head = model.token_head()
    assert head is not None
    assert (head.temperature, head.threshold, head.include_padding) == (
        method.efa.temperature,
        method.efa.threshold,
        method.efa.include_padding,
    )
    assert head.temperature == 0.1
    ids = CLIPTokenizer(context_length=encoder.config.text.context_length)(TEXTS)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        q, g = model.encode_text(ids), model.encode_image(x)
        _, text_tokens = encoder.encode_text(ids, return_tokens=True)
        _, image_tokens = encoder.encode_image(x, return_tokens=True)
    # What FMFAMethod hands its EFA loss: every caption position, the patches without the
    # class token.
    assert torch.equal(q["tokens"], text_tokens.float())
    assert torch.equal(q["token_mask"], caption_key_mask(ids, "test"))
    assert torch.equal(g["tokens"], image_tokens[:, 1:].float())
    assert set(g) == {"global", "tokens"}
    # The global features are those of the model without tokens.
    plain = CLIPRetrievalModel(encoder)
    with torch.no_grad():
        assert torch.equal(q["global"], plain.encode_text(ids)["global"])
        assert torch.equal(g["global"], plain.encode_image(x)["global"])


def test_the_fmfa_recipes_exported_retriever_reranks_with_its_efa_settings() -> None:
    # train_recipe saves Retriever(method.retrieval_model(), ...): that model's head.
    recipe = get_recipe("tiny-fmfa")
    tokenizer = recipe_tokenizer(recipe)
    method = build_method(recipe, 4, tokenizer=tokenizer)
    assert isinstance(method, FMFAMethod)
    exported = Retriever(method.retrieval_model(), tokenizer)
    reranker = exported.token_reranker()
    assert reranker.head.temperature == method.efa.temperature
    assert reranker.head.include_padding is True


def test_search_with_rerank_is_topk_search_then_the_models_reranker(
    retriever: Retriever, images: list[Path]
) -> None:
    index = retriever.index_images(images)
    vision = _encoder(retriever).config.vision
    patches = (SIZE[0] // vision.patch_size) * (SIZE[1] // vision.patch_size)
    assert index.feature_map["tokens"].shape == (8, patches, 64)  # no class token
    got = retriever.search(TEXTS, index, k=4, rerank=True)
    query = retriever.encode_text_features(TEXTS)
    first = topk_search(query, index.feature_map, 4, scorer=CosineScorer())
    reranker = TokenReranker(SparseTokenSimilarity(temperature=TEMPERATURE, include_padding=True))
    want = reranker.rerank(first, query, index.feature_map)
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)
    # Against the head over every pair: cosine + token score of the same 4 candidates.
    head = SparseTokenSimilarity(temperature=TEMPERATURE, include_padding=True, chunk_size=None)
    token = head(index.feature_map["tokens"], query["tokens"]).T.gather(1, first.indices)
    fused, order = (first.scores + token).sort(dim=1, descending=True, stable=True)
    assert torch.equal(got.indices, first.indices.gather(1, order))
    torch.testing.assert_close(got.scores, fused, rtol=1e-6, atol=1e-6)
    # Not vacuous: the re-ranker re-orders the cosine hits here.
    assert not torch.equal(got.indices, first.indices)
    # A re-ranker with other settings, and the gallery features passed directly.
    token_only = retriever.token_reranker(fusion="token")
    direct = retriever.search(TEXTS, index.feature_map, k=4, rerank=token_only)
    by_hand = token_only.rerank(first, query, index.feature_map)
    assert torch.equal(direct.indices, by_hand.indices)
    assert torch.equal(direct.scores, by_hand.scores)


def test_stored_and_recomputed_gallery_tokens_give_identical_results(
    retriever: Retriever, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = retriever.index_images(images)
    bare = retriever.index_images(images, store_tokens=False)
    assert set(bare.feature_map) == {"global"}
    want = retriever.search(TEXTS[:1], stored, k=2, rerank=True)
    # Only the candidates are encoded again: memory and time bounded by k, not the gallery.
    encoded: list[int] = []
    encode = retriever.retrieval_model.encode_image

    def counting(x: Tensor) -> dict[str, Tensor]:
        encoded.append(x.shape[0])
        return encode(x)

    monkeypatch.setattr(retriever.retrieval_model, "encode_image", counting)
    got = retriever.search(TEXTS[:1], bare, k=2, rerank=True, gallery_images=bare.paths)
    monkeypatch.undo()
    assert sum(encoded) == 2
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)
    # The same through TokenReranker.rerank with the retriever's GalleryTokens by hand.
    query = retriever.encode_text_features(TEXTS)
    first = bare.search(query, 5)
    reranker = retriever.token_reranker(batch_size=3)  # several blocks of candidates
    by_hand = reranker.rerank(first, query, retriever.gallery_tokens(images))
    from_index = reranker.rerank(first, query, stored.feature_map)
    assert torch.equal(by_hand.scores, from_index.scores)
    assert torch.equal(by_hand.indices, from_index.indices)


def test_tokens_round_trip_through_the_retriever_and_the_index(
    retriever: Retriever, images: list[Path], tmp_path: Path
) -> None:
    folder = retriever.save_pretrained(tmp_path / "retriever")
    model_cfg = json.loads((folder / "config.json").read_text())["model"]
    assert model_cfg["token_features"] is True
    assert model_cfg["token_head"] == {
        "temperature": TEMPERATURE,
        "threshold": None,
        "include_padding": True,
    }
    loaded = Retriever.from_pretrained(folder)
    head = loaded.token_reranker().head
    assert (head.temperature, head.threshold, head.include_padding) == (TEMPERATURE, None, True)
    a, b = retriever.encode_text_features(TEXTS), loaded.encode_text_features(TEXTS)
    assert a.keys() == b.keys() == {"global", "tokens", "token_mask"}
    assert all(torch.equal(a[key], b[key]) for key in a)
    index = retriever.index_images(images)
    index.save(tmp_path / "index")
    opened = GalleryIndex.load(tmp_path / "index", mmap=True)
    assert opened.feature_map.keys() == {"global", "tokens"}
    assert torch.equal(opened.feature_map["tokens"], index.feature_map["tokens"])
    want = retriever.search(TEXTS, index, k=3, rerank=True)
    got = loaded.search(TEXTS, opened, k=3, rerank=True)
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)


def test_half_precision_tokens_are_stored_half_and_reranked_in_float32(
    retriever: Retriever, images: list[Path], tmp_path: Path
) -> None:
    index = retriever.index_images(images, token_dtype=torch.float16)
    tokens = index.feature_map["tokens"]
    full = retriever.index_images(images).feature_map["tokens"]
    assert tokens.dtype == torch.float16
    assert torch.equal(tokens, full.half())
    assert index.feature_map["global"].dtype == torch.float32
    index.save(tmp_path)
    opened = GalleryIndex.load(tmp_path)
    assert opened.feature_map["tokens"].dtype == torch.float16
    got = retriever.search(TEXTS, opened, k=3, rerank=True)
    query = retriever.encode_text_features(TEXTS)
    first = topk_search(query, index.feature_map, 3, scorer=CosineScorer())
    want = retriever.token_reranker().rerank(first, query, {"tokens": full.half().float()})
    assert got.scores.dtype == torch.float32
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)


def test_tokens_leave_the_global_search_and_fingerprint_unchanged(
    retriever: Retriever, images: list[Path]
) -> None:
    plain = Retriever(CLIPRetrievalModel(_encoder(retriever)))
    assert plain.model_fingerprint == retriever.model_fingerprint
    assert "token_features" not in plain.config_dict()["model"]
    index = retriever.index_images(images)
    a, b = retriever.search(TEXTS, index, k=3), plain.search(TEXTS, index, k=3)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.indices, b.indices)
    # The tensor API of models with global features only is kept.
    text = retriever.encode_text(TEXTS)
    assert isinstance(text, Tensor)
    assert torch.equal(text, retriever.encode_text_features(TEXTS)["global"])
    assert isinstance(retriever.encode_images(images[:2]), Tensor)


def test_reranking_without_tokens_is_refused_naming_the_remedy(
    retriever: Retriever, images: list[Path], tmp_path: Path
) -> None:
    plain = Retriever(_model(tokens=False))
    index = plain.index_images(images)
    with pytest.raises(ValueError, match=r"Retriever\.search: .*emits no tokens.*token_features"):
        plain.search(TEXTS, index, k=2, rerank=True)
    with pytest.raises(ValueError, match=r"Retriever\.search: .*emits no tokens"):
        plain.search(TEXTS, index, k=2, rerank=TokenReranker())
    with pytest.raises(ValueError, match=r"Retriever\.token_reranker: .*emits no tokens"):
        plain.token_reranker()
    with pytest.raises(ValueError, match=r"Retriever\.gallery_tokens: .*emits no tokens"):
        plain.gallery_tokens(images)
    bare = retriever.index_images(images, store_tokens=False)
    bare.save(tmp_path)
    opened = GalleryIndex.load(tmp_path)
    path = str(tmp_path / "gallery_index.safetensors")
    with pytest.raises(ValueError, match=rf"{path} hold no image 'tokens'.*gallery_images="):
        retriever.search(TEXTS, opened, k=2, rerank=True)
    query = retriever.encode_text_features(TEXTS)
    with pytest.raises(ValueError, match=rf"GalleryIndex\.search: the gallery index {path}"):
        opened.search(query, 2, rerank=TokenReranker())
    with pytest.raises(TypeError, match=r"gallery_images re-computes .* rerank=True"):
        retriever.search(TEXTS, bare, k=2, gallery_images=images)
    with pytest.raises(ValueError, match=r"gallery_images has 7 images but the gallery has 8"):
        retriever.search(TEXTS, bare, k=2, rerank=True, gallery_images=images[:7])
    with pytest.raises(ValueError, match=r"indices \[8\] lie outside the 8 gallery images"):
        retriever.gallery_tokens(images)(torch.tensor([0, 8]))
    with pytest.raises(ValueError, match=r"index_images: token_dtype must be"):
        retriever.index_images(images, token_dtype=torch.int8)


def test_bad_token_settings_are_refused(retriever: Retriever, tmp_path: Path) -> None:
    encoder = _encoder(retriever)
    head = SparseTokenSimilarity()
    with pytest.raises(ValueError, match=r"CLIPRetrievalModel: token_head is given but"):
        CLIPRetrievalModel(encoder, token_head=head)
    with pytest.raises(TypeError, match=r"token_head must be a SparseTokenSimilarity"):
        CLIPRetrievalModel(encoder, token_features=True, token_head=object())  # type: ignore[arg-type]
    folder = retriever.save_pretrained(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "textreid_manifest.json").unlink()
    for edit, message in (
        ({"token_head": None}, r"token_features is true but token_head is absent"),
        ({"token_features": "yes"}, r"token_features must be true or false"),
        ({"token_head": {"temperature": 0.5}}, r"token_head: config must have the keys"),
        (
            {"token_head": {"temperature": 0, "threshold": None, "include_padding": True}},
            r"temperature",
        ),
    ):
        model = {**config["model"], **edit}
        if model.get("token_head", 0) is None:
            del model["token_head"]
        (folder / "config.json").write_text(json.dumps({**config, "model": model}))
        with pytest.raises(ValueError, match=rf"{folder / 'config.json'}.*{message}"):
            Retriever.from_pretrained(folder)


def test_an_index_without_scorer_reranks_its_global_search() -> None:
    g = torch.Generator().manual_seed(0)
    gallery = {
        "global": torch.randn(6, 8, generator=g),
        "tokens": torch.randn(6, 5, 8, generator=g),
    }
    query = {"global": torch.randn(2, 8, generator=g), "tokens": torch.randn(2, 4, 8, generator=g)}
    reranker = TokenReranker()
    got = GalleryIndex(gallery).search(query, 3, rerank=reranker)
    want = reranker.rerank(
        topk_search(query["global"], gallery["global"], 3, normalize=False), query, gallery
    )
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.indices, want.indices)
