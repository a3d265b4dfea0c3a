"""Retriever.index_images(out=...) and index_folder: sharded, resumable image indexing."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from textreid import Retriever
from textreid._progress import Progress
from textreid.indexing import index_folder
from textreid.models import create_model
from textreid.retrieval import GalleryIndex
from textreid.retrieval.index import SHARDED_MANIFEST, ShardedIndexWriter

SIZE = (64, 32)


def _retriever() -> Retriever:
    torch.manual_seed(0)
    return Retriever(create_model("tiny", image_size=SIZE))


def _images(folder: Path, n: int) -> list[Path]:
    g = torch.Generator().manual_seed(1)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        arr = torch.randint(0, 256, (40, 20, 3), generator=g, dtype=torch.uint8).numpy()
        p = folder / f"img_{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_sharded_index_equals_the_in_memory_one(tmp_path: Path) -> None:
    r = _retriever()
    images = _images(tmp_path / "imgs", 7)
    ids = list(range(10, 17))
    out = r.index_images(images, ids=ids, out=tmp_path / "idx", shard_size=3, batch_size=2)
    assert out == tmp_path / "idx"
    assert len(list(out.glob("shard-*-of-00003.safetensors"))) == 3
    got = GalleryIndex.load(out)
    want = r.index_images(images, ids=ids, batch_size=2)
    assert got.paths == want.paths == [str(p) for p in images]
    assert got.ids is not None
    assert got.ids.tolist() == ids
    assert got.model_fingerprint == r.model_fingerprint
    for key, t in want.feature_map.items():
        torch.testing.assert_close(got.feature_map[key], t, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"Retriever\.index_images: out= indexes image files"):
        r.index_images([torch.rand(3, *SIZE)], out=tmp_path / "t")
    with pytest.raises(ValueError, match="ids has shape \\(2,\\) but there are 7 images"):
        r.index_images(images, ids=[1, 2], out=tmp_path / "t")


def test_a_crash_loses_one_shard_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _retriever()
    images = _images(tmp_path / "imgs", 7)
    encoded: list[int] = []
    real_encode = r.retrieval_model.encode_image

    def counting(x: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded.append(x.shape[0])
        return real_encode(x)

    monkeypatch.setattr(r.retrieval_model, "encode_image", counting)
    real_write = ShardedIndexWriter.write_shard

    def crash_on_shard_1(self: ShardedIndexWriter, number: int, *a: object) -> Path:
        if number == 1:
            raise KeyboardInterrupt
        return real_write(self, number, *a)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(ShardedIndexWriter, "write_shard", crash_on_shard_1)
        with pytest.raises(KeyboardInterrupt):
            r.index_images(images, out=tmp_path / "idx", shard_size=3)
    assert sum(encoded) == 6  # shards 0 and 1 encoded, only shard 0 written
    assert not (tmp_path / "idx" / SHARDED_MANIFEST).exists()
    encoded.clear()
    out = r.index_images(images, out=tmp_path / "idx", shard_size=3)
    assert sum(encoded) == 4  # shards 1 and 2 only
    assert GalleryIndex.load(out).paths == [str(p) for p in images]
    encoded.clear()
    r.index_images(images, out=tmp_path / "idx", shard_size=3)  # complete: nothing to do
    assert encoded == []
    # Other images in the same folder: refused unless told to start over.
    with pytest.raises(ValueError, match="another plan \\(differing: key, rows\\)"):
        r.index_images(images[:5], out=tmp_path / "idx", shard_size=3)
    r.index_images(images[:5], out=tmp_path / "idx", shard_size=3, resume=False)
    assert len(GalleryIndex.load(out)) == 5


def test_index_folder_reads_a_folder_or_a_list_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _retriever().save_pretrained(tmp_path / "model")
    images = _images(tmp_path / "data" / "imgs", 5)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    out = index_folder(str(model), tmp_path / "data", tmp_path / "a", shard_size=2, device="cpu")
    assert GalleryIndex.load(out).paths == [str(p) for p in images]
    # Not a terminal: plain lines, the last one at the end.
    assert "index images: 5/5 images (100.0%)" in capsys.readouterr().err
    listing = tmp_path / "data" / "list.txt"
    listing.write_text("imgs/img_03.png\n\n" + str(images[1]) + "\n")
    out = index_folder(str(model), listing, tmp_path / "b", progress=False, device="cpu")
    assert GalleryIndex.load(out).paths == [str(images[3]), str(images[1])]
    assert capsys.readouterr().err == ""
    with pytest.raises(FileNotFoundError, match=r"index_folder: .*missing does not exist"):
        index_folder(str(model), tmp_path / "missing", tmp_path / "c")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"index_folder: .*empty\.txt lists no image paths"):
        index_folder(str(model), tmp_path / "empty.txt", tmp_path / "c")
    with pytest.raises(ValueError, match=r"img_00\.png is not a UTF-8 text file of image paths"):
        index_folder(str(model), images[0], tmp_path / "c")


def test_progress_writes_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(10, "index images", unit="images", initial=4, every=0.0, stream=stream) as p:
        p.update(3)
        p.update(3)
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "index images: 7/10 images",
        "index images: 10/10 images",
        "index images: 10/10 images",
    ]
    assert "min left" in lines[0]
    assert "min left" not in lines[-1]
    resumed = io.StringIO()
    Progress(4, "x", initial=4, stream=resumed).close()
    assert resumed.getvalue() == "x: 4/4 it (100.0%), 4 done by an earlier run\n"
    quiet = io.StringIO()
    with Progress(5, "x", enabled=False, every=0.0, stream=quiet) as p:
        p.update(5)
    assert quiet.getvalue() == ""


def test_progress_draws_a_bar_in_a_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Jupyter kernel's stderr is a pipe, yet its widgets redraw: a bar, not log lines.
    kernel = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    with Progress(3, "index images", stream=io.StringIO(), every=0.0) as p:
        assert p._bar is not None
    monkeypatch.delitem(sys.modules, "IPython")
    with Progress(3, "index images", stream=io.StringIO(), every=0.0) as p:
        assert p._bar is None
