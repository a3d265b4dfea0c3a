"""The command line as users meet it: help, speed, options reaching training, errors, Ctrl-C."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import textreid.data.synthetic
import textreid.pipeline
from textreid.cli import build_parser, main
from textreid.cli._common import HelpFormatter, image_file_name
from textreid.cli._main import _as_options
from textreid.cli._recipes import SECONDS_PER_EPOCH
from textreid.recipes import get_recipe
from textreid.training import TrainingInterrupted

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["demo", "train", "eval", "search", "index", "synth", "convert", "recipes"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


class _Recorder:
    """Stands in for train_recipe: records its arguments, or raises what it is given."""

    def __init__(self, raises: BaseException | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.raises = raises

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.raises is not None:
            raise self.raises
        return types.SimpleNamespace(test_metrics=None)  # as on a torchrun rank > 0


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(textreid.pipeline, "train_recipe", recorder)
    return recorder


TRAIN = ["train", "--recipe", "tiny-irra", "--data", "d"]


# --- help -----------------------------------------------------------------------------------


def test_every_option_of_every_command_says_its_default() -> None:
    commands = _subparsers(build_parser())
    assert sorted(commands) == sorted(COMMANDS)
    missing = []
    for name, parser in commands.items():
        formatter = HelpFormatter(prog=name)
        for action in parser._actions:
            if not action.option_strings:
                if not action.help:
                    missing.append(f"{name} {action.dest}: no help")
                continue
            if action.default is argparse.SUPPRESS and action.dest != "debug":
                continue  # --help
            text = formatter._get_help_string(action) % {"default": action.default}
            if not action.help or not ("default" in text or "(required)" in text):
                missing.append(f"{name} {action.option_strings[0]}: {text!r}")
            if "default: None" in text:
                missing.append(f"{name} {action.option_strings[0]}: says 'default: None'")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: " in out
    if command in ("demo", "train"):
        for option in ("--batch-size", "--lr", "--epochs", "--amp", "--config", "--seed"):
            assert option in out
        assert "--quiet" in out
        assert "--verbose" in out
    if command == "demo":
        assert "output folder (default: demo-run)" in out


def test_demo_out_default_is_the_docs_folder() -> None:
    args = build_parser().parse_args(["demo"])
    assert args.out == "demo-run"
    for doc in ("README.md", "docs/getting-started.md"):
        assert "textreid demo --out demo-run" in (ROOT / doc).read_text()


def test_help_imports_no_torch() -> None:
    # torch's import is what made `textreid --help` take seconds: it must not happen at all.
    code = (
        "import sys\n"
        "import textreid.cli\n"
        "assert 'torch' not in sys.modules, 'import textreid.cli imported torch'\n"
        "from textreid.cli import main\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {COMMANDS!r}]]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"


def test_lazy_package_keeps_its_names() -> None:
    # Every name of __all__ resolving (which imports torch) is checked by test_public_api.py.
    code = (
        "import sys, textreid\n"
        "assert 'torch' not in sys.modules\n"
        "assert set(textreid.__all__) <= set(dir(textreid))\n"
        "try:\n"
        "    textreid.no_such_name\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "module 'textreid' has no attribute 'no_such_name'"


# --- options reaching the training ----------------------------------------------------------


def test_train_options_reach_train_recipe(fake_train: _Recorder) -> None:
    argv = [*TRAIN, "--epochs", "3", "--batch-size", "8", "--lr", "2e-4", "--amp", "bf16"]
    assert main([*argv, "--quiet", "--no-progress", "--seed", "5"]) == 0
    kwargs = fake_train.calls[0][1]
    assert (kwargs["epochs"], kwargs["batch_size"], kwargs["lr"], kwargs["amp"]) == (
        3,
        8,
        2e-4,
        "bf16",
    )
    assert (kwargs["verbosity"], kwargs["progress"], kwargs["seed"]) == (0, False, 5)
    assert main([*TRAIN, "--verbose"]) == 0
    assert fake_train.calls[1][1]["verbosity"] == 2
    assert main(TRAIN) == 0
    defaults = fake_train.calls[2][1]
    assert defaults["verbosity"] is None
    assert defaults["overrides"] is None


def test_demo_shares_the_training_options(
    fake_train: _Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", lambda *a, **k: None)
    argv = ["demo", "--out", str(tmp_path), "--lr", "0.01", "--batch-size", "16", "--verbose"]
    assert main(argv) == 0
    kwargs = fake_train.calls[0][1]
    assert (kwargs["lr"], kwargs["batch_size"], kwargs["verbosity"]) == (0.01, 16, 2)


def test_quiet_and_verbose_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*TRAIN, "--quiet", "--verbose"])
    assert info.value.code == 2
    assert "not allowed with argument --quiet" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_config_file_reaches_train_recipe(fake_train: _Recorder, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"settings.{kind}"
    if kind == "json":
        path.write_text(json.dumps({"trainer.weight_decay": 0.01, "data": {"num_workers": 2}}))
    else:
        path.write_text('"trainer.weight_decay" = 0.01\n[data]\nnum_workers = 2\n')
    assert main([*TRAIN, "--config", str(path)]) == 0
    assert fake_train.calls[0][1]["overrides"] == {
        "trainer.weight_decay": 0.01,
        "data": {"num_workers": 2},
    }


def test_train_recipe_builds_the_trainer_with_the_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real train_recipe up to the Trainer: command line and config file meet in its config.
    textreid.data.synthetic.write_synthpedes(tmp_path / "data", num_identities=20)
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_trainer(method: Any, loader: Any, config: Any, **kwargs: Any) -> Any:
        seen.update(config=config, batch_size=loader.batch_size)
        raise Stop

    monkeypatch.setattr(textreid.pipeline, "Trainer", fake_trainer)
    config = tmp_path / "c.toml"
    config.write_text("[trainer]\nweight_decay = 0.5\nlr = 1.0\nepochs = 2\n")
    argv = ["train", "--recipe", "tiny-irra", "--data", str(tmp_path / "data")]
    argv += ["--dataset", "synthpedes", "--output", str(tmp_path / "run"), "--lr", "0.003"]
    argv += ["--batch-size", "8", "--amp", "none", "--quiet", "--config", str(config)]
    with pytest.raises(Stop):
        main(argv)
    cfg = seen["config"]
    assert seen["batch_size"] == 8
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.amp, cfg.verbosity) == (
        0.003,  # the option wins over the file
        0.5,
        2,
        "none",
        0,
    )
    assert cfg.warmup_epochs == min(get_recipe("tiny-irra").trainer.warmup_epochs, 1)
    assert cfg.output_dir == str(tmp_path / "run")


def test_apply_overrides_dotted_and_nested() -> None:
    recipe = get_recipe("tiny-irra")
    out = textreid.pipeline.apply_overrides(
        recipe,
        {
            "trainer.lr": 1,  # an int where a float is expected: fine
            "trainer": {"betas": [0.8, 0.9]},
            "data.image_size": [64, 32],
            "method_kwargs.temperature": 0.05,
        },
    )
    assert out.trainer.lr == 1.0
    assert isinstance(out.trainer.lr, float)
    assert out.trainer.betas == (0.8, 0.9)
    assert out.data.image_size == (64, 32)
    assert out.method_kwargs == {**recipe.method_kwargs, "temperature": 0.05}
    assert out.trainer.epochs == recipe.trainer.epochs
    assert recipe.trainer.lr != 1.0  # the registered recipe is untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trainer.lrr": 1e-4}, r"unknown override key 'trainer.lrr'; valid keys under 'trainer'"),
        ({"trainerr.lr": 1e-4}, r"unknown override key 'trainerr'; valid keys at the top level"),
        ({"trainer.epochs": "3"}, r"'trainer.epochs' must be int \(like \d+\), got str '3'"),
        ({"trainer.epochs": 2.5}, r"'trainer.epochs' must be int"),
        ({"trainer.betas": [0.9]}, r"'trainer.betas' must have 2 entries"),
        ({"trainer": 3}, r"'trainer' must be a table of TrainerConfig settings"),
        ({"trainer.output_dir": "x"}, r"'trainer.output_dir' cannot be overridden; .*output_dir"),
        ({"trainer.lr": 1, "trainer.lr.x": 2}, r"'trainer.lr' both to a value and to a table"),
        ({"trainer.epochs": 0}, r"TrainerConfig: epochs"),
    ],
)
def test_bad_overrides_are_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        textreid.pipeline.apply_overrides(get_recipe("tiny-irra"), overrides)


def test_unknown_config_key_names_the_file_and_the_valid_keys(
    fake_train: _Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"trainer.lrr": 0.1}')
    assert main([*TRAIN, "--config", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"textreid train: error: --config {path}: ")
    assert "unknown override key 'trainer.lrr'; valid keys under 'trainer': " in line
    assert ", lr, " in line
    assert not fake_train.calls  # refused before any work


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.json", "{not json", "not valid JSON"),
        ("c.toml", "x = = 1", "not valid TOML"),
        ("c.json", "[1, 2]", "expected an object of settings, got list"),
        ("c.yaml", "a: 1", "expected a .json or .toml file, got .yaml"),
    ],
)
def test_bad_config_files(
    fake_train: _Recorder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert main([*TRAIN, "--config", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"textreid train: error: --config {path}: {message}")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag", "problem"),
    [
        (["search", "m", "--text", "a", "--gallery", "g", "--k", "0"], "--k", ">= 1, got 0"),
        (["search", "m", "--text", "a", "--gallery", "g", "--k", "-3"], "--k", ">= 1, got -3"),
        ([*TRAIN, "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
        ([*TRAIN, "--lr", "0"], "--lr", "number > 0, got 0"),
        ([*TRAIN, "--lr", "nan"], "--lr", "number > 0, got nan"),
        ([*TRAIN, "--epochs", "two"], "--epochs", "must be an integer, got 'two'"),
        ([*TRAIN, "--seed", "-1"], "--seed", ">= 0, got -1"),
        ([*TRAIN, "--amp", "fp8"], "--amp", "invalid choice: 'fp8'"),
        (["synth", "x", "--identities", "0"], "--identities", ">= 1, got 0"),
    ],
)
def test_bad_values_are_refused_by_argparse_naming_the_flag(
    argv: list[str], flag: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"textreid {argv[0]}: error: argument {flag}")
    assert problem in last


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Trainer.fit: runs/x already holds 2 checkpoint(s); pass resume=True to continue "
            "that run or choose another output_dir",
            "Trainer.fit: runs/x already holds 2 checkpoint(s); pass --resume to continue "
            "that run or choose another --output",
        ),
        (
            "read_cuhk_pedes: /d/x_y=1 holds SynthPEDES; read it with dataset='synthpedes'",
            "read_cuhk_pedes: /d/x_y=1 holds SynthPEDES; read it with --dataset synthpedes",
        ),
        ("pass progress=False", "pass --no-progress"),
        ("pass select_on_test=True (IRRA)", "pass --select-on-test (IRRA)"),
        ("epochs=3 and batch_size=8", "--epochs 3 and --batch-size 8"),
        # Not options of train: left alone.
        ("pass truncate=True; see write_synthpedes", "pass truncate=True; see write_synthpedes"),
    ],
)
def test_python_argument_names_become_options(message: str, expected: str) -> None:
    parser = _subparsers(build_parser())["train"]
    assert _as_options(message, parser) == expected


def test_output_dir_is_each_command_s_output_option() -> None:
    commands = _subparsers(build_parser())
    message = "choose another output_dir"
    assert _as_options(message, commands["train"]) == "choose another --output"
    assert _as_options(message, commands["demo"]) == "choose another --out"
    assert _as_options(message, commands["eval"]) == message  # eval writes nothing


def test_value_error_from_the_library_names_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = ValueError(
        "Trainer.fit: runs/x/checkpoints already holds 1 checkpoint(s); pass resume=True to "
        "continue that run or choose another output_dir"
    )
    monkeypatch.setattr(textreid.pipeline, "train_recipe", _Recorder(error))
    assert main(TRAIN) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("textreid train: error: Trainer.fit: ")
    assert "pass --resume to continue" in line
    assert "another --output" in line
    assert "resume=True" not in line


def test_type_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(textreid.pipeline, "train_recipe", _Recorder(TypeError("bad type")))
    assert main(TRAIN) == 2
    assert _one_line(capsys.readouterr().err) == "textreid train: error: bad type"


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textreid.pipeline, "train_recipe", _Recorder(ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        main([*TRAIN, "--debug"])


def test_a_synthpedes_folder_is_not_read_as_cuhk_pedes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    textreid.data.synthetic.write_synthpedes(tmp_path, num_identities=20)
    with pytest.raises(ValueError, match=r"holds SynthPEDES .* not CUHK-PEDES"):
        textreid.data.build_dataset("cuhk-pedes", tmp_path)
    assert textreid.data.build_dataset("synthpedes", tmp_path).name == "synthpedes"
    # The reader of the format still reads it: SynthPEDES is in the CUHK-PEDES format.
    assert textreid.data.read_cuhk_pedes(tmp_path).num_classes > 0
    # The CLI's default --dataset is cuhk-pedes: the error says which flag to give.
    argv = ["train", "--recipe", "tiny-irra", "--data", str(tmp_path)]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("textreid train: error: build_dataset: ")
    assert line.endswith("read it with --dataset synthpedes")


# --- devices --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_refused_before_any_work(
    device: str,
    fake_train: _Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*TRAIN, "--device", device]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"textreid train: error: --device {device}: CUDA is not available")
    assert "use --device cpu" in line
    assert not fake_train.calls


def test_missing_cuda_index_and_bad_device_names(
    fake_train: _Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main([*TRAIN, "--device", "cuda:2"]) == 2
    assert _one_line(capsys.readouterr().err).endswith(
        "--device cuda:2: only 2 CUDA device(s) are visible (cuda:0 to cuda:1)"
    )
    assert main([*TRAIN, "--device", "gpu"]) == 2
    assert "--device 'gpu' is not a device name" in _one_line(capsys.readouterr().err)
    assert main([*TRAIN, "--device", "cpu"]) == 0
    assert fake_train.calls[0][1]["device"] == "cpu"


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_during_training_says_what_was_kept_and_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = Path("runs/x/checkpoints/checkpoint-epoch0003.pt")
    stop = TrainingInterrupted(Path("runs/x"), ckpt, 3)
    monkeypatch.setattr(textreid.pipeline, "train_recipe", _Recorder(stop))
    argv = [*TRAIN, "--output", "runs/x", "--lr", "1e-4"]
    assert main(argv) == 130
    assert _one_line(capsys.readouterr().err) == (
        f"textreid train: interrupted after 3 complete epoch(s); kept {ckpt}; resume with: "
        "textreid train --recipe tiny-irra --data d --output runs/x --lr 1e-4 --resume"
    )
    # Interrupted again while resuming: the command is not given --resume twice.
    assert main([*argv, "--resume"]) == 130
    assert capsys.readouterr().err.count("--resume") == 1


def test_ctrl_c_before_the_first_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = TrainingInterrupted(tmp_path / "demo" / "run", None, 0)
    monkeypatch.setattr(textreid.pipeline, "train_recipe", _Recorder(stop))
    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", lambda *a, **k: None)
    argv = ["demo", "--out", str(tmp_path / "demo")]
    assert main(argv) == 130
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("textreid demo: interrupted after 0 complete epoch(s); no checkpoint")
    assert line.endswith(f"start again with: textreid demo --out {tmp_path / 'demo'}")


def test_plain_ctrl_c_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", interrupted)
    assert main(["synth", str(tmp_path)]) == 130
    assert _one_line(capsys.readouterr().err) == "textreid synth: interrupted"
    with pytest.raises(KeyboardInterrupt):
        main(["synth", str(tmp_path), "--debug"])


# --- search, index, recipes -----------------------------------------------------------------


def test_grid_names_get_an_image_extension() -> None:
    assert image_file_name("grid", "--out") == Path("grid.png")
    assert image_file_name("out/grid.JPG", "--out") == Path("out/grid.JPG")
    with pytest.raises(ValueError, match=r"--out grid.txt: .txt is not an image format"):
        image_file_name("grid.txt", "--out")


def test_search_refuses_a_grid_name_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", str(tmp_path / "missing"), "--text", "a", "--gallery", str(tmp_path)]
    assert main([*argv, "--out", "grid.txt"]) == 2
    assert "error: --out grid.txt: .txt is not an image format" in capsys.readouterr().err


def test_index_calls_index_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def index_folder(model: str, images: str, out: str, **kwargs: Any) -> Path:
        seen.update(model=model, images=images, out=out, **kwargs)
        return Path(out)

    module = types.ModuleType("textreid.indexing")
    module.index_folder = index_folder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "textreid.indexing", module)
    argv = ["index", "m", "imgs", "--out", "idx", "--shard-size", "10", "--no-resume"]
    assert main([*argv, "--no-progress"]) == 0
    assert seen == {
        "model": "m",
        "images": "imgs",
        "out": "idx",
        "shard_size": 10,
        "batch_size": 64,
        "device": None,
        "resume": False,
        "progress": False,
    }
    assert capsys.readouterr().out.strip() == "index written to idx"


def test_recipes_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["recipe", "method", "epochs", "batch", "lr", "image"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    for name in ("tiny-irra", "irra"):
        r = get_recipe(name)
        size = f"{r.data.image_size[0]}x{r.data.image_size[1]}"
        assert rows[name][1:6] == [
            r.method,
            str(r.trainer.epochs),
            str(r.data.batch_size),
            f"{r.trainer.lr:g}",
            size,
        ]
    assert rows["irra"][6] == "GPU"
    minutes = SECONDS_PER_EPOCH["tiny-irra"] * get_recipe("tiny-irra").trainer.epochs / 60
    assert " ".join(rows["tiny-irra"][6:]) == f"~{minutes:.0f} min"


def test_recipe_times_are_the_documented_measurements() -> None:
    text = (ROOT / "docs" / "recipes.md").read_text()
    section = text.split("## All tiny recipes at equal budget", 1)[1]
    epochs = int(re.search(r"--epochs (\d+)", section).group(1))  # type: ignore[union-attr]
    measured = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("tiny-"):
            measured[cells[0]] = round(float(cells[7]) / epochs, 1)
    assert measured == SECONDS_PER_EPOCH
