"""Trainer output a person reads: epoch and final lines, verbosity, heartbeat, Ctrl-C, AMP
skipped steps, amp="auto", resuming with a changed configuration."""

from __future__ import annotations

import json
import re
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _training_toy import ToyData, ToyMethod, make_loader, recall_at_1, toy_config
from torch import Tensor, nn

import textreid.training._progress as progress_mod
import textreid.training.trainer as trainer_mod
from textreid.losses.combine import LossOutput
from textreid.training import (
    Callback,
    Trainer,
    TrainerConfig,
    TrainingInterrupted,
    load_checkpoint,
    lr_at,
)
from textreid.training._progress import format_duration, is_interactive


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _params(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class _Scores:
    """An evaluate_fn returning a fixed R1 per call, so the selected epoch is known."""

    def __init__(self, values: list[float]) -> None:
        self.values = iter(values)

    def __call__(self, method: nn.Module) -> dict[str, float]:
        # Counts ride along as RetrievalMetrics.to_dict() gives them; lines show metrics only.
        return {"R1": next(self.values), "mAP": 10.0, "num_queries": 240.0}


def test_epoch_and_final_lines_in_a_non_tty_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = ToyData(16)
    cfg = toy_config(tmp_path, epochs=3, log_every=100, progress=True)
    result = Trainer(ToyMethod(), make_loader(data, 4), cfg, _Scores([20.0, 41.25, 30.0])).fit()
    err = capfd.readouterr().err
    assert "\r" not in err  # no bar in a log file although progress=True
    lines = err.strip().splitlines()
    assert len(lines) == 4
    epochs = [r for r in _records(tmp_path) if "epoch_loss" in r]
    for i, (line, rec) in enumerate(zip(lines[:3], epochs, strict=True), start=1):
        assert line.startswith(f"epoch {i}/3  4 steps  loss {rec['epoch_loss']:.4f} (")
        assert f"i2t {rec['epoch_loss/i2t']:.4f}, t2i {rec['epoch_loss/t2i']:.4f}" in line
        assert f"lr {rec['lr']:.3g}" in line
        assert f"val R1 {rec['val/R1']:.2f} mAP 10.00  time" in line
        assert rec["val/num_queries"] == 240.0  # kept in metrics.jsonl
        assert re.search(r"  time \d+s  ETA \d+s$", line), line
        assert "skipped" not in line
    assert result.best_epoch == 2
    best = tmp_path / "best.safetensors"
    assert re.fullmatch(
        rf"done: 3 epochs in \d+s; best R1 41\.25 \(highest\) at epoch 2 of 3; saved {re.escape(str(best))}",
        lines[3],
    )


def test_final_line_names_the_last_epoch(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = toy_config(tmp_path, epochs=3, select_epoch="last", verbosity=0)
    Trainer(ToyMethod(), make_loader(ToyData(16), 4), cfg, _Scores([20.0, 41.25, 30.0])).fit()
    (line,) = capfd.readouterr().err.strip().splitlines()
    best = tmp_path / "best.safetensors"
    assert re.fullmatch(
        r"done: 3 epochs in \d+s; selected the last evaluated epoch, 3 of 3 "
        rf"\(select_epoch='last'\): R1 30\.00; saved {re.escape(str(best))}",
        line,
    )


def test_verbosity_levels_and_stop(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = ToyData(16)
    loader = make_loader(data, 4)
    Trainer(ToyMethod(), loader, toy_config(tmp_path / "q", verbosity=0)).fit()
    quiet = capfd.readouterr().err.strip().splitlines()
    assert len(quiet) == 1
    assert quiet[0].startswith("done: 2 epochs in ")
    assert quiet[0].endswith(
        "no evaluate_fn, so no epoch selected; last checkpoint "
        + str(tmp_path / "q" / "checkpoints" / "checkpoint-epoch0002.pt")
    )

    class Stop(Callback):
        def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
            trainer.stop_training = True

    cfg = toy_config(tmp_path / "v", verbosity=2, log_every=2, epochs=3)
    Trainer(ToyMethod(), loader, cfg, lambda m: recall_at_1(m, data), [Stop()]).fit()
    loud = capfd.readouterr().err.strip().splitlines()
    steps = [r for r in _records(tmp_path / "v") if "loss" in r]
    assert [ln for ln in loud if ln.startswith("step ")] == [
        f"step {r['step']} (epoch 1)  loss {r['loss']:.4f} (i2t {r['loss/i2t']:.4f}, "
        f"t2i {r['loss/t2i']:.4f})  lr {r['lr']:.3g}"
        for r in steps
    ]
    assert len(steps) == 2
    assert loud[-2].startswith("epoch 1/3  4 steps")
    assert loud[-1].startswith("stopped after epoch 1 of 3 in ")


class _ClockedLoader:
    """Batches of a real loader; the fake clock advances ``dt`` seconds per batch."""

    def __init__(self, loader: Any, clock: list[float], dt: float) -> None:
        self.loader, self.clock, self.dt = loader, clock, dt

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.clock[0] += self.dt
            yield batch


def test_heartbeat_lines_follow_the_clock(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(progress_mod, "_now", lambda: clock[0])
    loader = _ClockedLoader(make_loader(ToyData(32), 4), clock, dt=20.0)
    cfg = toy_config(tmp_path, epochs=1, heartbeat_s=50.0)
    Trainer(ToyMethod(), loader, cfg).fit()
    lines = capfd.readouterr().err.strip().splitlines()
    steps = [r["loss"] for r in _records(tmp_path) if "loss" in r]
    # 20 s per batch, a beat once 50 s have passed since the last: after batches 3 and 6.
    beats = [ln for ln in lines if "step " in ln]
    assert beats == [
        f"epoch 1/1  step 3/8  loss so far {sum(steps[:3]) / 3:.4f}  0.05 it/s  epoch ETA 1m40s",
        f"epoch 1/1  step 6/8  loss so far {sum(steps[:6]) / 6:.4f}  0.05 it/s  epoch ETA 40s",
    ]
    assert lines[-2].startswith("epoch 1/1  8 steps")
    assert "time 2m40s  ETA 0s" in lines[-2]

    # No beats where a bar shows progress, nor when switched off.
    monkeypatch.setattr(progress_mod, "is_interactive", lambda: True)
    Trainer(ToyMethod(), loader, toy_config(tmp_path / "bar", epochs=1, progress=True)).fit()
    assert "step 3/8" not in capfd.readouterr().err
    monkeypatch.setattr(progress_mod, "is_interactive", lambda: False)
    Trainer(ToyMethod(), loader, toy_config(tmp_path / "off", epochs=1, heartbeat_s=None)).fit()
    assert "step 3/8" not in capfd.readouterr().err


def test_interactive_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stderr", Pipe())
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not is_interactive()
    kernel_shell = types.SimpleNamespace(kernel=object())
    fake = types.SimpleNamespace(get_ipython=lambda: kernel_shell)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert is_interactive()  # a Jupyter kernel: stderr is a pipe but widgets work
    fake.get_ipython = lambda: types.SimpleNamespace()  # a terminal IPython is a tty or not
    assert not is_interactive()


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (61, "1m01s"), (7260, "2h01m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


class _InterruptingLoader:
    """A loader raising KeyboardInterrupt before batch ``at`` of epoch ``epoch`` (1-based)."""

    def __init__(self, loader: Any, epoch: int, at: int) -> None:
        self.loader, self.epoch, self.at, self.calls = loader, epoch, at, 0
        self.sampler = loader.sampler
        self.generator = loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.calls += 1
        for i, batch in enumerate(self.loader):
            if self.calls == self.epoch and i == self.at:
                raise KeyboardInterrupt
            yield batch


def _no_leftovers(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*")]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_ctrl_c_mid_epoch_leaves_a_resumable_run(tmp_path: Path) -> None:
    def setup(out: Path) -> tuple[ToyMethod, Any, TrainerConfig]:
        torch.manual_seed(0)
        loader = make_loader(ToyData(24, augment=True), 4, shuffle=True, seed=5)
        return ToyMethod(dropout=0.2), loader, toy_config(out, epochs=3, optimizer="adam")

    m, loader, cfg = setup(tmp_path / "full")
    Trainer(m, loader, cfg).fit()
    full = _params(m)

    m, loader, cfg = setup(tmp_path / "cut")
    trainer = Trainer(m, _InterruptingLoader(loader, epoch=2, at=3), cfg)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    err = info.value
    assert isinstance(err, KeyboardInterrupt)
    ckpt = tmp_path / "cut" / "checkpoints" / "checkpoint-epoch0001.pt"
    assert (err.output_dir, err.last_checkpoint, err.epoch) == (tmp_path / "cut", ckpt, 1)
    assert str(ckpt) in str(err)
    assert "Trainer.fit(resume=True)" in str(err)
    assert "--resume" in str(err)
    assert trainer._log is None  # metrics file closed
    _no_leftovers(tmp_path / "cut")

    m2, loader2, cfg2 = setup(tmp_path / "cut")
    assert Trainer(m2, loader2, cfg2).fit(resume=True).epochs_completed == 3
    for k, v in _params(m2).items():
        assert torch.equal(v, full[k]), k


def test_ctrl_c_while_a_checkpoint_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = trainer_mod.save_checkpoint

    def save(state: dict[str, Any], path: Path) -> Path:
        if state["epoch"] == 2:

            def half(f: Any) -> None:
                f.write(b"PK\x03\x04 half a checkpoint")
                raise KeyboardInterrupt

            trainer_mod.atomic_write(path, half)
        return real_save(state, path)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
    loader = make_loader(ToyData(16), 4)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(ToyMethod(), loader, toy_config(tmp_path, epochs=3)).fit()
    assert info.value.last_checkpoint == tmp_path / "checkpoints" / "checkpoint-epoch0001.pt"
    assert info.value.epoch == 2  # trained, but its checkpoint was not published
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint-epoch0001.pt"
    ]
    _no_leftovers(tmp_path)

    with pytest.raises(TrainingInterrupted, match="no checkpoint was written yet"):
        Trainer(
            ToyMethod(), _InterruptingLoader(loader, 1, 1), toy_config(tmp_path / "early")
        ).fit()


class _Overflow(nn.Module):
    """A loss whose float16 gradient is ``factor x scale``: inf while that exceeds 65504."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)
        self.factor = factor

    def forward(self, batch: dict[str, Tensor]) -> LossOutput:
        out = self.lin(batch["images"][:, :4] * 1e-3)
        return LossOutput(self.factor * out.float().sum(), {})


def test_fp16_skipped_steps_are_counted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The scale starts at 2**16 and halves on every skip: 4 x 65536, 4 x 32768 and 4 x 16384
    # overflow float16, 4 x 8192 = 32768 does not, so exactly the first three steps skip.
    loader = make_loader(ToyData(32), 4)
    cfg = toy_config(tmp_path, amp="fp16", lr=1e-4)
    result = Trainer(_Overflow(4.0), loader, cfg).fit()
    assert result.skipped_steps == 3
    epochs = [r for r in _records(tmp_path) if "epoch_loss" in r]
    assert [r["skipped_steps"] for r in epochs] == [3, 0]
    lines = capfd.readouterr().err.splitlines()
    assert "skipped 3/8 steps (fp16 overflow)" in lines[0]
    assert "skipped" not in lines[1]
    # The count survives a resume.
    assert (
        load_checkpoint(tmp_path / "checkpoints" / "checkpoint-epoch0002.pt")["skipped_steps"] == 3
    )


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_an_epoch_of_only_skipped_steps_warns(tmp_path: Path) -> None:
    method = _Overflow(1e9)
    before = _params(method)
    cfg = toy_config(tmp_path, amp="fp16", epochs=1)
    with pytest.warns(UserWarning, match="skipped all 8 optimizer steps of epoch 1"):
        result = Trainer(method, make_loader(ToyData(32), 4), cfg).fit()
    assert result.skipped_steps == 8
    assert all(torch.equal(v, before[k]) for k, v in _params(method).items())


def test_amp_auto_follows_the_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trainer = Trainer(ToyMethod(), make_loader(ToyData(8), 4), toy_config(tmp_path, amp="auto"))
    assert trainer.amp == "none"
    assert not trainer.scaler.is_enabled()
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert trainer_mod._resolve_amp("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert trainer_mod._resolve_amp("auto", cuda) == "fp16"
    assert trainer_mod._resolve_amp("bf16", torch.device("cpu")) == "bf16"


def test_resume_with_more_epochs_warns_and_follows_the_new_schedule(tmp_path: Path) -> None:
    data = ToyData(16)
    kw: dict[str, Any] = {"schedule": "cosine", "lr": 0.1, "epochs": 2}
    Trainer(ToyMethod(), make_loader(data, 4), toy_config(tmp_path, **kw)).fit()
    cfg = toy_config(tmp_path, **{**kw, "epochs": 4, "lr": 0.2})
    with pytest.warns(UserWarning, match=r"epochs 2 -> 4, lr 0\.1 -> 0\.2; the new values apply"):
        Trainer(ToyMethod(), make_loader(data, 4), cfg).fit(resume=True)
    lrs = {r["epoch"]: r["lr"] for r in _records(tmp_path) if "epoch_loss" in r}
    assert lrs[3] == pytest.approx(lr_at(2, base_lr=0.2, total=4, warmup=0))
    assert lrs[4] == pytest.approx(lr_at(3, base_lr=0.2, total=4, warmup=0))
    assert lrs[4] > 0.02  # a schedule still ending at epoch 2 would be back near zero


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 1}, "already completed 2 epochs but epochs is 1"),
        ({"optimizer": "adam"}, "optimizer 'sgd' -> 'adam'"),
        ({"schedule_unit": "step"}, "schedule_unit 'epoch' -> 'step'"),
    ],
)
def test_resume_refuses_changes_it_cannot_follow(
    tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    loader = make_loader(ToyData(8), 4)
    Trainer(ToyMethod(), loader, toy_config(tmp_path)).fit()
    with pytest.raises(ValueError, match=match):
        Trainer(ToyMethod(), loader, toy_config(tmp_path, **change)).fit(resume=True)


def test_resume_without_changes_is_silent(tmp_path: Path) -> None:
    loader = make_loader(ToyData(8), 4)
    Trainer(ToyMethod(), loader, toy_config(tmp_path)).fit()
    cfg = toy_config(tmp_path, verbosity=0, log_every=3, seed=9)  # output-only settings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(ToyMethod(), loader, cfg).fit(resume=True)


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"verbosity": 3}, ValueError, r"verbosity must be one of \(0, 1, 2\), got 3"),
        ({"verbosity": True}, TypeError, "verbosity must be an int, got bool"),
        ({"heartbeat_s": 0.0}, ValueError, "heartbeat_s"),
        ({"amp": "fp8"}, ValueError, "amp must be one of"),
    ],
)
def test_config_errors(kw: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        TrainerConfig(**kw)
