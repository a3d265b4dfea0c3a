"""Benchmark readers: IRRA-equivalent lists, root layouts, malformed files, registry."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from _pedes_fixtures import cuhk_entry, write_benchmark

from textreid.data import (
    PedesDataset,
    PedesSplit,
    TrainSample,
    build_dataset,
    list_datasets,
    read_cuhk_pedes,
    read_icfg_pedes,
    read_rstpreid,
    read_synthpedes,
    register_dataset,
)
from textreid.data import pedes as pedes_module


def _irra_lists(
    entries: list[dict[str, Any]], img_dir: str, field: str, offset: int
) -> tuple[list[tuple[int, int, str, str]], dict[str, dict[str, list[Any]]]]:
    """IRRA's ``_split_anno`` + ``_process_anno`` rewritten as a plain loop."""
    train: list[tuple[int, int, str, str]] = []
    image_id = 0
    evals: dict[str, dict[str, list[Any]]] = {
        s: {"image_pids": [], "img_paths": [], "caption_pids": [], "captions": []}
        for s in ("test", "val")
    }
    for e in entries:
        path = os.path.join(img_dir, e[field])
        if e["split"] == "train":
            for c in e["captions"]:
                train.append((e["id"] - offset, image_id, path, c))
            image_id += 1
            continue
        d = evals["test" if e["split"] == "test" else "val"]
        d["image_pids"].append(e["id"])
        d["img_paths"].append(path)
        for c in e["captions"]:
            d["caption_pids"].append(e["id"])
            d["captions"].append(c)
    return train, evals


def _as_tuples(ds: PedesDataset) -> list[tuple[int, int, str, str]]:
    return [(s.pid, s.image_id, s.img_path, s.caption) for s in ds.train]


def _as_dict(split: PedesSplit) -> dict[str, list[Any]]:
    return {
        "image_pids": split.image_pids,
        "img_paths": split.img_paths,
        "caption_pids": split.caption_pids,
        "captions": split.captions,
    }


def test_cuhk_hand_checked(tmp_path: Path, cuhk_entries: list[dict[str, Any]]) -> None:
    folder = write_benchmark(tmp_path, "cuhk-pedes", cuhk_entries)
    ds = read_cuhk_pedes(tmp_path)
    img = str(folder / "imgs")
    assert ds.train[:5] == [
        TrainSample(1, 0, f"{img}/CUHK01/0002001.png", "b one"),
        TrainSample(1, 0, f"{img}/CUHK01/0002001.png", "b two"),
        TrainSample(0, 1, f"{img}/CUHK01/0001001.png", "a one"),
        TrainSample(0, 1, f"{img}/CUHK01/0001001.png", "a two"),
        TrainSample(0, 1, f"{img}/CUHK01/0001001.png", "a three"),
    ]
    assert [(s.pid, s.image_id) for s in ds.train[5:]] == [(1, 2), (1, 2), (2, 3), (2, 3)]
    assert ds.num_classes == 3
    assert ds.num_train_images == 4
    assert ds.pid_map == {1: 0, 2: 1, 3: 2}
    assert ds.test.image_pids == [7, 7, 9]
    assert ds.test.caption_pids == [7, 7, 7, 9]
    assert ds.test.captions == ["t seven a", "t seven b", "t seven c", "t nine"]
    assert (ds.test.num_ids, ds.test.num_images, ds.test.num_captions) == (2, 3, 4)
    assert ds.val.img_paths == [f"{img}/cam_a/005_0.bmp"]
    assert ds.name == "cuhk-pedes"
    assert ds.annotation_file == str(folder / "reid_raw.json")


def test_summary_table(tmp_path: Path, cuhk_entries: list[dict[str, Any]]) -> None:
    write_benchmark(tmp_path, "cuhk-pedes", cuhk_entries)
    lines = read_cuhk_pedes(tmp_path).summary().splitlines()
    assert [ln.split("|")[0].strip() for ln in lines[::2]] == ["cuhk-pedes", "train", "val"]
    assert set(lines[1]) == {"-", "+"}
    assert lines[3].startswith("test ")
    assert [int(x) for x in lines[2].split("|")[1:]] == [3, 4, 9]
    assert [int(x) for x in lines[3].split("|")[1:]] == [2, 3, 4]
    assert [int(x) for x in lines[4].split("|")[1:]] == [1, 1, 1]


