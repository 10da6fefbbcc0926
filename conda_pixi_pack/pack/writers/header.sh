#!/bin/sh
# shellcheck disable=SC2016,SC2317 # activation lines are written literally; the payload follows exit
# conda-pixi-pack self-extracting pack (format 1), written by conda-pixi-pack @@TOOL_VERSION@@.
#
# Run it with:  sh @@SCRIPT_NAME@@ [-o DIR] [-e NAME] [-n NAME | -p PATH] [-s SHELL]   (-h: help)
#
# This file is this script, then (when one was embedded) an installer program, then the pack: a
# plain tar in pixi-pack's format "1" that starts at byte CPP_ARCHIVE_OFFSET and runs to the end
# of the file. `conda-pixi-pack unpack` and `conda-pixi-pack inspect` read the file as it is;
# `tail -c +$((CPP_ARCHIVE_OFFSET + 1)) @@SCRIPT_NAME@@ | tar -xf -` extracts the pack by hand.
set -u

CPP_TOOL_VERSION='@@TOOL_VERSION@@'
CPP_PLATFORM='@@PLATFORM@@'
CPP_PACKAGES=@@PACKAGES@@
CPP_WHEELS='@@WHEELS@@'
CPP_HAS_PIP=@@HAS_PIP@@
CPP_UNPACKER_KIND='@@UNPACKER_KIND@@'
CPP_UNPACKER_OFFSET=@@UNPACKER_OFFSET@@
CPP_UNPACKER_SIZE=@@UNPACKER_SIZE@@
CPP_ARCHIVE_OFFSET=@@ARCHIVE_OFFSET@@
CPP_ARCHIVE_SIZE=@@ARCHIVE_SIZE@@

