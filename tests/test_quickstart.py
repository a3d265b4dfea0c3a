"""The README's two quick-start commands are exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_quick_start_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README quick start has no bash block"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README command: {command}"
    # Install + main job first, the test suite last.
    assert ci_lines.index(commands[0]) < ci_lines.index(commands[1])
    assert ci_lines[-1] == commands[1]