@pytest.mark.parametrize(
    ("name", "offset", "reader"),
    [
        ("cuhk-pedes", 1, read_cuhk_pedes),
        ("icfg-pedes", 0, read_icfg_pedes),
        ("rstpreid", 0, read_rstpreid),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_irra_lists(tmp_path: Path, name: str, offset: int, reader: Any, seed: int) -> None:
    rng = random.Random(seed)
    field = "img_path" if name == "rstpreid" else "file_path"
    splits = ["train", "test"] if name == "icfg-pedes" else ["train", "val", "test"]
    n_train = 7
    entries = []
    for i in range(40):
        split = rng.choice(splits)
        pid = rng.randrange(n_train) + offset if split == "train" else rng.randrange(50, 60)
        caps = [f"cap {i} {k}" for k in range(rng.randint(1, 3))]
        entries.append({"split": split, "captions": caps, field: f"d/{i}.jpg", "id": pid})
    # every train id present so IRRA's 0..N-1 check holds
    entries += [
        {"split": "train", "captions": ["x"], field: f"e/{p}.jpg", "id": p + offset}
        for p in range(n_train)
    ]
    folder = write_benchmark(tmp_path, name, entries, images=False)
    train, evals = _irra_lists(entries, str(folder / "imgs"), field, offset)
    for relabel in ("irra", "dense"):
        ds = reader(tmp_path, relabel=relabel)
        assert _as_tuples(ds) == train
        assert _as_dict(ds.test) == evals["test"]
        assert _as_dict(ds.val) == evals["val"]
        assert ds.num_classes == n_train


def test_root_may_be_the_benchmark_folder(
    tmp_path: Path, cuhk_entries: list[dict[str, Any]]
) -> None:
    folder = write_benchmark(tmp_path, "cuhk-pedes", cuhk_entries)
    assert read_cuhk_pedes(folder).train == read_cuhk_pedes(tmp_path).train
    entries = [{"split": "train", "captions": ["a"], "img_path": "x.jpg", "id": 0}]
    rstp = write_benchmark(tmp_path, "rstpreid", entries)
    assert read_rstpreid(rstp).train == read_rstpreid(tmp_path).train


def test_icfg_underscore_name_accepted_and_no_val(tmp_path: Path) -> None:
    entries = [
        {"split": "train", "captions": ["a"], "file_path": "train/0/a.jpg", "id": 0},
        {"split": "test", "captions": ["b"], "file_path": "test/9/b.jpg", "id": 9},
    ]
    write_benchmark(tmp_path, "icfg-pedes", entries, file_name="ICFG_PEDES.json")
    ds = read_icfg_pedes(tmp_path)
    assert ds.annotation_file.endswith("ICFG_PEDES.json")
    assert ds.val.num_images == 0
    assert ds.test.image_pids == [9]


def test_rstpreid_needs_img_path(tmp_path: Path) -> None:
    entries = [{"split": "train", "captions": ["a"], "file_path": "a.jpg", "id": 0}]
    write_benchmark(tmp_path, "rstpreid", entries, images=False)
    with pytest.raises(ValueError, match=r"data_captions.json has no field 'img_path'"):
        read_rstpreid(tmp_path)


def test_relabel_modes_on_gapped_ids(tmp_path: Path) -> None:
    entries = [cuhk_entry("train", p, f"{p}.png", ["c"]) for p in (10, 3, 7, 3)]
    write_benchmark(tmp_path, "cuhk-pedes", entries, images=False)
    ds = read_cuhk_pedes(tmp_path)
    assert [s.pid for s in ds.train] == [2, 0, 1, 0]
    assert ds.num_classes == 3
    with pytest.raises(ValueError, match=r"relabel='irra' needs train ids 1\.\.3.*span 3\.\.10"):
        read_cuhk_pedes(tmp_path, relabel="irra")
    with pytest.raises(ValueError, match="relabel must be one of"):
        read_cuhk_pedes(tmp_path, relabel="sorted")  # type: ignore[arg-type]


def _write_cuhk_json(tmp_path: Path, payload: Any) -> None:
    folder = tmp_path / "CUHK-PEDES"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (folder / "reid_raw.json").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        ("{not json", r"reid_raw.json is not valid JSON"),
        ({"split": "train"}, r"must hold a JSON list of image entries, got a dict"),
        (["x"], r"entry 0 of .* must be a JSON object, got str"),
        ([{"split": "train", "captions": ["a"], "id": 1}], r"entry 0 .* no field 'file_path'"),
        (
            [{"split": "train", "captions": ["a"], "file_path": "a", "id": "1"}],
            r"field 'id' of entry 0 .* must be int, got str",
        ),
        (
            [{"split": "train", "captions": ["a"], "file_path": "a", "id": True}],
            r"field 'id' of entry 0 .* must be int, got bool",
        ),
        (
            [{"split": "train", "captions": "a", "file_path": "a", "id": 1}],
            r"field 'captions' of entry 0 .* must be list, got str",
        ),
        (
            [{"split": "train", "captions": [], "file_path": "a.png", "id": 1}],
            r"entry 0 \(a.png\) .* has an empty 'captions' list",
        ),
        (
            [{"split": "train", "captions": ["a", 3], "file_path": "a", "id": 1}],
            r"captions\[1\] of entry 0 .* must be str, got int",
        ),
        (
            [{"split": "gallery", "captions": ["a"], "file_path": "a", "id": 1}],
            r"split 'gallery'; expected one of .*unknown_split='val'",
        ),
    ],
)
def test_malformed_annotations(tmp_path: Path, payload: Any, pattern: str) -> None:
    _write_cuhk_json(tmp_path, payload)
    with pytest.raises(ValueError, match=pattern):
        read_cuhk_pedes(tmp_path)


