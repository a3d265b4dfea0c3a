"""``Retriever.from_pretrained`` on a Hugging Face CLIP repository (served by FakeHub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textreid import CLIPTokenizer, Retriever
from textreid.testing import FakeHub

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def hf_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict[str, bytes]]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "eos_token_id": 49407,
            "bos_token_id": 49406,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = transformers.CLIPModel(cfg).eval()
    folder = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(folder)
    CLIPTokenizer().save_vocabulary(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return model, files


def test_clip_repo_becomes_a_retriever_with_the_same_features(
    hf_repo: tuple[torch.nn.Module, dict[str, bytes]], tmp_path: Path
) -> None:
    model, files = hf_repo
    with FakeHub() as hub:
        hub.add_repo("openai/clip-tiny", files)
        r = Retriever.from_pretrained(
            "openai/clip-tiny", endpoint=hub.endpoint, cache_dir=tmp_path, image_size=(32, 32)
        )
        fetched = {q.path.rsplit("/", 1)[-1] for q in hub.requests}
    assert {"config.json", "vocab.json", "merges.txt"} <= fetched
    texts = ["a man in a blue shirt", "a girl with a red umbrella"]
    ids = r.tokenizer(texts)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_txt = model.get_text_features(input_ids=ids)
        ref_img = model.get_image_features(pixel_values=images)
    ref_txt = ref_txt if isinstance(ref_txt, torch.Tensor) else ref_txt.pooler_output
    ref_img = ref_img if isinstance(ref_img, torch.Tensor) else ref_img.pooler_output
    norm = torch.nn.functional.normalize
    torch.testing.assert_close(r.encode_text(texts), norm(ref_txt, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.encode_images(images), norm(ref_img, dim=-1), atol=1e-5, rtol=0)


def test_clip_repo_resamples_to_the_person_image_size(
    hf_repo: tuple[torch.nn.Module, dict[str, bytes]], tmp_path: Path
) -> None:
    model, files = hf_repo
    folder = tmp_path / "local"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    r = Retriever.from_pretrained(folder, image_size=(64, 32))
    assert r.model.config.vision.image_size == (64, 32)
    assert r.model.visual.positional_embedding.shape == (1 + 8 * 4, 32)
    cls_row = model.vision_model.embeddings.position_embedding.weight[0]
    torch.testing.assert_close(r.model.visual.positional_embedding[0], cls_row)
    assert r.encode_images(torch.randn(1, 3, 64, 32)).shape == (1, 16)
    with pytest.raises(ValueError, match="image_size applies to CLIP repositories only"):
        Retriever.from_pretrained(r.save_pretrained(tmp_path / "saved"), image_size=(64, 32))
