"""Trainer: accumulation, clipping, AMP, resume bit-for-bit, best selection, metrics file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _training_toy import ToyData, ToyMethod, make_loader, recall_at_1
from _training_toy import toy_config as _config
from safetensors.torch import safe_open
from torch import nn

from textreid.losses.combine import LossOutput
from textreid.training import Callback, ParamRule, Trainer, TrainerConfig, lr_at


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class _Snapshots(Callback):
    """The method's weights at the end of every epoch, by (1-based) epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.weights[trainer.epoch] = _params(trainer.method)


def _best_file(output_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of ``best.safetensors``."""
    with safe_open(output_dir / "best.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (not iterable)


class _StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.epoch == self.epoch:
            trainer.stop_training = True


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("n", "batch", "accum"), [(32, 4, 2), (28, 4, 3)])
def test_gradient_accumulation_equals_big_batch(
    tmp_path: Path, n: int, batch: int, accum: int
) -> None:
    data = ToyData(n)
    torch.manual_seed(1)
    a = ToyMethod(loss="align")
    b = ToyMethod(loss="align")
    b.load_state_dict(a.state_dict())
    Trainer(a, make_loader(data, batch), _config(tmp_path / "a", grad_accum_steps=accum)).fit()
    Trainer(b, make_loader(data, batch * accum), _config(tmp_path / "b")).fit()
    for k, v in _params(a).items():
        torch.testing.assert_close(v, _params(b)[k], rtol=1e-5, atol=1e-6)
    # The 28/3 case ends each epoch with a 1-batch group: 3 updates per epoch either way.
    assert _lines(tmp_path / "a")[-1]["step"] == _lines(tmp_path / "b")[-1]["step"]


def test_grad_clipping_bounds_the_update(tmp_path: Path) -> None:
    data = ToyData(8)
    torch.manual_seed(2)
    m = ToyMethod()
    before = _params(m)
    cfg = _config(tmp_path, epochs=1, lr=1.0, grad_clip_norm=1e-3)
    Trainer(m, make_loader(data, 8), cfg).fit()
    step = torch.cat([(v - before[k]).flatten() for k, v in _params(m).items()])
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-4)
    assert _lines(tmp_path)[0]["grad_norm"] > 1e-3  # the raw norm is logged, pre-clipping


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_trains(tmp_path: Path, amp: str) -> None:
    data = ToyData(32)
    torch.manual_seed(3)
    cfg = _config(tmp_path, epochs=6, lr=0.01, optimizer="adam", amp=amp)
    Trainer(ToyMethod(), make_loader(data, 8), cfg).fit()
    losses = [r["epoch_loss"] for r in _lines(tmp_path) if "epoch_loss" in r]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1


def _resume_setup(
    tmp: Path, loader_seed: int, model_seed: int
) -> tuple[ToyMethod, Any, TrainerConfig]:
    torch.manual_seed(model_seed)
    m = ToyMethod(dropout=0.2)
    loader = make_loader(ToyData(24, augment=True), 8, shuffle=True, seed=loader_seed)
    cfg = _config(tmp, epochs=3, optimizer="adam", lr=0.01, weight_decay=1e-4, warmup_epochs=1)
    return m, loader, cfg


def test_resume_is_bit_for_bit(tmp_path: Path) -> None:
    m, loader, cfg = _resume_setup(tmp_path / "full", 123, 0)
    Trainer(m, loader, cfg).fit()
    full = _params(m)

    m, loader, cfg = _resume_setup(tmp_path / "cut", 123, 0)
    first = Trainer(m, loader, cfg, callbacks=[_StopAfter(1)]).fit()
    assert first.epochs_completed == 1

    # A fresh process would rebuild everything, with whatever initial state: the checkpoint
    # must restore weights, optimizer, schedule and every random stream.
    m2, loader2, cfg2 = _resume_setup(tmp_path / "cut", 999, 7)
    result = Trainer(m2, loader2, cfg2).fit(resume=True)
    assert result.epochs_completed == 3
    for k, v in _params(m2).items():
        assert torch.equal(v, full[k]), k
    strip = [{k: v for k, v in r.items() if k != "time"} for r in _lines(tmp_path / "full")]
    assert [{k: v for k, v in r.items() if k != "time"} for r in _lines(tmp_path / "cut")] == strip

    # Control: the data order matters, so the equality above is not vacuous.
    m3, loader3, cfg3 = _resume_setup(tmp_path / "other", 5, 0)
    Trainer(m3, loader3, cfg3).fit()
    assert any(not torch.equal(v, full[k]) for k, v in _params(m3).items())


def test_resume_from_path_skips_truncated_latest(tmp_path: Path) -> None:
    m, loader, cfg = _resume_setup(tmp_path, 1, 0)
    Trainer(m, loader, cfg, callbacks=[_StopAfter(2)]).fit()
    ckpts = tmp_path / "checkpoints"
    good = ckpts / "checkpoint-epoch0001.pt"
    latest = ckpts / "checkpoint-epoch0002.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    m2, loader2, cfg2 = _resume_setup(tmp_path, 1, 0)
    trainer = Trainer(m2, loader2, cfg2)
    with pytest.warns(UserWarning, match="checkpoint-epoch0002"):
        trainer.fit(resume=True)
    assert trainer.epoch == 3
    _m3, loader3, cfg3 = _resume_setup(tmp_path, 1, 0)
    with pytest.raises(ValueError, match=r"checkpoint-epoch0001\.pt does not fit"):
        Trainer(nn.Linear(2, 2), loader3, cfg3).fit(resume=good)  # type: ignore[arg-type]


def test_best_checkpoint_follows_evaluate_fn(tmp_path: Path) -> None:
    data = ToyData(16)
    scripted = iter([1.0, 3.0, 2.0])
    seen: list[tuple[bool, bool]] = []
    snapshots = _Snapshots()

    def evaluate(method: nn.Module) -> dict[str, float]:
        seen.append((method.training, torch.is_grad_enabled()))
        return {**recall_at_1(method, data), "R1": next(scripted)}

    m = ToyMethod()
    result = Trainer(
        m, make_loader(data, 8), _config(tmp_path, epochs=3), evaluate, [snapshots]
    ).fit()
    assert seen == [(False, False)] * 3
    assert (result.best_epoch, result.best_value) == (2, 3.0)
    assert m.training  # back in train mode after evaluation
    best, meta = _best_file(tmp_path)
    for k, v in best.items():
        assert torch.equal(v, snapshots.weights[2][k])
    assert meta["epoch"] == "2"
    assert meta["metric"] == "R1"
    assert meta["value"] == "3.0"
    evals = [r for r in _lines(tmp_path) if "val/R1" in r]
    assert [r["val/R1"] for r in evals] == [1.0, 3.0, 2.0]


@pytest.mark.parametrize(
    ("scores", "selected"),
    [([1.0, 3.0, 2.0, 0.5], 4), ([1.0, 3.0, 2.0, float("nan")], 3)],
)
def test_select_epoch_last(tmp_path: Path, scores: list[float], selected: int) -> None:
    """select_epoch="last" keeps the last finite evaluation however it compares."""
    data = ToyData(16)
    scripted = iter(scores)
    snapshots = _Snapshots()
    cfg = _config(tmp_path, epochs=4, select_epoch="last")
    result = Trainer(
        ToyMethod(), make_loader(data, 8), cfg, lambda m: {"R1": next(scripted)}, [snapshots]
    ).fit()
    assert (result.best_epoch, result.best_value) == (selected, scores[selected - 1])
    best, meta = _best_file(tmp_path)
    for k, v in best.items():
        assert torch.equal(v, snapshots.weights[selected][k])
    assert meta["epoch"] == str(selected)


def test_select_mode_min_and_eval_every(tmp_path: Path) -> None:
    values = iter([5.0, 4.0])
    cfg = _config(tmp_path, epochs=3, eval_every=2, select_metric="loss", select_mode="min")
    result = Trainer(
        ToyMethod(), make_loader(ToyData(8), 8), cfg, lambda m: {"loss": next(values)}
    ).fit()
    # Evaluated after epoch 2 and after the last epoch (3).
    assert (result.best_epoch, result.best_value) == (3, 4.0)


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        ({"R5": 1.0}, r"evaluate_fn returned \['R5'\] but select_metric is 'R1'"),
        ([1.0], "evaluate_fn must return a dict of floats, got list"),
        ({"R1": "high"}, "evaluate_fn returned a non-numeric metric"),
    ],
)
def test_bad_evaluate_fn(tmp_path: Path, returned: object, match: str) -> None:
    trainer = Trainer(
        ToyMethod(), make_loader(ToyData(8), 8), _config(tmp_path), lambda m: returned
    )  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match=match):
        trainer.fit()


def test_metrics_jsonl_contents(tmp_path: Path) -> None:
    data = ToyData(16)
    cfg = _config(
        tmp_path,
        epochs=3,
        lr=0.1,
        warmup_epochs=1,
        warmup_start_factor=0.5,
        schedule="cosine",
        log_every=2,
    )
    Trainer(ToyMethod(), make_loader(data, 4), cfg, lambda m: recall_at_1(m, data)).fit()
    lines = _lines(tmp_path)
    steps = [r for r in lines if "loss" in r]
    epochs = [r for r in lines if "epoch_loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["step"] for r in epochs] == [4, 8, 12]
    for r in steps + epochs:
        expected = lr_at(r["epoch"] - 1, base_lr=0.1, total=3, warmup=1, warmup_start_factor=0.5)
        assert r["lr"] == pytest.approx(expected)
        assert r["time"] >= 0
    assert set(steps[0]) == {"epoch", "step", "lr", "loss", "loss/i2t", "loss/t2i", "time"}
    assert {"epoch_loss", "epoch_loss/i2t", "val/R1"} <= set(epochs[0])
    # Two windows of two batches make up each epoch's mean.
    for e, r in enumerate(epochs):
        assert r["epoch_loss"] == pytest.approx(
            (steps[2 * e]["loss"] + steps[2 * e + 1]["loss"]) / 2
        )
        assert r["epoch_loss"] == pytest.approx(r["epoch_loss/i2t"] + r["epoch_loss/t2i"])


def test_per_step_schedule(tmp_path: Path) -> None:
    lrs: list[float] = []

    class Rec(Callback):
        def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
            lrs.append(record["lr"])

    cfg = _config(
        tmp_path, epochs=2, warmup_epochs=1, schedule="cosine", schedule_unit="step", lr=1.0
    )
    Trainer(ToyMethod(), make_loader(ToyData(12), 4), cfg, callbacks=[Rec()]).fit()
    assert lrs == pytest.approx([lr_at(t, base_lr=1.0, total=6, warmup=3) for t in range(6)])


def test_param_rules_and_set_epoch_reach_training(tmp_path: Path) -> None:
    class Sampler(torch.utils.data.Sampler[int]):
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(8))

        def __len__(self) -> int:
            return 8

    sampler = Sampler()
    loader = make_loader(ToyData(8), 4, sampler=sampler)
    cfg = _config(tmp_path, epochs=3, param_rules=(ParamRule("text_*", 0.0),))
    m = ToyMethod()
    before = _params(m)
    trainer = Trainer(m, loader, cfg)
    trainer.fit()
    assert sampler.epochs == [0, 1, 2]
    after = _params(m)
    assert torch.equal(after["text_proj.weight"], before["text_proj.weight"])  # lr_mult 0
    assert not torch.equal(after["image_proj.weight"], before["image_proj.weight"])


def test_fresh_run_refuses_existing_checkpoints(tmp_path: Path) -> None:
    loader = make_loader(ToyData(8), 8)
    Trainer(ToyMethod(), loader, _config(tmp_path, epochs=1)).fit()
    with pytest.raises(ValueError, match="already holds 1 checkpoint"):
        Trainer(ToyMethod(), loader, _config(tmp_path, epochs=1)).fit()
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        Trainer(ToyMethod(), loader, _config(tmp_path, epochs=1)).fit(resume=tmp_path / "x.pt")


def test_keep_last_prunes(tmp_path: Path) -> None:
    result = Trainer(
        ToyMethod(), make_loader(ToyData(8), 8), _config(tmp_path, epochs=4, keep_last=2)
    ).fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint-epoch0003.pt", "checkpoint-epoch0004.pt"]
    assert result.last_checkpoint == tmp_path / "checkpoints" / "checkpoint-epoch0004.pt"


def test_resume_true_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    result = Trainer(ToyMethod(), make_loader(ToyData(8), 8), _config(tmp_path)).fit(resume=True)
    assert result.epochs_completed == 2


class _NoTotal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.w.sum()


def test_trainer_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    loader = make_loader(ToyData(8), 8)
    with pytest.raises(
        TypeError, match=r"Trainer: method must be a torch\.nn\.Module, got function"
    ):
        Trainer(lambda b: b, loader, cfg)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Trainer: config must be a TrainerConfig, got dict"):
        Trainer(ToyMethod(), loader, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_loader must have a length"):
        Trainer(ToyMethod(), (b for b in loader), cfg)
    with pytest.raises(ValueError, match="train_loader yields no batches"):
        Trainer(ToyMethod(), [], cfg)
    with pytest.raises(TypeError, match="batches must be dicts of tensors, got list"):
        Trainer(ToyMethod(), [[torch.zeros(1)]], cfg).fit()
    with pytest.raises(
        TypeError, match="must return a LossOutput whose total is a floating scalar"
    ):
        Trainer(_NoTotal(), [{"x": torch.zeros(1)}], _config(tmp_path / "b")).fit()


def test_loss_output_terms_are_optional(tmp_path: Path) -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, batch: dict[str, torch.Tensor]) -> LossOutput:
            return LossOutput((self.w * batch["x"]).pow(2).sum(), {})

    m = Plain()
    Trainer(m, [{"x": torch.ones(1)}], _config(tmp_path, epochs=1, lr=0.25)).fit()
    assert float(m.w.detach()) == pytest.approx(0.5)  # w - lr * 2w


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"epochs": 2.0}, TypeError, "epochs must be an int, got float"),
        ({"warmup_epochs": 5, "epochs": 5}, ValueError, r"warmup_epochs \(5\) must be smaller"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"amp": "fp8"}, ValueError, "amp must be one of"),
        ({"optimizer": "lion"}, ValueError, "optimizer must be one of"),
        ({"schedule_unit": "batch"}, ValueError, "schedule_unit must be one of"),
        ({"select_mode": "best"}, ValueError, "select_mode must be one of"),
        ({"select_epoch": "first"}, ValueError, "select_epoch must be one of"),
        ({"grad_clip_norm": -1.0}, ValueError, "grad_clip_norm must be > 0"),
        ({"warmup_start_factor": 2.0}, ValueError, r"warmup_start_factor must be in \[0, 1\]"),
        ({"param_rules": ("bias",)}, TypeError, "param_rules must hold ParamRule objects, got str"),
    ],
)
def test_config_errors(kw: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=f"TrainerConfig: {match}"):
        TrainerConfig(**kw)


def test_config_dict_round_trip() -> None:
    cfg = TrainerConfig(
        param_rules=(ParamRule("cross", 5.0), ParamRule("bias", 2.0, 0.0)), eps=1e-3
    )
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrainerConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"from_dict: unknown keys \['epoch'\]"):
        TrainerConfig.from_dict({"epoch": 3})


def test_evaluate_fn_exception_propagates(tmp_path: Path) -> None:
    def boom(m: nn.Module) -> dict[str, float]:
        raise RuntimeError("gallery missing")

    trainer = Trainer(ToyMethod(), make_loader(ToyData(8), 8), _config(tmp_path), boom)
    with pytest.raises(RuntimeError, match="gallery missing"):
        trainer.fit()
    assert trainer.method.training


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    cfg = _config(tmp_path, epochs=1, tensorboard=True)
    Trainer(ToyMethod(), make_loader(ToyData(8), 8), cfg).fit()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert not (tmp_path / "tensorboard").exists()
    else:
        assert any((tmp_path / "tensorboard").iterdir())
    assert len(_lines(tmp_path)) == 2
