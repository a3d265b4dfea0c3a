"""Readers for the text-to-image person retrieval benchmarks and the dataset registry.

Three public benchmarks are read in their published annotation formats and official splits,
the way IRRA (Jiang & Ye, CVPR 2023, arXiv 2303.12501) builds its lists:

============  =========================================  ===============  ==================
name          annotation file (under ``root``)           image field      images under
============  =========================================  ===============  ==================
cuhk-pedes    ``CUHK-PEDES/reid_raw.json``               ``file_path``    ``CUHK-PEDES/imgs``
icfg-pedes    ``ICFG-PEDES/ICFG-PEDES.json``             ``file_path``    ``ICFG-PEDES/imgs``
rstpreid      ``RSTPReid/data_captions.json``            ``img_path``     ``RSTPReid/imgs``
synthpedes    ``CUHK-PEDES/reid_raw.json`` (generated)   ``file_path``    ``CUHK-PEDES/imgs``
============  =========================================  ===============  ==================

Each annotation file is a JSON list of entries ``{"split": str, "captions": [str, ...],
<image field>: str, "id": int}``, one entry per image. ``root`` may be the folder that holds
the benchmark folder (IRRA's ``--root_dir``) or the benchmark folder itself.

How the lists are built (IRRA's ``_process_anno``):

* **train**: entries in file order; ``image_id`` is the running index of the entry; one
  :class:`TrainSample` per caption; pids relabelled to ``0..N-1`` (see ``relabel``).
* **test / val**: the gallery is one entry per image (``image_pids``, ``img_paths``), the
  queries are every caption (``caption_pids``, ``captions``); pids keep their file values
  (only equality matters for retrieval).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from textreid._checks import check_choice
from textreid._registry import Registry

__all__ = [
    "PedesDataset",
    "PedesSplit",
    "TrainSample",
    "build_dataset",
    "list_datasets",
    "read_cuhk_pedes",
    "read_icfg_pedes",
    "read_pedes_json",
    "read_rstpreid",
    "read_synthpedes",
    "register_dataset",
]

Relabel = Literal["dense", "irra"]
UnknownSplit = Literal["error", "val"]
_RELABELS = ("dense", "irra")
_UNKNOWN_SPLITS = ("error", "val")
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainSample:
    """One training pair: a caption and the image it describes.

    Attributes:
        pid: relabelled person id in ``0..num_classes-1``.
        image_id: running index of the image entry within the train split (0-based);
            captions of the same image share it.
        img_path: absolute or root-relative path of the image file.
        caption: the raw caption text.
    """

    pid: int
    image_id: int
    img_path: str
    caption: str


@dataclass(frozen=True)
class PedesSplit:
    """An evaluation split: a gallery of images and a set of text queries.

    Attributes:
        image_pids: person id of each gallery image, length Ng (file values, not relabelled).
        img_paths: path of each gallery image, length Ng.
        caption_pids: person id of each query caption, length Nq.
        captions: the query captions, length Nq.
    """

    image_pids: list[int]
    img_paths: list[str]
    caption_pids: list[int]
    captions: list[str]

    @property
    def num_ids(self) -> int:
        """Number of distinct person ids among the gallery images."""
        return len(set(self.image_pids))

    @property
    def num_images(self) -> int:
        """Number of gallery images Ng."""
        return len(self.img_paths)

    @property
    def num_captions(self) -> int:
        """Number of query captions Nq."""
        return len(self.captions)


@dataclass(frozen=True)
class PedesDataset:
    """A benchmark read into train samples and two evaluation splits.

    Attributes:
        name: registry name of the benchmark (``"cuhk-pedes"``, ...).
        annotation_file: the JSON file that was read.
        train: one :class:`TrainSample` per training caption, in file order.
        val: validation split (empty for ICFG-PEDES, which has none).
        test: test split.
        num_classes: number of training identities (size of an ID classifier).
        num_train_images: number of training image entries.
        pid_map: original file id -> training label, for the training identities.
    """

    name: str
    annotation_file: str
    train: list[TrainSample]
    val: PedesSplit
    test: PedesSplit
    num_classes: int
    num_train_images: int
    pid_map: dict[int, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A table of ids / images / captions per subset, like IRRA's ``show_dataset_info``.

        Returns:
            A multi-line string, e.g.::

                cuhk-pedes  | ids   | images | captions
                ------------+-------+--------+---------
                train       | 11003 |  34054 |    68126
                test        |  1000 |   3074 |     6156
                val         |  1000 |   3078 |     6158
        """
        rows = [
            (self.name, "ids", "images", "captions"),
            ("train", str(self.num_classes), str(self.num_train_images), str(len(self.train))),
        ]
        for label, split in (("test", self.test), ("val", self.val)):
            rows.append((label, str(split.num_ids), str(split.num_images), str(split.num_captions)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]

        def fmt(row: tuple[str, str, str, str]) -> str:
            first = row[0].ljust(widths[0])
            rest = [row[c].rjust(widths[c]) for c in range(1, 4)]
            return " | ".join([first, *rest])

        rule = "-+-".join("-" * w for w in widths)
        return "\n".join([fmt(rows[0]), rule, *(fmt(r) for r in rows[1:])])


def _split_from_entries(entries: list[tuple[int, str, list[str]]]) -> PedesSplit:
    image_pids: list[int] = []
    img_paths: list[str] = []
    caption_pids: list[int] = []
    captions: list[str] = []
    for pid, path, caps in entries:
        image_pids.append(pid)
        img_paths.append(path)
        caption_pids.extend([pid] * len(caps))
        captions.extend(caps)
    return PedesSplit(image_pids, img_paths, caption_pids, captions)


def _relabel_map(ids: list[int], relabel: Relabel, id_offset: int, where: str) -> dict[int, int]:
    unique = sorted(set(ids))
    if relabel == "dense":
        return {pid: label for label, pid in enumerate(unique)}
    shifted = {pid: pid - id_offset for pid in unique}
    if sorted(shifted.values()) != list(range(len(unique))):
        lo, hi = (unique[0], unique[-1]) if unique else (None, None)
        raise ValueError(
            f"{where}: relabel='irra' needs train ids {id_offset}..{id_offset + len(unique) - 1} "
            f"without gaps (id - {id_offset} = 0..N-1, IRRA's check), but the {len(unique)} "
            f"train ids span {lo}..{hi}; pass relabel='dense' to map them to 0..N-1 in "
            "sorted order"
        )
    return shifted


def _load_json_list(path: Path, where: str) -> list[Any]:
    try:
        with path.open("r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where}: {path} is not valid JSON ({err}); re-download or re-extract it"
        ) from err
    if not isinstance(data, list):
        raise ValueError(
            f"{where}: {path} must hold a JSON list of image entries, got a {type(data).__name__}"
        )
    return data


def _entry_field(
    entry: dict[str, Any], key: str, kind: type, index: int, path: Path, where: str
) -> Any:
    if key not in entry:
        raise ValueError(
            f"{where}: entry {index} of {path} has no field {key!r} (fields: "
            f"{sorted(entry)}); is this the right annotation file?"
        )
    value = entry[key]
    bad_bool = kind is int and isinstance(value, bool)
    if not isinstance(value, kind) or bad_bool:
        raise ValueError(
            f"{where}: field {key!r} of entry {index} in {path} must be "
            f"{kind.__name__}, got {type(value).__name__} {value!r:.60}"
        )
    return value


def read_pedes_json(
    annotation_file: str | os.PathLike[str],
    image_dir: str | os.PathLike[str],
    *,
    name: str,
    path_field: str = "file_path",
    id_offset: int = 0,
    relabel: Relabel = "dense",
    unknown_split: UnknownSplit = "error",
    check_images: bool = False,
) -> PedesDataset:
    """Read a benchmark annotation file in the CUHK-PEDES / ICFG-PEDES / RSTPReid format.

    Args:
        annotation_file: the JSON list of entries ``{"split", "captions", path_field, "id"}``.
        image_dir: folder the entries' image paths are relative to.
        name: dataset name used in the summary and in messages.
        path_field: entry field holding the image path (``"img_path"`` for RSTPReid).
        id_offset: value subtracted from train ids under ``relabel="irra"`` (1 for CUHK-PEDES,
            whose ids start at 1; 0 otherwise).
        relabel: ``"dense"`` (default) maps the sorted distinct train ids to ``0..N-1``;
            ``"irra"`` uses ``id - id_offset`` and, like IRRA, requires the result to be
            exactly ``0..N-1``. On the official files both give the same labels.
        unknown_split: a split value other than ``train``/``val``/``test`` raises
            (``"error"``, default) or goes to val (``"val"``, IRRA's behaviour).
        check_images: also verify that every image file exists (one ``stat`` per image).

    Returns:
        The :class:`PedesDataset`.

    Raises:
        FileNotFoundError: the annotation file, the image folder or (with ``check_images``)
            an image is missing.
        ValueError: the file is not a JSON list of well-formed entries (missing field, wrong
            type, empty captions list, unknown split), or ``relabel="irra"`` finds a gap.
    """
    where = f"read_pedes_json({name})"
    check_choice(relabel, "relabel", where, _RELABELS)
    check_choice(unknown_split, "unknown_split", where, _UNKNOWN_SPLITS)
    path = Path(annotation_file)
    img_root = Path(image_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: annotation file {path} does not exist")
    if not img_root.is_dir():
        raise FileNotFoundError(
            f"{where}: image folder {img_root} does not exist; the images of {path.name} "
            f"must be extracted there (entries' {path_field!r} values are relative to it)"
        )
    data = _load_json_list(path, where)
    buckets: dict[str, list[tuple[int, str, list[str]]]] = {s: [] for s in _SPLITS}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where}: entry {index} of {path} must be a JSON object, got "
                f"{type(entry).__name__}"
            )
        split = _entry_field(entry, "split", str, index, path, where)
        captions = _entry_field(entry, "captions", list, index, path, where)
        rel = _entry_field(entry, path_field, str, index, path, where)
        pid = _entry_field(entry, "id", int, index, path, where)
        if not captions:
            raise ValueError(
                f"{where}: entry {index} ({rel}) of {path} has an empty 'captions' list; "
                "every image needs at least one caption"
            )
        for c, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise ValueError(
                    f"{where}: captions[{c}] of entry {index} in {path} must be str, got "
                    f"{type(caption).__name__}"
                )
        if split not in buckets:
            if unknown_split == "error":
                raise ValueError(
                    f"{where}: entry {index} of {path} has split {split!r}; expected one of "
                    f"{_SPLITS} (pass unknown_split='val' to send it to val, as IRRA does)"
                )
            split = "val"
        img_path = str(img_root / rel)
        if check_images and not os.path.isfile(img_path):
            raise FileNotFoundError(
                f"{where}: image {img_path} (entry {index}, {path_field}={rel!r}) does not exist"
            )
        buckets[split].append((pid, img_path, list(captions)))

    train_entries = buckets["train"]
    pid_map = _relabel_map([e[0] for e in train_entries], relabel, id_offset, where)
    train = [
        TrainSample(pid_map[pid], image_id, img_path, caption)
        for image_id, (pid, img_path, caps) in enumerate(train_entries)
        for caption in caps
    ]
    return PedesDataset(
        name=name,
        annotation_file=str(path),
        train=train,
        val=_split_from_entries(buckets["val"]),
        test=_split_from_entries(buckets["test"]),
        num_classes=len(pid_map),
        num_train_images=len(train_entries),
        pid_map=pid_map,
    )


