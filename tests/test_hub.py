"""Retriever save / load / push through a local folder and the loopback FakeHub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from textreid import Retriever
from textreid.hub import HUB_FORMAT_VERSION, HubConnectionError, ModelCard
from textreid.models import create_model
from textreid.testing import FakeHub

SIZE = (64, 32)


def _retriever(seed: int = 0) -> Retriever:
    torch.manual_seed(seed)
    model = create_model("tiny", image_size=SIZE)
    card = ModelCard(recipe="tiny-irra", dataset="synthpedes", metrics={"R1": 12.5, "mAP": 9.0})
    return Retriever(model, card=card)


def _images(n: int, tmp_path: Path) -> list[Path]:
    g = torch.Generator().manual_seed(1)
    paths = []
    for i in range(n):
        arr = torch.randint(0, 256, (40, 20, 3), generator=g, dtype=torch.uint8).numpy()
        p = tmp_path / f"img_{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _hand_edit(folder: Path, cfg: dict[str, object]) -> None:
    """Rewrite config.json and drop the manifest, which would otherwise refuse the edit."""
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "textreid_manifest.json").unlink()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Retriever, Path]:
    r = _retriever()
    return r, r.save_pretrained(tmp_path / "saved")


def test_save_writes_the_documented_layout(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        ".textreid.lock",
        "README.md",
        "config.json",
        "model.safetensors",
        "textreid_manifest.json",
    ]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format_version"] == HUB_FORMAT_VERSION
    assert cfg["architecture"] == "clip-dual-encoder"
    assert cfg["scorer"] == {"kind": "cosine", "normalize": True}
    assert cfg["model"]["vision"]["act"] == "quick_gelu"  # never guessed at load time
    assert cfg["preprocess"]["image_size"] == list(SIZE)
    card = (folder / "README.md").read_text()
    assert "library_name: textreid" in card
    assert "| R1 | mAP |" in card
    assert "12.50" in card


def test_round_trip_gives_identical_outputs(saved: tuple[Retriever, Path], tmp_path: Path) -> None:
    r, folder = saved
    loaded = Retriever.from_pretrained(folder)
    texts = ["a man in a red jacket", "a woman with a white bag"]
    assert torch.equal(r.encode_text(texts), loaded.encode_text(texts))
    imgs = _images(3, tmp_path)
    assert torch.equal(r.encode_images(imgs), loaded.encode_images(imgs))
    assert loaded.card.metrics == {"R1": 12.5, "mAP": 9.0}


def test_index_and_search_a_folder(saved: tuple[Retriever, Path], tmp_path: Path) -> None:
    r, _ = saved
    gallery_dir = tmp_path / "gallery"
    gallery_dir.mkdir()
    paths = _images(7, gallery_dir)
    index = r.index_images(gallery_dir)
    assert len(index) == 7
    hits = r.search(["a person"], index, k=3)
    feats = r.encode_images(paths)
    expected = (r.encode_text(["a person"]) @ feats.T).topk(3)
    assert torch.equal(hits.indices, expected.indices)
    torch.testing.assert_close(hits.scores, expected.values)


def test_local_folder_never_touches_the_network(
    saved: tuple[Retriever, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used for a local folder")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    Retriever.from_pretrained(saved[1])


def test_missing_weights_file_is_named(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"has no file 'model\.safetensors'.*save_pretrained"
    ):
        Retriever.from_pretrained(folder)


def test_truncated_weights_give_a_clear_error(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated or corrupt"):
        Retriever.from_pretrained(folder)


def test_future_format_version_is_refused(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = HUB_FORMAT_VERSION + 1
    _hand_edit(folder, cfg)
    with pytest.raises(
        ValueError, match=rf"format_version {HUB_FORMAT_VERSION + 1}.*upgrade textreid"
    ):
        Retriever.from_pretrained(folder)


def test_wrong_architecture_lists_keys(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["vision"]["layers"] = 3
    _hand_edit(folder, cfg)
    with pytest.raises(ValueError, match=r"missing.*visual\.transformer\.resblocks\.2"):
        Retriever.from_pretrained(folder)


def test_unknown_architecture_name(saved: tuple[Retriever, Path]) -> None:
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architecture"] = "something_else"
    _hand_edit(folder, cfg)
    with pytest.raises(ValueError, match="architecture 'something_else'"):
        Retriever.from_pretrained(folder)


def test_hub_first_load_downloads_then_cache_serves(
    saved: tuple[Retriever, Path], tmp_path: Path
) -> None:
    r, folder = saved
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        hub.add_repo("org/tiny", _files(folder))
        loaded = Retriever.from_pretrained("org/tiny", endpoint=hub.endpoint, cache_dir=cache)
        first = [(q.method, q.path.rsplit("/", 1)[-1]) for q in hub.requests]
        # The first request of a download asks once, without retries, whether the hub
        # answers at all.
        assert first == [
            ("HEAD", "config.json"),
            ("HEAD", "config.json"),
            ("GET", "config.json"),
            ("HEAD", "textreid_manifest.json"),
            ("GET", "textreid_manifest.json"),
            ("HEAD", "model.safetensors"),
            ("GET", "model.safetensors"),
        ]
        hub.clear_requests()
        Retriever.from_pretrained("hf-hub:org/tiny", endpoint=hub.endpoint, cache_dir=cache)
        assert [q.method for q in hub.requests] == ["HEAD", "HEAD", "HEAD"]
        hub.clear_requests()
        offline = Retriever.from_pretrained(
            "org/tiny", endpoint=hub.endpoint, cache_dir=cache, local_files_only=True
        )
        assert hub.requests == []
    assert torch.equal(loaded.encode_text(["x"]), r.encode_text(["x"]))
    assert torch.equal(offline.encode_text(["x"]), r.encode_text(["x"]))


def test_revision_pinning(tmp_path: Path) -> None:
    a, b = _retriever(0), _retriever(1)
    fa = _files(a.save_pretrained(tmp_path / "a"))
    fb = _files(b.save_pretrained(tmp_path / "b"))
    with FakeHub() as hub:
        first = hub.add_repo("org/m", fa)
        hub.add_repo("org/m", fb)
        kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path / "cache"}
        pinned = Retriever.from_pretrained("org/m", revision=first, **kw)
        latest = Retriever.from_pretrained("org/m", **kw)
    assert torch.equal(pinned.encode_text(["x"]), a.encode_text(["x"]))
    assert torch.equal(latest.encode_text(["x"]), b.encode_text(["x"]))


def test_hub_errors_say_what_to_do(saved: tuple[Retriever, Path], tmp_path: Path) -> None:
    _, folder = saved
    files = _files(folder)
    files.pop("model.safetensors")
    with FakeHub() as hub:
        hub.add_repo("org/nowts", files)
        kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path / "c"}
        with pytest.raises(
            FileNotFoundError, match=r"repository 'org/absent' was not found.*hf auth login"
        ):
            Retriever.from_pretrained("org/absent", **kw)
        with pytest.raises(FileNotFoundError, match=r"has no file 'model.safetensors' at revision"):
            Retriever.from_pretrained("org/nowts", **kw)
        with pytest.raises(FileNotFoundError, match="has no revision 'v9'"):
            Retriever.from_pretrained("org/nowts", revision="v9", **kw)
        with pytest.raises(
            HubConnectionError, match=r"not in the Hub cache.*download it once without"
        ):
            Retriever.from_pretrained("org/other", local_files_only=True, **kw)
        assert all("org/other" not in q.path for q in hub.requests)


def test_push_to_hub_records_and_round_trips(saved: tuple[Retriever, Path], tmp_path: Path) -> None:
    r, _ = saved
    with FakeHub() as hub:
        api = hub.api()
        r.push_to_hub("me/pushed", private=True, api=api)
        assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
        assert api.calls[0][1] == {"repo_id": "me/pushed", "private": True}
        assert api.calls[1][1]["files"] == [
            "README.md",
            "config.json",
            "model.safetensors",
            "textreid_manifest.json",
        ]
        back = Retriever.from_pretrained(
            "me/pushed", endpoint=hub.endpoint, cache_dir=tmp_path / "cache"
        )
    assert torch.equal(back.encode_text(["y"]), r.encode_text(["y"]))


def test_bad_names_and_inputs(saved: tuple[Retriever, Path]) -> None:
    r, _ = saved
    with pytest.raises(FileNotFoundError, match=r"no such folder '\./no/such/folder'"):
        Retriever.from_pretrained("./no/such/folder")
    with pytest.raises(ValueError, match="repo_id must look like 'org/name'"):
        r.push_to_hub("not a repo")
    with pytest.raises(ValueError, match="texts is empty"):
        r.encode_text([])
    with pytest.raises(TypeError, match=r"images\[0\] must be a path, a PIL image or a tensor"):
        r.encode_images([3.0])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match=r"image file .*missing.png does not exist"):
        r.encode_images(["missing.png"])
    with pytest.raises(ValueError, match=r"preprocessed float tensors \(3, 64, 32\)"):
        r.encode_images([torch.zeros(3, 10, 10)])


def test_uint8_tensor_images_are_preprocessed_like_pil(
    saved: tuple[Retriever, Path], tmp_path: Path
) -> None:
    r, _ = saved
    (path,) = _images(1, tmp_path)
    arr = torch.from_numpy(__import__("numpy").array(Image.open(path))).permute(2, 0, 1)
    torch.testing.assert_close(r.encode_images([arr]), r.encode_images([path]))


def test_search_a_raw_tensor_gallery_by_cosine(saved: tuple[Retriever, Path]) -> None:
    r, _ = saved
    g = torch.randn(6, 64, generator=torch.Generator().manual_seed(4))
    scales = torch.tensor([1.0, 50.0, 0.01, 3.0, 7.0, 0.5])[:, None]
    plain = r.search("a person", g, k=6)
    scaled = r.search("a person", g * scales, k=6)  # norms must not change the ranking
    assert torch.equal(plain.indices, scaled.indices)
    torch.testing.assert_close(plain.scores, scaled.scores)
    assert float(plain.scores.abs().max()) <= 1.0 + 1e-6
