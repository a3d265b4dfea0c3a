"""SynthPEDES: determinism, CUHK-PEDES format, splits, caption/attribute consistency, families."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from textreid.data import SynthPEDESConfig, build_dataset, read_cuhk_pedes, write_synthpedes

SMALL: dict[str, Any] = {"num_identities": 24, "images_per_identity": 3, "image_size": (32, 16)}

# caption word -> (attribute, allowed values); checked against the identity's attributes
WORDS: dict[str, tuple[str, set[str]]] = {
    "man": ("gender", {"male"}),
    "guy": ("gender", {"male"}),
    "gentleman": ("gender", {"male"}),
    "he": ("gender", {"male"}),
    "woman": ("gender", {"female"}),
    "lady": ("gender", {"female"}),
    "girl": ("gender", {"female"}),
    "she": ("gender", {"female"}),
    "skirt": ("lower_type", {"skirt"}),
    "shorts": ("lower_type", {"shorts"}),
    "trousers": ("lower_type", {"trousers"}),
    "pants": ("lower_type", {"trousers"}),
    "t-shirt": ("upper_type", {"t-shirt"}),
    "tee": ("upper_type", {"t-shirt"}),
    "jacket": ("upper_type", {"jacket"}),
    "coat": ("upper_type", {"coat"}),
    "overcoat": ("upper_type", {"coat"}),
    "striped": ("upper_pattern", {"striped"}),
    "stripes": ("upper_pattern", {"striped"}),
    "plaid": ("upper_pattern", {"checked"}),
    "checked": ("upper_pattern", {"checked"}),
    "slim": ("build", {"thin"}),
    "stocky": ("build", {"heavy"}),
}
COLOURS = {
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black",
    "gray", "grey", "brown", "khaki", "beige", "blonde", "blond",
}  # fmt: skip
CANON = {"grey": "gray", "beige": "khaki", "blond": "blonde"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("synth")
    folder = write_synthpedes(root, num_identities=60, images_per_identity=3, image_size=(32, 16))
    meta = json.loads((folder / "synthpedes.json").read_text())
    return root, meta


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = _files(write_synthpedes(tmp_path / "a", **SMALL))
    b = _files(write_synthpedes(tmp_path / "b", **SMALL))
    assert a == b
    assert len(a) == 24 * 3 + 2
    c = _files(write_synthpedes(tmp_path / "c", seed=1, **SMALL))
    assert c["reid_raw.json"] != a["reid_raw.json"]
    assert sum(c[k] != a[k] for k in a if k.endswith(".png")) > 60


def test_cuhk_format_and_reader(synth: tuple[Path, dict[str, Any]]) -> None:
    root, _meta = synth
    entries = json.loads((root / "CUHK-PEDES" / "reid_raw.json").read_text())
    assert len(entries) == 180
    for e in entries:
        assert list(e) == ["split", "captions", "file_path", "processed_tokens", "id"]
        assert len(e["captions"]) == 2
        assert all(isinstance(c, str) and c for c in e["captions"])
        assert e["processed_tokens"][0] == re.findall(
            r"[a-z]+(?:-[a-z]+)*", e["captions"][0].lower()
        )
        with Image.open(root / "CUHK-PEDES" / "imgs" / e["file_path"]) as img:
            assert img.size == (16, 32)
            assert img.mode == "RGB"
    ds = build_dataset("synthpedes", root, relabel="irra", check_images=True)
    assert ds.train == read_cuhk_pedes(root, relabel="irra").train
    n_train = ds.num_classes
    assert len(ds.train) == n_train * 3 * 2
    assert ds.num_train_images == n_train * 3
    assert ds.num_classes + ds.val.num_ids + ds.test.num_ids == 60
    assert ds.test.num_ids >= 3
    assert ds.val.num_ids >= 3
    assert ds.test.num_captions == 2 * ds.test.num_images


def test_splits_by_identity_and_family(synth: tuple[Path, dict[str, Any]]) -> None:
    _, meta = synth
    split_of_family: dict[int, set[str]] = {}
    for r in meta["identities"]:
        split_of_family.setdefault(r["family"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_family.values())
    order = [r["split"] for r in meta["identities"]]
    assert order == sorted(order, key=["train", "val", "test"].index)  # train ids are 1..N


def test_identities_distinct_with_near_neighbours(synth: tuple[Path, dict[str, Any]]) -> None:
    _, meta = synth
    idents = [r["attributes"] for r in meta["identities"]]
    keys = {tuple(sorted(a.items())) for a in idents}
    assert len(keys) == len(idents) == 60
    by_family: dict[int, list[dict[str, str]]] = {}
    for r in meta["identities"]:
        by_family.setdefault(r["family"], []).append(r["attributes"])
    for members in by_family.values():
        base = members[0]
        for other in members[1:]:
            assert sum(base[k] != other[k] for k in base) == 1
    assert sum(len(m) - 1 for m in by_family.values()) >= 30


def test_captions_match_attributes_and_viewpoint(synth: tuple[Path, dict[str, Any]]) -> None:
    root, meta = synth
    entries = {
        e["file_path"]: e for e in json.loads((root / "CUHK-PEDES" / "reid_raw.json").read_text())
    }
    views = set()
    for r in meta["identities"]:
        attrs = r["attributes"]
        colours = {v for k, v in attrs.items() if v not in ("none", "yes")}
        assert r["images"][0]["viewpoint"] == "front"
        for image in r["images"]:
            view = image["viewpoint"]
            views.add(view)
            for caption in entries[image["file_path"]]["captions"]:
                words = re.findall(r"[a-z]+(?:-[a-z]+)*", caption.lower())
                for w in words:
                    if w in WORDS:
                        attr, allowed = WORDS[w]
                        assert attrs[attr] in allowed, (caption, attrs)
                    if w in COLOURS:
                        assert CANON.get(w, w) in colours, (caption, attrs)
                for length in re.findall(r"(short|long|shoulder-length) (?:\w+ )?hair", caption):
                    assert attrs["hair_length"] == ("short" if length == "short" else "long")
                if {"glasses", "spectacles"} & set(words):
                    assert attrs["glasses"] == "yes", caption
                    assert view == "front", (caption, view)
                if {"backpack", "rucksack"} & set(words):
                    assert attrs["backpack"] != "none", caption
                    assert view != "front", (caption, view)
                for acc, names in (
                    ("umbrella", {"umbrella"}),
                    ("hat", {"hat", "cap"}),
                    ("bag", {"bag", "handbag"}),
                ):
                    if names & set(words):
                        assert attrs[acc] != "none", (caption, attrs)
    assert views == {"front", "back", "side"}


def test_overwrite_and_errors(tmp_path: Path) -> None:
    small = {**SMALL, "num_identities": 9}
    write_synthpedes(tmp_path, **small)
    with pytest.raises(FileExistsError, match=r"reid_raw.json already exists; pass overwrite=True"):
        write_synthpedes(tmp_path, **small)
    folder = write_synthpedes(tmp_path, overwrite=True, **{**small, "images_per_identity": 1})
    assert len(list((folder / "imgs" / "synth").iterdir())) == 9
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['num_ids'\]"):
        write_synthpedes(tmp_path, num_ids=3)
    with pytest.raises(ValueError, match="too few for split_fractions"):
        write_synthpedes(tmp_path / "x", num_identities=4)
    cfg = SynthPEDESConfig(
        num_identities=6, family_size=1, image_size=(32, 16), split_fractions=(1, 0, 0)
    )
    ds = build_dataset("synthpedes", write_synthpedes(tmp_path / "y", cfg).parent)
    assert ds.num_classes == 6
    assert ds.test.num_images == 0


@pytest.mark.parametrize(
    ("kwargs", "err", "pattern"),
    [
        ({"num_identities": 0}, ValueError, "num_identities must be > 0"),
        ({"images_per_identity": 1.5}, TypeError, "images_per_identity must be an int"),
        ({"image_size": (16, 16)}, ValueError, r"image_size must be \(H, W\) >= \(32, 16\)"),
        ({"split_fractions": (0.5, -0.1, 0.6)}, ValueError, "3 non-negative"),
        (
            {"split_fractions": (0.0, 0.5, 0.5)},
            ValueError,
            r"split_fractions\[0\] \(train\) must be > 0",
        ),
        ({"blur_prob": 1.5}, ValueError, r"blur_prob must be in \[0, 1\]"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], err: type[Exception], pattern: str) -> None:
    with pytest.raises(err, match=pattern):
        SynthPEDESConfig(**kwargs)
