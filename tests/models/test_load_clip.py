"""load_clip: files, folders, TorchScript archives, the Hub cache offline, errors, resampling."""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from textreid.hub import HubConnectionError
from textreid.models import (
    CLIPDualEncoder,
    create_model,
    load_clip,
    load_state_dict_strict,
    resample_pos_embed,
    save_hf,
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return


@pytest.fixture(scope="module")
def tiny() -> CLIPDualEncoder:
    torch.manual_seed(0)
    return create_model("tiny", image_size=(64, 64))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Archive(nn.Module):
    """Stand-in for OpenAI's TorchScript CLIP: OpenAI names plus three scalar entries."""

    def __init__(self, model: CLIPDualEncoder) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, nn.Parameter(p.detach().clone()))
        self.register_buffer("input_resolution", torch.tensor(64))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale.exp()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_archive_fp16(tiny: CLIPDualEncoder, tmp_path: Path, no_network: None) -> None:
    archive = _Archive(copy.deepcopy(tiny)).half()
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.trace(archive, torch.ones(2, dtype=torch.half)), str(path))
    model = load_clip(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    expected = {k: v.half().float() for k, v in tiny.state_dict().items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_weight_files(tiny: CLIPDualEncoder, tmp_path: Path, no_network: None) -> None:
    save_file(tiny.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"model": tiny.state_dict(), "epoch": 3}, tmp_path / "best.pth")
    torch.save({f"module.{k}": v for k, v in tiny.state_dict().items()}, tmp_path / "w.bin")
    for name in ("w.safetensors", "best.pth", "w.bin"):
        model = load_clip(tmp_path / name)
        assert _same(model, tiny), name
        assert all(p.requires_grad and not p.is_meta for p in model.parameters())


def test_state_dict_source_is_copied(tiny: CLIPDualEncoder) -> None:
    sd = tiny.state_dict()
    model = load_clip(sd)
    with torch.no_grad():
        model.logit_scale.add_(1.0)
    assert not torch.equal(model.logit_scale, sd["logit_scale"])


def _fake_cache(root: Path, repo: str, files: dict[str, Path]) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())


def test_hub_cache_offline(tiny: CLIPDualEncoder, tmp_path: Path, no_network: None) -> None:
    pytest.importorskip("huggingface_hub")
    folder = save_hf(tiny, tmp_path / "export")
    cache = tmp_path / "cache"
    _fake_cache(
        cache, "openai/clip-tiny", {n: folder / n for n in ("config.json", "model.safetensors")}
    )
    for source in ("openai/clip-tiny", "hf-hub:openai/clip-tiny"):
        model = load_clip(source, cache_dir=cache, local_files_only=True)
        assert _same(model, tiny)
    with pytest.raises(
        HubConnectionError,
        match=r"'config.json' of 'org/absent' .*not in the Hub cache .*local_files_only=True",
    ):
        load_clip("org/absent", cache_dir=cache, local_files_only=True)


def test_hf_folder_and_missing_weights(
    tiny: CLIPDualEncoder, tmp_path: Path, no_network: None
) -> None:
    folder = save_hf(tiny, tmp_path / "hf")
    assert _same(load_clip(folder), tiny)
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"has config.json but none of its weight files \['model.safetensors', 'pytorch_model.bin'\].*holds \['config.json'\]",
    ):
        load_clip(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no CLIP weights in folder .*empty; looked for"):
        load_clip(empty)
    with pytest.raises(
        FileNotFoundError, match=r"no such file or folder '\./missing\.safetensors' \(looked for"
    ):
        load_clip("./missing.safetensors")
    with pytest.raises(TypeError, match="source must be a path"):
        load_clip(3)  # type: ignore[arg-type]


def test_corrupt_files(tiny: CLIPDualEncoder, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(tiny.state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"corrupt or truncated .*download it again"):
        load_clip(path)
    pt = tmp_path / "w.pt"
    torch.save(tiny.state_dict(), pt)
    pt.write_bytes(pt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read .*w\.pt as a torch checkpoint"):
        load_clip(pt)
    torch.save({"epoch": 3}, pt)
    with pytest.raises(ValueError, match="neither a state dict nor a checkpoint"):
        load_clip(pt)


def test_resampled_on_load(tiny: CLIPDualEncoder) -> None:
    sd = tiny.state_dict()
    pos = sd["visual.positional_embedding"]
    model = load_clip(sd, image_size=(384, 128), stride=12)
    assert model.visual.grid_size == (31, 10)
    torch.testing.assert_close(
        model.visual.positional_embedding.detach(), resample_pos_embed(pos, (4, 4), (31, 10))
    )
    irra = load_clip(
        sd,
        image_size=(96, 32),
        vision={"pos_embed_resample_mode": "bilinear", "pos_embed_antialias": False},
    )
    torch.testing.assert_close(
        irra.visual.positional_embedding.detach(),
        resample_pos_embed(pos, (4, 4), (6, 2), mode="bilinear", antialias=False),
    )
    assert torch.equal(irra.visual.conv1.weight, tiny.visual.conv1.weight)
    out = irra.encode_image(torch.randn(1, 3, 96, 32))
    assert out.shape == (1, 64)


def test_non_square_checkpoint_needs_grid() -> None:
    sd = create_model("tiny").state_dict()  # 64x32 at patch 16: a 4x2 grid
    with pytest.raises(ValueError, match="not a square grid; pass grid="):
        load_clip(sd)
    model = load_clip(sd, checkpoint_grid=(4, 2), image_size=(128, 64))
    assert model.visual.grid_size == (8, 4)


def test_strict_loading_lists_keys(tiny: CLIPDualEncoder) -> None:
    sd = dict(tiny.state_dict())
    del sd["ln_final.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["visual.proj"] = torch.zeros(64, 3)
    model = create_model("tiny", image_size=(64, 64))
    with pytest.raises(
        ValueError,
        match=r"missing keys \(1\): \['ln_final.bias'\]; unexpected keys \(1\): \['extra.weight'\]; shape mismatches \(1\): \['visual.proj: checkpoint \(64, 3\) vs model \(64, 64\)'\]",
    ):
        load_state_dict_strict(model, sd)
    with pytest.raises(ValueError, match="missing keys"):
        load_clip({k: v for k, v in tiny.state_dict().items() if k != "ln_final.bias"})
