#!/usr/bin/env bash
# The README's first command: pack the bundled example and unpack it offline, step by step.
#
#   scripts/demo.sh                              fresh venv + `pip install .`; rattler backend
#   PYTHON=/path/to/python scripts/demo.sh       use that interpreter as it is (the project must be
#                                                installed in it); conda backend when conda imports
#   INSTALLER=rattler|conda                      force a backend
#   KEEP=1                                       keep the temporary folder and print its path
#
# Only `pip install .` talks to the network (PyPI); packing and unpacking the demo are offline.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/conda-pixi-pack-demo.XXXXXX")"
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "==> Kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
run() {
    printf '$ %s\n' "$*"
    "$@"
}

if [[ -n "${PYTHON:-}" ]]; then
    step "Using the existing interpreter $PYTHON"
    PY="$PYTHON"
    run "$PY" -c "import conda_pixi_pack" || {
        echo "error: conda_pixi_pack is not importable by $PY; run \`$PY -m pip install -e $ROOT\` first" >&2
        exit 1
    }
    CLI=("$PY" -m conda_pixi_pack)
else
    step "Creating a virtual environment in $WORK/venv"
    run "${BOOTSTRAP_PYTHON:-python3}" -m venv "$WORK/venv"
    PY="$WORK/venv/bin/python"
    step "Installing conda-pixi-pack into it (pip install .)"
    run "$PY" -m pip install --quiet --disable-pip-version-check "$ROOT"
    CLI=("$WORK/venv/bin/conda-pixi-pack")
fi

if [[ -z "${INSTALLER:-}" ]]; then
    if "$PY" -c "import conda" 2>/dev/null; then INSTALLER=conda; else INSTALLER=rattler; fi
fi

step "Packing examples/demo (a pixi.lock whose packages are paths relative to it)"
run "${CLI[@]}" pack "$ROOT/examples/demo" -o "$WORK/environment.tar"

step "Unpacking it offline with the $INSTALLER backend"
# A private package cache, and (conda) no entry in ~/.conda/environments.txt for an environment
# removed at the end: the demo leaves nothing behind in the user's conda setup.
export CONDA_REGISTER_ENVS=false
run "${CLI[@]}" unpack "$WORK/environment.tar" -o "$WORK/out" --installer "$INSTALLER" --pkgs-dir "$WORK/pkgs"

step "Activating the environment (source $WORK/out/activate.sh)"
# shellcheck disable=SC1091
source "$WORK/out/activate.sh"
echo "CONDA_PREFIX=$CONDA_PREFIX"

step "Running demo-greet from the environment"
output="$(demo-greet)"
echo "$output"

step "Checking what a user would check"
expected_prefix="$WORK/out/env"
if [[ "$(command -v demo-greet)" != "$expected_prefix/bin/demo-greet" ]]; then
    echo "error: demo-greet was found at $(command -v demo-greet), not in $expected_prefix" >&2
    exit 1
fi
if ! grep -qF "lives in $expected_prefix" <<<"$output"; then
    echo "error: the prefix placeholder was not replaced by $expected_prefix" >&2
    exit 1
fi
if ! grep -qF "hello from etc/conda/activate.d/demo-greet.sh" <<<"$output"; then
    echo "error: the activate.d script did not run when activate.sh was sourced" >&2
    exit 1
fi
echo "ok: program on PATH, prefix placeholder replaced, activate.d script ran ($INSTALLER backend)"
