"""Every trained method becomes a retriever that scores its own way, saved and loaded.

For each tiny recipe: train one short epoch on a tiny SynthPEDES, load the saved folder, and
both ``textreid eval`` and a Python ``evaluate`` through the loaded retriever give exactly the
metrics the pipeline reported. Plus the architecture registry and its errors.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from textreid.cli import main
from textreid.data import build_dataset, write_synthpedes
from textreid.hub import Retriever
from textreid.pipeline import TrainResult, train_recipe
from textreid.recipes import get_recipe
from textreid.retrieval import evaluate
from textreid.retrieval.models import (
    RetrievalModel,
    get_architecture,
    list_architectures,
    register_architecture,
)
from textreid.retrieval.scorers import CosineScorer, GaussianScorer, Scorer

SIZE = (48, 24)
RECIPES = {
    "irra": ("clip-dual-encoder", "cosine"),
    "fmfa": ("clip-dual-encoder", "cosine"),
    "ivt": ("ivt-single-stream", "cosine"),
    "uca": ("uca-gaussian", "gaussian"),
    "cmr": ("cmr-parts", "parts"),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthpedes(root, num_identities=16, images_per_identity=2, image_size=SIZE, seed=3)
    return root


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainResult]:
    runs: dict[str, TrainResult] = {}
    for name in RECIPES:
        base = get_recipe(f"tiny-{name}")
        recipe = base.replace(
            model_overrides={**base.model_overrides, "image_size": SIZE},
            data=dataclasses.replace(base.data, image_size=SIZE, batch_size=8),
        )
        runs[name] = train_recipe(
            recipe,
            data,
            dataset="synthpedes",
            output_dir=tmp_path_factory.mktemp(name),
            epochs=1,
            device="cpu",
            progress=False,
        )
    return runs


@pytest.mark.parametrize("name", list(RECIPES))
def test_saved_retriever_reproduces_the_pipeline_metrics(
    name: str,
    trained: dict[str, TrainResult],
    data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = trained[name]
    assert result.retriever_dir is not None
    assert result.test_metrics is not None
    architecture, kind = RECIPES[name]
    config = json.loads((result.retriever_dir / "config.json").read_text())
    assert (config["format_version"], config["architecture"]) == (2, architecture)
    assert config["scorer"]["kind"] == kind
    expected = result.test_metrics.to_dict()

    loaded = Retriever.from_pretrained(result.retriever_dir)
    assert loaded.architecture == architecture
    assert loaded.scorer.kind == kind
    split = build_dataset("synthpedes", data).test
    python = evaluate(
        loaded.encode_text_features(split.captions),
        loaded.encode_image_features(split.img_paths),
        query_pids=torch.as_tensor(split.caption_pids),
        gallery_pids=torch.as_tensor(split.image_pids),
        scorer=loaded.scorer,
    )
    assert python.to_dict() == expected

    capsys.readouterr()
    args = ["eval", str(result.retriever_dir), "--data", str(data), "--dataset", "synthpedes"]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected


def test_the_exported_model_shares_the_method_s_weights(trained: dict[str, TrainResult]) -> None:
    # The retriever the pipeline returns and the one loaded from its folder are the same model.
    result = trained["cmr"]
    assert result.retriever is not None
    assert result.retriever_dir is not None
    loaded = Retriever.from_pretrained(result.retriever_dir)
    same = result.retriever.model.state_dict()
    assert same.keys() == loaded.model.state_dict().keys()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in same.items())
    assert loaded.model_fingerprint == result.retriever.model_fingerprint


def test_uca_retriever_returns_uncertainties(trained: dict[str, TrainResult]) -> None:
    result = trained["uca"]
    assert result.retriever_dir is not None
    r = Retriever.from_pretrained(result.retriever_dir)
    images = torch.randn(5, 3, *SIZE)
    gallery = r.encode_image_features(images)
    captions = ["a man in a red shirt and blue jeans", "a person"]
    hits = r.search(captions, gallery, k=3)
    assert hits.query_uncertainty is not None
    assert hits.gallery_uncertainty is not None
    q = r.encode_text_features(captions)
    expected_q = q["log_var"].exp().mean(-1)
    torch.testing.assert_close(hits.query_uncertainty, expected_q)
    expected_g = gallery["log_var"].exp().mean(-1)[hits.indices]
    torch.testing.assert_close(hits.gallery_uncertainty, expected_g)
    # Another distance at search time, on the same features; another kind is refused.
    other = r.search(captions, gallery, k=3, scorer=GaussianScorer(distance="kl"))
    assert other.indices.shape == (2, 3)
    with pytest.raises(ValueError, match=r"'cosine' scorer .* pass a GaussianScorer"):
        r.search(captions, gallery, k=3, scorer=CosineScorer())


def test_reading_a_file_with_a_scorer_of_another_kind_names_the_file(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    folder = trained["uca"].retriever_dir
    assert folder is not None
    with pytest.raises(ValueError, match=r"config\.json is scored by a 'gaussian'.*GaussianScorer"):
        Retriever.from_pretrained(folder, scorer=CosineScorer())
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in folder.iterdir():
        if f.name not in ("textreid_manifest.json", ".textreid.lock"):
            (edited / f.name).write_bytes(f.read_bytes())
    config = json.loads((edited / "config.json").read_text())
    config["scorer"] = {"kind": "cosine", "normalize": True}
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"edited.config\.json pairs a 'uca-gaussian' model with"):
        Retriever.from_pretrained(edited)


def test_unknown_architecture_names_the_file_and_the_remedy(
    trained: dict[str, TrainResult], tmp_path: Path
) -> None:
    folder = trained["irra"].retriever_dir
    assert folder is not None
    for f in folder.iterdir():
        if f.name not in ("textreid_manifest.json", ".textreid.lock"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["architecture"] = "my-fancy-model"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        Retriever.from_pretrained(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "config.json") in message
    assert "'my-fancy-model'" in message
    assert "register_architecture" in message
    assert "clip-dual-encoder" in message  # the registered ones are listed


class _Bag(RetrievalModel):
    """A user architecture: mean-pooled token embeddings and a linear image encoder."""

    architecture: ClassVar[str] = "test-bag-of-words"

    def __init__(self, dim: int, vocab: int, length: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.dim, self.length, self.size = dim, length, size
        self.words = nn.Embedding(vocab, dim)
        self.pixels = nn.Linear(3 * size[0] * size[1], dim)

    def encode_text(self, ids: Tensor) -> dict[str, Tensor]:
        return {"global": self.words(ids).mean(1)}

    def encode_image(self, images: Tensor) -> dict[str, Tensor]:
        return {"global": self.pixels(images.flatten(1))}

    def scorer(self) -> Scorer:
        return CosineScorer()

    def config_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "vocab": self.words.num_embeddings,
            "length": self.length,
            "size": list(self.size),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _Bag:
        return cls(config["dim"], config["vocab"], config["length"], tuple(config["size"]))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size

    @property
    def context_length(self) -> int:
        return self.length


def test_a_registered_user_architecture_saves_loads_and_searches(tmp_path: Path) -> None:
    register_architecture(_Bag.architecture, _Bag)
    try:
        assert _Bag.architecture in list_architectures()
        assert get_architecture(_Bag.architecture) is _Bag
        torch.manual_seed(0)
        r = Retriever(_Bag(8, 49408, 16, (8, 4)))
        images = torch.rand(4, 3, 8, 4)
        before = r.search(["a red coat", "blue jeans"], r.index_images(list(images)), k=2)
        r.save_pretrained(tmp_path)
        loaded = Retriever.from_pretrained(tmp_path)
        assert isinstance(loaded.retrieval_model, _Bag)
        assert loaded.model_fingerprint == r.model_fingerprint
        index = loaded.index_images(list(images))
        after = loaded.search(["a red coat", "blue jeans"], index, k=2)
        assert torch.equal(before.indices, after.indices)
        assert torch.equal(before.scores, after.scores)
    finally:
        from textreid.retrieval.models import _ARCHITECTURES

        _ARCHITECTURES.unregister(_Bag.architecture, fn="test")


def test_register_architecture_refuses_a_name_the_class_does_not_declare() -> None:
    with pytest.raises(ValueError, match=r"differs from _Bag\.architecture"):
        register_architecture("other-name", _Bag)
    with pytest.raises(TypeError, match="RetrievalModel subclass"):
        register_architecture("x", nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("clip-dual-encoder", get_architecture("clip-dual-encoder"))


def test_an_index_from_another_model_is_refused(trained: dict[str, TrainResult]) -> None:
    a, b = trained["irra"].retriever, trained["fmfa"].retriever
    assert a is not None
    assert b is not None
    index = a.index_images(list(torch.rand(3, 3, *SIZE)))
    with pytest.raises(ValueError, match=r"built by another model.*index_images"):
        b.search("a man", index, k=1)


def test_a_version_1_folder_loads_as_a_cosine_clip_retriever_and_resaves_as_version_2(
    tmp_path: Path,
) -> None:
    v1 = Path(__file__).parent / "fixtures" / "compat" / "v1" / "retriever"
    r = Retriever.from_pretrained(v1)
    assert (r.architecture, r.scorer.kind) == ("clip-dual-encoder", "cosine")
    r.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["format_version"], config["architecture"]) == (2, "clip-dual-encoder")
    again = Retriever.from_pretrained(tmp_path)
    # The weights keep the OpenAI / open_clip key layout of version 1 files.
    assert again.model.state_dict().keys() == r.model.state_dict().keys()
    text = ["a man in a red shirt"]
    assert torch.equal(again.encode_text(text), r.encode_text(text))  # type: ignore[arg-type]


def test_uca_retrieval_model_encodes_the_gaussians_the_method_trains() -> None:
    # The retrieval model re-implements UCAMethod.embed on shared modules: they must agree.
    from tests.methods._helpers import recipe_tokenizer
    from textreid.pipeline import build_method

    torch.manual_seed(0)
    recipe = get_recipe("tiny-uca")
    tokenizer = recipe_tokenizer(recipe)
    method = build_method(recipe, 4, tokenizer=tokenizer).eval()
    ids = tokenizer(["a man in a red shirt", "a woman"])
    model = method.retrieval_model()
    images = torch.randn(2, 3, *model.image_size)
    image, text = method.embed(images, ids)
    g, q = model.encode_image(images), model.encode_text(ids)
    assert torch.equal(g["mean"], image.mean)
    assert torch.equal(g["log_var"], image.log_var)
    assert torch.equal(q["mean"], text.mean)
    assert torch.equal(q["log_var"], text.log_var)
    own = dict(method.named_parameters())
    assert all(p is own[n] for n, p in model.named_parameters())  # shared, not copied
