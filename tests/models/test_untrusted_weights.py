"""Weights files are untrusted: no loader runs code from them, and wrong weights are refused.

Two live payloads are built here: a pickle whose ``__reduce__`` creates a marker file, and a
TorchScript archive whose module's ``__setstate__`` creates one through
``torch.from_file(shared=True)``. Both are first shown to be live (``torch.load`` without
``weights_only`` and ``torch.jit.load`` do create the marker); then every loader is fed
each payload and must refuse it with a ValueError naming the safe formats, without the
marker appearing.
"""

from __future__ import annotations

import copy
import json
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from textreid import Retriever
from textreid.cli import main
from textreid.models import (
    CLIPDualEncoder,
    create_model,
    load_clip,
    load_state_dict_strict,
    read_weights,
    save_hf,
)
from textreid.models.torchscript import read_torchscript_state_dict
from textreid.testing import FakeHub
from textreid.training import load_checkpoint

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit:FutureWarning", "ignore:'torch.load' received a zip file"
)


@pytest.fixture(scope="module")
def tiny() -> CLIPDualEncoder:
    torch.manual_seed(0)
    return create_model("tiny", image_size=(32, 32))


def _jit_save(module: nn.Module, path: Path, *, trace_input: Tensor | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = (
            torch.jit.script(module)
            if trace_input is None
            else torch.jit.trace(module, trace_input)  # type: ignore[no-untyped-call]
        )
        torch.jit.save(scripted, str(path))  # type: ignore[no-untyped-call]
    return path


def _jit_load_state_dict(path: Path) -> dict[str, Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    return dict(loaded.state_dict())


# -- the reader agrees with torch.jit.load --------------------------------------------------


class _Block(nn.Module):
    """OpenAI-like block: parameters, a buffer, and a plain tensor attribute (attn_mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(4)
        self.attn = nn.MultiheadAttention(4, 2)  # q/k/v_proj_weight are declared but None
        self.register_buffer("counts", torch.arange(3))
        self.attn_mask = torch.triu(torch.full((2, 2), -1e4), 1)
        self.sizes: list[int] = [2, 3]
        self.extra: dict[str, Tensor] = {"a": torch.ones(1)}

    def forward(self, x: Tensor) -> Tensor:
        out = self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]
        return self.ln(x) + out + self.sizes[0] + self.extra["a"]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_Block(), _Block())
        self.proj = nn.Parameter(torch.randn(4, 3))
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.register_buffer("half_table", torch.randn(5).half())
        self.register_buffer("kept_out", torch.zeros(2), persistent=False)
        self.input_resolution = 224

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x) @ self.proj * self.scale + self.half_table.float().sum()


def _assert_same_state(got: dict[str, Tensor], ref: dict[str, Tensor]) -> None:
    assert list(got) == list(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


def test_reader_matches_jit_load_on_a_scripted_archive(tmp_path: Path) -> None:
    path = _jit_save(_Net(), tmp_path / "net.pt")
    got = read_torchscript_state_dict(path)
    _assert_same_state(got, _jit_load_state_dict(path))
    assert "blocks.0.attn_mask" not in got
    assert "blocks.0.attn.in_proj_weight" in got
    assert got["blocks.1.counts"].dtype == torch.int64
    assert got["half_table"].dtype == torch.float16


def test_reader_matches_jit_load_on_a_traced_archive(tmp_path: Path) -> None:
    # Tracing names classes with ___torch_mangle_N qualifiers, as in OpenAI's archives.
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2)).eval()
    path = _jit_save(net, tmp_path / "traced.pt", trace_input=torch.randn(5, 3))
    got = read_torchscript_state_dict(path)
    _assert_same_state(got, _jit_load_state_dict(path))
    assert {"3.running_var", "3.num_batches_tracked"} <= set(got)


def test_reader_copies_views_and_shares_nothing_with_the_file(tmp_path: Path) -> None:
    class Views(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            base = torch.arange(12.0)
            self.a = nn.Parameter(base[2:8].view(2, 3))  # offset into a shared storage
            self.register_buffer("b", base.view(3, 4).t())  # transposed strides

        def forward(self, x: Tensor) -> Tensor:
            return x + self.a.sum() + self.b.sum()

    path = _jit_save(Views(), tmp_path / "views.pt")
    got = read_torchscript_state_dict(path)
    _assert_same_state(got, _jit_load_state_dict(path))
    assert torch.equal(got["a"], torch.tensor([[2.0, 3, 4], [5, 6, 7]]))
    assert all(v.is_contiguous() for v in got.values())


# -- hand-made archives: what a hostile file could claim -------------------------------------


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(
    key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0
) -> bytes:
    storage = _tuple(_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"))
    storage = storage[:-1] + _int(numel) + b"t"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(
        storage + b"Q",
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",
        hooks,
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _module(name: str, items: dict[str, bytes], memo: int | None = None) -> bytes:
    head = _global("__torch__", name) + b")\x81"
    if memo is not None:
        head += b"q" + bytes([memo])
    body = b"".join(_str(k) + v for k, v in items.items())
    return head + b"}(" + body + b"ub"


_CODE = 'class M(Module):\n  __parameters__ = ["w", ]\n  __buffers__ = []\n  w : Tensor\n'


def _archive(
    path: Path,
    pickled: bytes,
    storage: bytes = struct.pack("<3f", 1.0, 2.0, 3.0),
    compress: int = zipfile.ZIP_STORED,
) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("arc/data.pkl", b"\x80\x02" + pickled + b".")
        zf.writestr("arc/data/0", storage, compress_type=compress)
        zf.writestr("arc/code/__torch__.py", _CODE)
        zf.writestr("arc/constants.pkl", b"\x80\x02).")
    return path


def test_hand_made_archive_reads(tmp_path: Path) -> None:
    path = _archive(tmp_path / "ok.pt", _module("M", {"w": _tensor("0", 3, (3,), (1,))}))
    got = read_weights(path)
    assert list(got) == ["w"]
    assert torch.equal(got["w"], torch.tensor([1.0, 2.0, 3.0]))


@dataclass
class _Hostile:
    pickled: bytes
    match: str
    compress: int = zipfile.ZIP_STORED


def _hostile_cases(marker: Path) -> dict[str, _Hostile]:
    call_open = _global("builtins", "open") + _tuple(_str(str(marker)), _str("w")) + b"R"
    return {
        "numel beyond the entry": _Hostile(
            _module("M", {"w": _tensor("0", 1 << 30, (3,), (1,))}), "claims 1073741824"
        ),
        "view beyond the storage": _Hostile(
            _module("M", {"w": _tensor("0", 3, (4,), (1,))}), "does not fit its storage"
        ),
        "stride-0 blow-up": _Hostile(
            _module("M", {"w": _tensor("0", 3, (1 << 30,), (0,))}), "does not fit its storage"
        ),
        "compressed storage": _Hostile(
            _module("M", {"w": _tensor("0", 3, (3,), (1,))}),
            r"holds 12 bytes \(\d+ stored\)",
            zipfile.ZIP_DEFLATED,
        ),
        "forbidden global": _Hostile(
            _module("M", {"w": _tensor("0", 3, (3,), (1,)), "x": call_open}),
            "refused global builtins.open",
        ),
        "module tree with a cycle": _Hostile(
            _module("M", {"w": _tensor("0", 3, (3,), (1,)), "me": b"h\x00"}, memo=0),
            "appears twice in the module tree",
        ),
        "parameter that is not a tensor": _Hostile(
            _module("M", {"w": _str("weights")}), "'w' a parameter or buffer, but it holds a str"
        ),
        "root that is not a module": _Hostile(_str("hello"), "holds a str, not a module"),
        "module never given a state": _Hostile(
            _global("__torch__", "M") + b")\x81", "has no state; the archive is corrupt"
        ),
        "offset beyond an empty view": _Hostile(
            _module("M", {"w": _tensor("0", 3, (0,), (1,), offset=1 << 30)}),
            "does not fit its storage",
        ),
    }


@pytest.mark.parametrize("case", list(_hostile_cases(Path("m"))))
def test_hostile_archives_are_refused_before_allocating(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "marker"
    hostile = _hostile_cases(marker)[case]
    storage = struct.pack("<3f", 1.0, 2.0, 3.0)
    path = _archive(tmp_path / "bad.pt", hostile.pickled, storage, hostile.compress)
    with pytest.raises(ValueError, match=hostile.match) as info:
        read_weights(path)
    assert "Safe formats: safetensors" in str(info.value)
    assert not marker.exists()


# -- live payloads, and every loader ----------------------------------------------------------


class _Payload(nn.Module):
    """A scripted module whose __setstate__ creates (or overwrites) the file at ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.weight = nn.Parameter(torch.ones(2))
        self.mark = torch.zeros(1, dtype=torch.uint8)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, Tensor, bool]:
        return (self.path, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, Tensor, bool]) -> None:
        self.path = state[0]
        self.weight = state[1]
        self.training = state[2]
        self.mark = torch.from_file(self.path, True, 4, dtype=torch.uint8).fill_(1)