cpp_usage() {
    cat <<EOF
Usage: sh $0 [-o DIR] [-e NAME] [-n NAME | -p PATH] [-s SHELL] [-h]

Create the conda environment packed in this file ($CPP_PLATFORM, $CPP_PACKAGES conda packages,
written by conda-pixi-pack $CPP_TOOL_VERSION), offline, and write an activation script for it.

  -o DIR    where the environment (DIR/NAME) and activate.<ext> go (default: the current folder)
  -e NAME   name of the environment's folder inside DIR (default: env)
  -n NAME   create a named conda environment instead (conda's envs directories)
  -p PATH   create the environment at PATH instead (-o still says where activate.<ext> goes)
  -s SHELL  shell of the activation script: bash, zsh, fish or xonsh (default: bash)
  -h        show this help

It installs with the first of these that is available, and says which:
  1. the installer embedded in this file when it was packed (--unpacker-source)
  2. conda-pixi-pack, or \`conda pixi-pack\`, on PATH
  3. micromamba, mamba or conda on PATH (offline, the exact package list, no solver)
EOF
}

cpp_die() {
    printf 'error: %s\n' "$1" >&2
    exit "${2:-1}"
}

cpp_say() {
    printf '%s\n' "$1" >&2
}

# This machine's conda platform (subdir), as conda and rattler name it.
cpp_machine() {
    case "$(uname -s 2>/dev/null)-$(uname -m 2>/dev/null)" in
        Linux-x86_64) echo linux-64 ;;
        Linux-i?86) echo linux-32 ;;
        Linux-aarch64 | Linux-arm64) echo linux-aarch64 ;;
        Linux-ppc64le) echo linux-ppc64le ;;
        Linux-s390x) echo linux-s390x ;;
        Linux-armv7l) echo linux-armv7l ;;
        Darwin-x86_64) echo osx-64 ;;
        Darwin-arm64) echo osx-arm64 ;;
        *) echo unknown ;;
    esac
}

# $1 quoted for a POSIX shell: in single quotes, each ' written as '\''.
cpp_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# $1 as an absolute path (it need not exist).
cpp_absolute() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$(pwd)" "$1" ;;
    esac
}

cpp_parse() {
    CPP_OUT=''
    CPP_ENV_NAME=''
    CPP_NAME=''
    CPP_PREFIX=''
    CPP_SHELL='bash'
    while getopts 'o:e:n:p:s:h' option; do
        case "$option" in
            o) CPP_OUT="$OPTARG" ;;
            e) CPP_ENV_NAME="$OPTARG" ;;
            n) CPP_NAME="$OPTARG" ;;
            p) CPP_PREFIX="$OPTARG" ;;
            s) CPP_SHELL="$OPTARG" ;;
            h) cpp_usage; exit 0 ;;
            *) cpp_die "unknown option (see: sh $0 -h)" 2 ;;
        esac
    done
    shift $((OPTIND - 1))
    [ "$#" -eq 0 ] || cpp_die "unexpected argument '$1' (see: sh $0 -h)" 2
    [ -n "$CPP_NAME" ] && [ -n "$CPP_PREFIX" ] && cpp_die "give either -n or -p, not both" 2
    if [ -n "$CPP_ENV_NAME" ] && { [ -n "$CPP_NAME" ] || [ -n "$CPP_PREFIX" ]; }; then
        cpp_die "-e names a folder inside -o and cannot be combined with -n or -p (use either -o DIR -e NAME, or -n NAME, or -p PATH)" 2
    fi
    case "$CPP_SHELL" in
        bash | zsh) CPP_SCRIPT_EXT='sh' ;;
        fish) CPP_SCRIPT_EXT=fish ;;
        xonsh) CPP_SCRIPT_EXT=xsh ;;
        *) cpp_die "unknown shell '$CPP_SHELL' (choose one of: bash, zsh, fish, xonsh)" 2 ;;
    esac
    case "$CPP_ENV_NAME" in
        */* | . | ..) cpp_die "invalid environment name '$CPP_ENV_NAME' (-e is a single folder name; use -o for its location)" 2 ;;
    esac
}

# Which installer runs: sets CPP_INSTALLER (embedded, tool, plugin, micromamba, mamba, conda).
cpp_choose_installer() {
    if [ -n "$CPP_UNPACKER_KIND" ]; then
        CPP_INSTALLER=embedded
    elif command -v conda-pixi-pack >/dev/null 2>&1; then
        CPP_INSTALLER=tool
    elif command -v conda >/dev/null 2>&1 && conda pixi-pack --help >/dev/null 2>&1; then
        CPP_INSTALLER=plugin
    elif command -v micromamba >/dev/null 2>&1; then
        CPP_INSTALLER=micromamba
    elif command -v mamba >/dev/null 2>&1; then
        CPP_INSTALLER=mamba
    elif command -v conda >/dev/null 2>&1; then
        CPP_INSTALLER=conda
    else
        cpp_die "no installer found: install conda-pixi-pack (pip install conda-pixi-pack), micromamba, mamba or conda, or pack with --unpacker-source to embed one"
    fi
}

# Paths 2: this tool reads the pack straight out of this file (no copy), with the same options.
cpp_run_tool() {
    set --
    [ -n "$CPP_OUT" ] && set -- "$@" -o "$CPP_OUT"
    [ -n "$CPP_ENV_NAME" ] && set -- "$@" -e "$CPP_ENV_NAME"
    [ -n "$CPP_NAME" ] && set -- "$@" -n "$CPP_NAME"
    [ -n "$CPP_PREFIX" ] && set -- "$@" -p "$CPP_PREFIX"
    set -- "$@" -s "$CPP_SHELL"
    if [ "$CPP_INSTALLER" = tool ]; then
        cpp_say "Installing with conda-pixi-pack ($(command -v conda-pixi-pack))"
        exec conda-pixi-pack unpack "$CPP_SELF" "$@"
    fi
    cpp_say "Installing with conda pixi-pack ($(command -v conda))"
    exec conda pixi-pack unpack "$CPP_SELF" "$@"
}

# shellcheck disable=SC2329 # the EXIT trap's handler
cpp_cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ "$status" -ne 0 ] && [ "${CPP_MADE_PREFIX:-0}" = 1 ]; then
        rm -rf "$CPP_TARGET"
        [ "${CPP_KEEP_PREFIX_DIR:-0}" = 1 ] && mkdir -p "$CPP_TARGET"
    fi
    [ -n "${CPP_ACTIVATE_TMP:-}" ] && rm -f "$CPP_ACTIVATE_TMP"
    [ -n "${CPP_WORK:-}" ] && rm -rf "$CPP_WORK"
    [ "$status" -ge 128 ] && cpp_say "error: interrupted; nothing was installed"
    exit "$status"
}

# The activation script for $CPP_TARGET in the chosen shell's syntax, as `unpack` writes it: PATH
# and CONDA_PREFIX set, the environment's variables (etc/conda/env_vars.d) exported, its
# etc/conda/activate.d scripts run.
cpp_activation() {
    bin="$CPP_TARGET/bin"
    case "$CPP_SHELL" in
        bash | zsh)
            printf 'export PATH=%s"${PATH}"\n' "$(cpp_quote "$bin:")"
            printf 'export CONDA_SHLVL=1\n'
            printf 'export CONDA_PREFIX=%s\n' "$(cpp_quote "$CPP_TARGET")"
            cpp_env_vars | while IFS='=' read -r key value; do
                printf 'export %s=%s\n' "$key" "$(cpp_quote "$value")"
            done
            for script in "$CPP_TARGET"/etc/conda/activate.d/*.sh; do
                if [ -f "$script" ]; then printf '. %s\n' "$(cpp_quote "$script")"; fi
            done
            ;;
        fish)
            printf 'set -gx PATH %s"$PATH"\n' "$(cpp_quote "$bin:")"
            printf 'set -gx CONDA_SHLVL "1"\n'
            printf 'set -gx CONDA_PREFIX %s\n' "$(cpp_quote "$CPP_TARGET")"
            cpp_env_vars | while IFS='=' read -r key value; do
                printf 'set -gx %s %s\n' "$key" "$(cpp_quote "$value")"
            done
            for script in "$CPP_TARGET"/etc/conda/activate.d/*.fish; do
                if [ -f "$script" ]; then printf 'source %s\n' "$(cpp_quote "$script")"; fi
            done
            ;;
        xonsh)
            printf '$PATH.insert(0, %s)\n' "$(cpp_quote "$bin")"
            printf '$CONDA_SHLVL = "1"\n'
            printf '$CONDA_PREFIX = %s\n' "$(cpp_quote "$CPP_TARGET")"
            cpp_env_vars | while IFS='=' read -r key value; do
                printf '$%s = %s\n' "$key" "$(cpp_quote "$value")"
            done
            for script in "$CPP_TARGET"/etc/conda/activate.d/*.xsh; do
                if [ -f "$script" ]; then printf 'source %s\n' "$(cpp_quote "$script")"; fi
            done
            for script in "$CPP_TARGET"/etc/conda/activate.d/*.sh; do
                if [ -f "$script" ]; then printf 'source-bash %s\n' "$(cpp_quote "$script")"; fi
            done
            ;;
    esac
}

# KEY=VALUE lines from etc/conda/env_vars.d/*.json, read by the environment's own Python (JSON
# cannot be read reliably in sh); with no Python there, such files are named in a warning.
cpp_env_vars() {
    set -- "$CPP_TARGET"/etc/conda/env_vars.d/*.json
    [ -f "$1" ] || return 0
    if [ -x "$CPP_TARGET/bin/python" ]; then
        "$CPP_TARGET/bin/python" -I -c '
import json, sys
for path in sorted(sys.argv[1:]):
    with open(path, encoding="utf-8") as f:
        for key, value in json.load(f).items():
            print(f"{key}={value}")
' "$@"
    else
        cpp_say "warning: $CPP_TARGET/etc/conda/env_vars.d holds variables that are not in the activation script (no Python in the environment to read them)"
    fi
}

cpp_write_activation() {
    CPP_ACTIVATE="$CPP_OUT_DIR/activate.$CPP_SCRIPT_EXT"
    CPP_ACTIVATE_TMP="$CPP_OUT_DIR/.activate.$$.tmp"
    cpp_activation >"$CPP_ACTIVATE_TMP" || cpp_die "cannot write $CPP_ACTIVATE"
    chmod 644 "$CPP_ACTIVATE_TMP"
    mv -f "$CPP_ACTIVATE_TMP" "$CPP_ACTIVATE" || cpp_die "cannot write $CPP_ACTIVATE"
    CPP_ACTIVATE_TMP=''
}

# Paths 1 and 3: extract the pack (the one copy on disk), install its @EXPLICIT list offline
# without a solver, install its wheels with the environment's pip, write the activation script.
cpp_install_here() {
    if [ -n "$CPP_WHEELS" ] && [ "$CPP_HAS_PIP" != 1 ]; then
        cpp_die "the pack has PyPI wheels ($CPP_WHEELS) and its environment has no pip to install them with $CPP_INSTALLER (install conda-pixi-pack and run this file again, or add pip to the environment and pack it again)"
    fi
    if [ "$CPP_INSTALLER" = embedded ] && [ -n "$CPP_NAME" ]; then
        cpp_die "-n needs conda; the embedded $CPP_UNPACKER_KIND creates environments by path (use -p PATH or -o DIR -e NAME)" 2
    fi
    command -v tar >/dev/null 2>&1 || cpp_die "tar is needed to extract the pack (install tar)"
    CPP_OUT_DIR="$(cpp_absolute "${CPP_OUT:-.}")"
    if [ -n "$CPP_NAME" ]; then
        CPP_TARGET=''
    elif [ -n "$CPP_PREFIX" ]; then
        CPP_TARGET="$(cpp_absolute "$CPP_PREFIX")"
    else
        CPP_TARGET="$CPP_OUT_DIR/${CPP_ENV_NAME:-env}"
    fi
    if [ -n "$CPP_TARGET" ]; then
        if [ -e "$CPP_TARGET" ] && [ ! -d "$CPP_TARGET" ]; then
            cpp_die "the target $CPP_TARGET exists and is not a folder (choose another target)"
        fi
        if [ -d "$CPP_TARGET" ] && [ -n "$(ls -A "$CPP_TARGET")" ]; then
            cpp_die "the target $CPP_TARGET already exists and is not empty (choose another target)"
        fi
        [ -d "$CPP_TARGET" ] && CPP_KEEP_PREFIX_DIR=1
    fi
    trap cpp_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$CPP_OUT_DIR" || cpp_die "cannot create $CPP_OUT_DIR"
    CPP_WORK="$(mktemp -d "${TMPDIR:-/tmp}/conda-pixi-pack.XXXXXX")" || cpp_die "cannot create a temporary folder"
    mkdir "$CPP_WORK/pack"
    cpp_say "Extracting the pack into $CPP_WORK"
    tail -c "+$((CPP_ARCHIVE_OFFSET + 1))" "$CPP_SELF" | tar -xf - -C "$CPP_WORK/pack" ||
        cpp_die "the pack in $CPP_SELF is damaged (copy it again)"
    [ -f "$CPP_WORK/pack/explicit.txt" ] || cpp_die "the pack in $CPP_SELF is damaged: explicit.txt is missing (copy it again)"
    [ -n "$CPP_TARGET" ] && CPP_MADE_PREFIX=1
    cpp_create
    if [ -n "$CPP_NAME" ]; then
        CPP_TARGET="$(cpp_named_prefix)"
    fi
    if [ -n "$CPP_WHEELS" ]; then
        cpp_say "Installing wheels: $CPP_WHEELS"
        # shellcheck disable=SC2086 # one word per wheel spec
        "$CPP_TARGET/bin/python" -I -m pip install --quiet --no-deps --no-index --no-build-isolation \
            --disable-pip-version-check --no-warn-script-location \
            --find-links "$CPP_WORK/pack/pypi" $CPP_WHEELS >&2 || cpp_die "installing the wheels failed"
    fi
    cpp_write_activation
    CPP_MADE_PREFIX=0
    cpp_say "Unpacked $CPP_PACKAGES conda packages into $CPP_TARGET with $CPP_USED"
    cpp_say "Activate it with: source $CPP_ACTIVATE"
}

# The installer's create command for the extracted pack's @EXPLICIT list.
cpp_create() {
    if [ "$CPP_INSTALLER" = embedded ]; then
        tool="$CPP_WORK/$CPP_UNPACKER_KIND"
        tail -c "+$((CPP_UNPACKER_OFFSET + 1))" "$CPP_SELF" | head -c "$CPP_UNPACKER_SIZE" >"$tool" ||
            cpp_die "cannot extract the embedded $CPP_UNPACKER_KIND"
        chmod 755 "$tool"
        CPP_USED="$CPP_UNPACKER_KIND (embedded)"
    else
        tool="$(command -v "$CPP_INSTALLER")"
        CPP_USED="$CPP_INSTALLER ($tool)"
    fi
    if [ -n "$CPP_NAME" ]; then
        set -- --name "$CPP_NAME"
    else
        set -- --prefix "$CPP_TARGET"
    fi
    cpp_say "Installing $CPP_PACKAGES packages with $CPP_USED"
    case "$CPP_INSTALLER-$CPP_UNPACKER_KIND" in
        embedded-micromamba)
            (cd "$CPP_WORK/pack" && "$tool" create --yes --offline --no-rc \
                --root-prefix "$CPP_WORK/root" "$@" --file explicit.txt >&2) ;;
        embedded-conda-standalone)
            (cd "$CPP_WORK/pack" && CONDA_PKGS_DIRS="$CPP_WORK/pkgs" "$tool" create --yes --offline \
                "$@" --file explicit.txt >&2) ;;
        micromamba-*)
            (cd "$CPP_WORK/pack" && "$tool" create --yes --offline "$@" --file explicit.txt >&2) ;;
        *)
            (cd "$CPP_WORK/pack" && "$tool" create --yes --offline "$@" --file explicit.txt >&2) ;;
    esac || cpp_die "$CPP_USED could not create the environment"
}

# Where a named environment went: asked of the installer that made it.
cpp_named_prefix() {
    "$(command -v "$CPP_INSTALLER")" env list 2>/dev/null |
        awk -v name="$CPP_NAME" '$1 == name { print $NF; exit }'
}

cpp_main() {
    CPP_SELF="$0"
    [ -f "$CPP_SELF" ] || cpp_die "run this pack as a file (sh environment.sh), not from a pipe"
    size="$(wc -c <"$CPP_SELF" | tr -d ' ')"
    if [ "$size" != "$((CPP_ARCHIVE_OFFSET + CPP_ARCHIVE_SIZE))" ]; then
        cpp_die "$CPP_SELF is damaged: it has $size bytes, it was written with $((CPP_ARCHIVE_OFFSET + CPP_ARCHIVE_SIZE)) (copy it again)"
    fi
    cpp_parse "$@"
    machine="$(cpp_machine)"
    if [ "$machine" != "$CPP_PLATFORM" ]; then
        cpp_die "this pack is for $CPP_PLATFORM but this machine is $machine (pack the environment again with --platform $machine)"
    fi
    cpp_choose_installer
    case "$CPP_INSTALLER" in
        tool | plugin) cpp_run_tool ;;
        *) cpp_install_here ;;
    esac
}

cpp_main "$@"
exit $?
@@CONDA_PIXI_PACK_PAYLOAD@@
