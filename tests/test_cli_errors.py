"""The command line turns OSErrors into one readable line (the traceback only with --debug)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import textreid.data.synthetic
from textreid.cli import main


def _fail_with(exc: OSError) -> object:
    def writer(*args: object, **kwargs: object) -> Path:
        raise exc

    return writer


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_output_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    root = blocker / "synth"
    assert main(["synth", str(root), "--identities", "10"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"textreid synth: error: {root}")
    assert line.endswith(f": {os.strerror(errno.ENOTDIR)} (ENOTDIR)")


def test_disk_full_without_a_path_names_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        textreid.data.synthetic, "write_synthpedes", _fail_with(OSError(errno.ENOSPC))
    )
    assert main(["synth", str(tmp_path / "out")]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"textreid synth: error: while writing {tmp_path / 'out'}: "
        f"{os.strerror(errno.ENOSPC)} (ENOSPC)"
    )


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/run/model.safetensors"),
        OSError(errno.EROFS, os.strerror(errno.EROFS), "/data/run/model.safetensors"),
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/model.safetensors"),
    ],
)
def test_os_error_with_a_path(
    exc: OSError,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", _fail_with(exc))
    assert main(["synth", str(tmp_path / "out")]) == 2
    name = errno.errorcode[exc.errno or 0]
    assert _one_error_line(capsys.readouterr().err) == (
        f"textreid synth: error: /data/run/model.safetensors: {exc.strerror} ({name})"
    )


def test_rename_names_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exc = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a/tmp", None, "/b/final")
    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", _fail_with(exc))
    assert main(["synth", str(tmp_path / "out")]) == 2
    assert _one_error_line(capsys.readouterr().err).endswith(
        f"error: /a/tmp -> /b/final: {os.strerror(errno.EXDEV)} (EXDEV)"
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_exception(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        textreid.data.synthetic, "write_synthpedes", _fail_with(OSError(errno.ENOSPC))
    )
    command = ["synth", str(tmp_path / "out")]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    with pytest.raises(OSError) as info:
        main(argv)
    assert info.value.args == (errno.ENOSPC,)


def test_our_own_file_errors_keep_their_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exc = FileExistsError("write_synthpedes: it already exists; pass overwrite=True")
    monkeypatch.setattr(textreid.data.synthetic, "write_synthpedes", _fail_with(exc))
    assert main(["synth", str(tmp_path / "out")]) == 2
    # The remedy is spelled as the option to use, not as the Python argument.
    assert _one_error_line(capsys.readouterr().err) == (
        "textreid synth: error: write_synthpedes: it already exists; pass --overwrite"
    )
