#!/usr/bin/env bash
# The test suite (`make test`) under the oldest and newest Pythons the project supports, each in
# its own venv (.venv-<version>), besides the default interpreter's run.
#
#   scripts/test-pythons.sh              Python 3.10 and 3.13
#   PYTHON_VERSIONS="3.12" scripts/...   other versions
#
# Each interpreter is `python<version>` when it runs, else pyenv's newest <version>.x; a version
# with neither is reported and skipped (a machine may lack it), any test failure fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

find_python() {
    local version="$1" candidate
    if candidate="$(command -v "python$version")" && "$candidate" -c '' 2>/dev/null; then
        echo "$candidate"
        return
    fi
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for candidate in $(printf '%s\n' "$root/versions/$version".* | sort -V -r); do
        if [[ -x "$candidate/bin/python" ]]; then
            echo "$candidate/bin/python"
            return
        fi
    done
}

for version in ${PYTHON_VERSIONS:-3.10 3.13}; do
    python="$(find_python "$version")"
    if [[ -z "$python" ]]; then
        echo "==> Python $version: no interpreter found, skipped"
        continue
    fi
    echo "==> Python $version: $python"
    make test VENV=".venv-$version" BOOTSTRAP_PYTHON="$python"
done