def _dataset_dir(root: str | os.PathLike[str], folder: str, files: Sequence[str]) -> Path:
    """``root/folder`` unless ``root`` itself already holds one of ``files``."""
    base = Path(root)
    if base.name == folder or any((base / f).is_file() for f in files):
        return base
    return base / folder


def read_cuhk_pedes(
    root: str | os.PathLike[str],
    *,
    relabel: Relabel = "dense",
    unknown_split: UnknownSplit = "error",
    check_images: bool = False,
    name: str = "cuhk-pedes",
) -> PedesDataset:
    """Read CUHK-PEDES (Li et al., CVPR 2017) from ``root/CUHK-PEDES/reid_raw.json``.

    Images are under ``CUHK-PEDES/imgs/<file_path>``; ids in the file start at 1, so under
    ``relabel="irra"`` the train label is ``id - 1``. ``root`` may also be the ``CUHK-PEDES``
    folder itself. Options are those of :func:`read_pedes_json`.

    Raises:
        FileNotFoundError: ``reid_raw.json`` is missing; the message explains the
            ``caption_all.json`` confusion when only that file is present.
    """
    folder = _dataset_dir(root, "CUHK-PEDES", ("reid_raw.json", "caption_all.json"))
    anno = folder / "reid_raw.json"
    if not anno.is_file():
        hint = (
            f"; found {folder / 'caption_all.json'}, which is the caption file shipped with "
            "the original download: IRRA and textreid read reid_raw.json, the version of the "
            "annotations with the official train/val/test 'split' field, obtained from the "
            "dataset authors with the download (same entries: split, captions, file_path, id)"
            if (folder / "caption_all.json").is_file()
            else "; request CUHK-PEDES from its authors (Li et al., CVPR 2017) and lay it out "
            "as <root>/CUHK-PEDES/reid_raw.json and <root>/CUHK-PEDES/imgs/"
        )
        if name == "synthpedes":
            hint = f"; generate it first with `textreid synth {root}` (or write_synthpedes)"
        raise FileNotFoundError(
            f"read_{name.replace('-', '_')}: annotation file {anno} does not exist{hint}"
        )
    return read_pedes_json(
        anno,
        folder / "imgs",
        name=name,
        path_field="file_path",
        id_offset=1,
        relabel=relabel,
        unknown_split=unknown_split,
        check_images=check_images,
    )


