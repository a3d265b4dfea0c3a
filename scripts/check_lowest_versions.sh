#!/usr/bin/env bash
# Release check: are the dependency floors in pyproject.toml true?
#
# Installs, in a fresh virtual environment on the lowest Python that `requires-python` allows,
# exactly the lowest version of every runtime dependency and of the `test` extra (each must be
# declared as `name>=X`), then textreid itself without dependencies, then runs the test suite
# (tests of optional integrations skip). Any failure means a floor is false: raise it, or make
# the code work there.
#
# Usage: scripts/check_lowest_versions.sh [pytest arguments]
#   PYTHON=/path/to/python3.10  the interpreter to use (default: python<lowest> on PATH)
#   VENV=DIR                    where the environment goes (recreated on every run; default
#                               a folder under ${TMPDIR:-/tmp})
# Needs the package index (the lowest torch is a CUDA build on PyPI: a few GB to download).
set -euo pipefail
cd "$(dirname "$0")/.."

# The floors, read with the standard library's TOML parser (Python >= 3.11 runs this part).
read_floors() {
  python3 - "$@" <<'EOF'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
if sys.argv[1] == "python":
    m = re.fullmatch(r">=\s*(\d+\.\d+)", project["requires-python"].strip())
    if not m:
        sys.exit(f"requires-python must be '>=X.Y', got {project['requires-python']!r}")
    print(m.group(1))
    sys.exit()
pins = []
for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9.]*)", spec.strip())
    if not m:
        sys.exit(f"every dependency needs a plain floor 'name>=X' to be checked, got {spec!r}")
    pins.append(f"{m.group(1)}=={m.group(2)}")
print("\n".join(pins))
EOF
}

lowest_python=$(read_floors python)
python=${PYTHON:-python${lowest_python}}
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ "$have" != "$lowest_python" ]]; then
  echo "check_lowest_versions: $python is Python $have, requires-python's floor is $lowest_python" >&2
  exit 2
fi
venv=${VENV:-${TMPDIR:-/tmp}/textreid-lowest-venv}
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
read_floors deps >"$pins"

echo "Python $have; pinned to the floors:"
sed 's/^/  /' "$pins"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The pins are a constraint as well as a requirement, so that no other package pulls a
# pinned one above its floor.
"$venv/bin/python" -m pip install -q -r "$pins" -c "$pins"
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" -m pip check
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|numpy|pillow|safetensors|huggingface.hub) '
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