class _Carrier(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.visual = nn.Linear(2, 2)
        self.payload = _Payload(path)

    def forward(self, x: Tensor) -> Tensor:
        return self.visual(self.payload(x))


class _Reduce:
    """Unpickling this creates the file at ``path`` (``open(path, "w")``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@dataclass(frozen=True)
class _Payloads:
    marker: Path
    files: dict[str, bytes]  # kind -> file content


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> _Payloads:
    folder = tmp_path_factory.mktemp("payloads")
    marker = folder / "marker"
    _jit_save(_Carrier(str(marker)), folder / "torchscript.pt")
    torch.save({"visual.weight": torch.ones(2, 2), "x": _Reduce(str(marker))}, folder / "zip.pt")
    with (folder / "legacy.pkl").open("wb") as f:
        pickle.dump({"visual.weight": torch.ones(2, 2), "x": _Reduce(str(marker))}, f, protocol=2)
    names = ("torchscript.pt", "zip.pt", "legacy.pkl")
    return _Payloads(marker, {n.split(".")[0]: (folder / n).read_bytes() for n in names})


@pytest.fixture
def marker(payloads: _Payloads) -> Iterator[Path]:
    payloads.marker.unlink(missing_ok=True)
    yield payloads.marker
    payloads.marker.unlink(missing_ok=True)


def _check_refusal(message: str, kind: str) -> None:
    assert "Safe formats: safetensors" in message
    # torch's advice to turn the protection off must never reach the user.
    assert "weights_only" not in message.replace("weights_only=True", "")
    if kind == "torchscript":
        assert "TorchScript" in message or "__setstate__" in message


def test_payloads_are_live(payloads: _Payloads, marker: Path, tmp_path: Path) -> None:
    for kind, data in payloads.files.items():
        (tmp_path / kind).write_bytes(data)
        if kind == "torchscript":
            torch.jit.load(str(tmp_path / kind))  # type: ignore[no-untyped-call]
        elif kind == "zip":
            torch.load(tmp_path / kind, weights_only=False)
        else:
            pickle.loads(data)
        assert marker.exists(), kind
        marker.unlink()


def _hf_folder(root: Path, tiny: CLIPDualEncoder, weights: bytes) -> Path:
    folder = save_hf(tiny, root / "hf")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(weights)
    return folder


def _open_clip_folder(root: Path, weights: bytes) -> Path:
    folder = root / "oc"
    folder.mkdir()
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 64, "heads": 2},
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    (folder / "open_clip_pytorch_model.bin").write_bytes(weights)
    return folder


def _via_hub(root: Path, tiny: CLIPDualEncoder, weights: bytes, load: Callable[..., Any]) -> None:
    folder = _hf_folder(root, tiny, weights)
    with FakeHub() as hub:
        hub.add_repo("openai/clip-tiny", {p.name: p.read_bytes() for p in folder.iterdir()})
        load("openai/clip-tiny", endpoint=hub.endpoint, cache_dir=root / "cache")


def _convert(path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["convert", "--from", "irra", str(path), str(out)])
    assert code == 2
    assert not out.exists()
    raise ValueError(capsys.readouterr().err)


_LOADERS: dict[str, Callable[[Path, Path, CLIPDualEncoder, Any], None]] = {
    "read_weights": lambda f, root, tiny, cap: read_weights(f),
    "load_clip file": lambda f, root, tiny, cap: load_clip(f),
    "load_clip HF folder": lambda f, root, tiny, cap: load_clip(
        _hf_folder(root, tiny, f.read_bytes())
    ),
    "load_clip open_clip folder": lambda f, root, tiny, cap: load_clip(
        _open_clip_folder(root, f.read_bytes())
    ),
    "load_clip hub": lambda f, root, tiny, cap: _via_hub(root, tiny, f.read_bytes(), load_clip),
    "Retriever HF folder": lambda f, root, tiny, cap: Retriever.from_pretrained(
        _hf_folder(root, tiny, f.read_bytes())
    ),
    "Retriever hub": lambda f, root, tiny, cap: _via_hub(
        root, tiny, f.read_bytes(), Retriever.from_pretrained
    ),
    "textreid convert": lambda f, root, tiny, cap: _convert(f, root / "out", cap),
    "load_checkpoint": lambda f, root, tiny, cap: load_checkpoint(f),
}


@pytest.mark.parametrize("kind", ["torchscript", "zip", "legacy"])
@pytest.mark.parametrize("loader", list(_LOADERS))
def test_no_loader_runs_a_payload(
    payloads: _Payloads,
    marker: Path,
    tiny: CLIPDualEncoder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    loader: str,
    kind: str,
) -> None:
    path = tmp_path / f"weights.{'pt' if kind != 'legacy' else 'bin'}"
    path.write_bytes(payloads.files[kind])
    try:
        _LOADERS[loader](path, tmp_path, tiny, capsys)
    except ValueError as err:
        message: str | None = str(err)
    else:
        message = None
    assert not marker.exists()
    assert message is not None, "the payload was accepted"
    _check_refusal(message, kind)


# -- weights that load but are wrong ---------------------------------------------------------


def test_integer_and_non_finite_weights_are_refused(tiny: CLIPDualEncoder) -> None:
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    sd["visual.proj"] = sd["visual.proj"].to(torch.int32)
    sd["ln_final.weight"] = sd["ln_final.weight"].bool()
    sd["text_projection"][0, 0] = float("nan")
    sd["logit_scale"] = torch.tensor(float("inf"))
    model = create_model("tiny", image_size=(32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_state_dict_strict(model, sd)
    msg = str(info.value)
    assert "dtype kind mismatches (2)" in msg
    assert "visual.proj: checkpoint torch.int32 vs model torch.float32" in msg
    assert "ln_final.weight: checkpoint torch.bool" in msg
    assert "NaN or infinite values (2): ['logit_scale', 'text_projection']" in msg
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # Half precision is the same kind (OpenAI's archives are float16): accepted.
    load_state_dict_strict(model, {k: v.half() for k, v in tiny.state_dict().items()})


def test_int32_safetensors_is_refused_by_load_clip_and_the_retriever(
    tiny: CLIPDualEncoder, tmp_path: Path
) -> None:
    folder = save_hf(tiny, tmp_path / "hf")
    sd = {k: (v * 100).to(torch.int32) for k, v in tiny.state_dict().items()}
    save_file(sd, str(tmp_path / "int.safetensors"))
    with pytest.raises(ValueError, match=r"dtype kind mismatches \(\d+\):.*int32"):
        load_clip(tmp_path / "int.safetensors")
    broken = copy.deepcopy(tiny)
    with torch.no_grad():
        broken.visual.conv1.weight[0, 0, 0, 0] = float("nan")
    retriever = Retriever(broken).save_pretrained(tmp_path / "retriever")
    with pytest.raises(
        ValueError, match=r"NaN or infinite values \(1\): \['visual.conv1.weight'\]"
    ):
        Retriever.from_pretrained(retriever)
    save_file(broken.state_dict(), str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite values"):
        load_clip(folder)