def read_icfg_pedes(
    root: str | os.PathLike[str],
    *,
    relabel: Relabel = "dense",
    unknown_split: UnknownSplit = "error",
    check_images: bool = False,
) -> PedesDataset:
    """Read ICFG-PEDES (Ding et al., arXiv 2107.12666) from ``root/ICFG-PEDES/ICFG-PEDES.json``.

    Images are under ``ICFG-PEDES/imgs/<file_path>``; ids start at 0. The benchmark has no
    validation split, so ``val`` is empty. Some copies name the file ``ICFG_PEDES.json``
    (underscore, as in IRRA's README); it is accepted when the hyphenated name is absent.
    ``root`` may also be the ``ICFG-PEDES`` folder itself.
    """
    names = ("ICFG-PEDES.json", "ICFG_PEDES.json")
    folder = _dataset_dir(root, "ICFG-PEDES", names)
    anno = next((folder / n for n in names if (folder / n).is_file()), None)
    if anno is None:
        raise FileNotFoundError(
            f"read_icfg_pedes: annotation file {folder / names[0]} does not exist (nor "
            f"{names[1]}); lay ICFG-PEDES out as <root>/ICFG-PEDES/ICFG-PEDES.json and "
            "<root>/ICFG-PEDES/imgs/"
        )
    return read_pedes_json(
        anno,
        folder / "imgs",
        name="icfg-pedes",
        path_field="file_path",
        id_offset=0,
        relabel=relabel,
        unknown_split=unknown_split,
        check_images=check_images,
    )