def test_unknown_split_to_val_like_irra(tmp_path: Path) -> None:
    entries = [
        cuhk_entry("train", 1, "a.png", ["a"]),
        cuhk_entry("gallery", 4, "g.png", ["g"]),
    ]
    write_benchmark(tmp_path, "cuhk-pedes", entries, images=False)
    ds = read_cuhk_pedes(tmp_path, unknown_split="val")
    assert ds.val.image_pids == [4]
    assert ds.val.captions == ["g"]


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"CUHK-PEDES/reid_raw.json does not exist; request"
    ):
        read_cuhk_pedes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"ICFG-PEDES.json does not exist \(nor ICFG_PEDES"):
        read_icfg_pedes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_captions.json does not exist"):
        read_rstpreid(tmp_path)


def test_caption_all_hint(tmp_path: Path) -> None:
    folder = tmp_path / "CUHK-PEDES"
    folder.mkdir()
    (folder / "caption_all.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match=r"found .*caption_all.json.*read reid_raw.json"):
        read_cuhk_pedes(tmp_path)
    # pointing at the folder itself gives the same hint
    with pytest.raises(FileNotFoundError, match=r"caption_all\.json"):
        read_cuhk_pedes(folder)


def test_missing_image_folder_and_images(tmp_path: Path) -> None:
    entries = [cuhk_entry("train", 1, "sub/a.png", ["a"])]
    folder = write_benchmark(tmp_path, "cuhk-pedes", entries, images=False)
    assert read_cuhk_pedes(tmp_path).num_classes == 1  # images are not checked by default
    with pytest.raises(
        FileNotFoundError, match=r"image .*sub/a.png \(entry 0, file_path='sub/a.png'\)"
    ):
        read_cuhk_pedes(tmp_path, check_images=True)
    (folder / "imgs").rmdir()
    with pytest.raises(FileNotFoundError, match=r"image folder .*imgs does not exist"):
        read_cuhk_pedes(tmp_path)


def test_registry(tmp_path: Path, cuhk_entries: list[dict[str, Any]]) -> None:
    assert {"cuhk-pedes", "icfg-pedes", "rstpreid", "synthpedes"} <= set(list_datasets())
    with pytest.raises(ValueError, match=r"unknown dataset 'market'; registered: cuhk-pedes, "):
        build_dataset("market", tmp_path)
    write_benchmark(tmp_path, "cuhk-pedes", cuhk_entries)
    assert build_dataset("CUHK-PEDES", tmp_path).num_classes == 3
    assert build_dataset("synthpedes", tmp_path).name == "synthpedes"

    def reader(root: Any, **kwargs: Any) -> PedesDataset:
        return read_cuhk_pedes(root, name="mine", **kwargs)

    try:
        register_dataset("Mine", reader)
        assert "mine" in list_datasets()
        assert build_dataset("mine", tmp_path, relabel="irra").name == "mine"
        with pytest.raises(ValueError, match="'mine' is already registered; pass overwrite=True"):
            register_dataset("mine", reader)
        register_dataset("mine", reader, overwrite=True)
    finally:
        pedes_module._DATASETS.unregister("mine", fn="test")
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        register_dataset(" ", reader)
    with pytest.raises(TypeError, match="reader must be callable, got int"):
        register_dataset("x", 3)  # type: ignore[arg-type]


def test_missing_synthpedes_says_how_to_generate_it(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"read_synthpedes: .*generate it first with `textreid synth"
    ):
        read_synthpedes(tmp_path / "nothing")