def read_rstpreid(
    root: str | os.PathLike[str],
    *,
    relabel: Relabel = "dense",
    unknown_split: UnknownSplit = "error",
    check_images: bool = False,
) -> PedesDataset:
    """Read RSTPReid (Zhu et al., ACM MM 2021) from ``root/RSTPReid/data_captions.json``.

    Images are under ``RSTPReid/imgs/<img_path>`` (the field is ``img_path``, not
    ``file_path``); ids start at 0. ``root`` may also be the ``RSTPReid`` folder itself.
    """
    folder = _dataset_dir(root, "RSTPReid", ("data_captions.json",))
    anno = folder / "data_captions.json"
    if not anno.is_file():
        raise FileNotFoundError(
            f"read_rstpreid: annotation file {anno} does not exist; lay RSTPReid out as "
            "<root>/RSTPReid/data_captions.json and <root>/RSTPReid/imgs/ (download from the "
            "RSTPReid-Dataset repository of the DSSL authors)"
        )
    return read_pedes_json(
        anno,
        folder / "imgs",
        name="rstpreid",
        path_field="img_path",
        id_offset=0,
        relabel=relabel,
        unknown_split=unknown_split,
        check_images=check_images,
    )


def read_synthpedes(
    root: str | os.PathLike[str],
    *,
    relabel: Relabel = "dense",
    check_images: bool = False,
) -> PedesDataset:
    """Read a SynthPEDES folder written by :func:`textreid.data.write_synthpedes`.

    It is in the CUHK-PEDES format (``root/CUHK-PEDES/reid_raw.json`` + ``imgs/``), so this is
    :func:`read_cuhk_pedes` under the name ``"synthpedes"``.
    """
    return read_cuhk_pedes(root, relabel=relabel, check_images=check_images, name="synthpedes")


_DATASETS: Registry[Callable[..., PedesDataset]] = Registry(
    "dataset", arg="reader", normalize=str.lower
)


def register_dataset(
    name: str, reader: Callable[..., PedesDataset], *, overwrite: bool = False
) -> None:
    """Register ``reader(root, **options) -> PedesDataset`` under ``name`` (lower-cased).

    Raises:
        ValueError: ``name`` is empty or already registered and ``overwrite`` is False.
        TypeError: ``name`` is not a str or ``reader`` is not callable.
    """
    _DATASETS.register(name, reader, overwrite=overwrite, fn="register_dataset")


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`, sorted."""
    return _DATASETS.names()


def build_dataset(name: str, root: str | os.PathLike[str], **kwargs: Any) -> PedesDataset:
    """Read the registered dataset ``name`` (case-insensitive) from ``root``.

    Args:
        name: one of :func:`list_datasets` (``"cuhk-pedes"``, ``"icfg-pedes"``,
            ``"rstpreid"``, ``"synthpedes"`` and any registered name).
        root: folder holding the benchmark folder, or the benchmark folder itself.
        **kwargs: reader options (``relabel``, ``check_images``, ...).

    Raises:
        ValueError: unknown name (the message lists the registered names and suggests the
            closest), or ``"cuhk-pedes"`` given a SynthPEDES folder (same layout).
    """
    return _DATASETS.get(name, fn="build_dataset")(root, **kwargs)


def _read_real_cuhk_pedes(root: str | os.PathLike[str], **kwargs: Any) -> PedesDataset:
    """:func:`read_cuhk_pedes` for the name ``cuhk-pedes``, which refuses a SynthPEDES folder:
    the layout is the same, so reading it would silently train on the wrong benchmark."""
    folder = _dataset_dir(root, "CUHK-PEDES", ("reid_raw.json", "caption_all.json"))
    if (folder / "synthpedes.json").is_file():
        raise ValueError(
            f"build_dataset: {folder} holds SynthPEDES (written by write_synthpedes: it has "
            "synthpedes.json), not CUHK-PEDES; read it with dataset='synthpedes'"
        )
    return read_cuhk_pedes(root, **kwargs)


register_dataset("cuhk-pedes", _read_real_cuhk_pedes)
register_dataset("icfg-pedes", read_icfg_pedes)
register_dataset("rstpreid", read_rstpreid)
register_dataset("synthpedes", read_synthpedes)
