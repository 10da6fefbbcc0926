"""Time ``conda-pixi-pack unpack`` against its install engine alone, for both backends.

- ``--installer conda`` vs ``python -m conda create --offline -p X --file explicit.txt`` on the same
  package files (an ``@EXPLICIT`` list of ``file://`` URLs with their sha256);
- ``--installer rattler`` vs a bare ``rattler.install`` of the same records (``file://`` URLs).

The unpack is timed whole: outer tar extraction, validation, install and activation script.
Every run starts from an empty package cache and a new prefix, after ``os.sync()``: a run writes
about 1 GB, and its dirty pages being written back during the next run would slow that one
down. Targets: conda within 1.1x of its engine alone (issue 3), rattler within 1.05x (issue 9),
peak memory under 200 MB.

The runs write their package caches and prefixes to a memory file system (``/dev/shm``) where
there is one with room, else beside the channel (``--runs-dir`` chooses): the figures are the
tools', not the disk's. On this machine's disk (ext4 without a journal) every new inode is
checked against the inodes deleted in the last minute (``recently_deleted`` in the kernel's
allocator), so removing the previous run's ~6,400 files made the next run ~1.6x slower, by an
amount that varied from run to run and side to side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MB: Final[int] = 1_000_000
#: Per backend: its name, the engine's command, the engine's runs and ours.
Rows = list[tuple[str, str, list[synthetic.Measurement], list[synthetic.Measurement]]]
#: The room a run needs on the memory file system (see ``synthetic.runs_dir``).
RUN_ROOM: Final = 3_000_000_000
#: Ratio targets of ``unpack`` to its engine alone, by backend.
TARGETS: Final = {"conda": 1.10, "rattler": 1.05}
#: The bare rattler.install, a script of its own (no benchmark imports in the engine's time).
ENGINE: Final = Path(__file__).resolve().parent / "rattler_engine.py"


def _explicit_file(channel: Path, target: Path) -> Path:
    """conda's explicit list of every package in ``channel``, with ``file://`` URLs and sha256."""
    lines = ["@EXPLICIT"]
    for repodata_path in sorted(channel.glob("*/repodata.json")):
        repodata = json.loads(repodata_path.read_text())
        for key in ("packages", "packages.conda"):
            for file_name, record in sorted(repodata[key].items()):
                url = (repodata_path.parent / file_name).as_uri()
                lines.append(f"{url}#sha256:{record['sha256']}")
    target.write_text("\n".join(lines) + "\n")
    return target


def _conda_python(candidate: str) -> str | None:
    """``candidate`` if conda imports there (the conda rows are skipped otherwise)."""
    result = subprocess.run([candidate, "-c", "import conda"], capture_output=True)
    return candidate if result.returncode == 0 else None


def _paired_runs(
    runs: int,
    work: Path,
    engine: Callable[[Path], Sequence[str | os.PathLike[str]]],
    ours: Callable[[Path], Sequence[str | os.PathLike[str]]],
    env: dict[str, str],
) -> tuple[list[synthetic.Measurement], list[synthetic.Measurement]]:
    """``runs`` timings of each command, interleaved (engine, ours, engine, ours, ...).

    Interleaving spreads any drift of the machine (other load, page cache, disk writeback) over
    both sides alike. Each run gets a new empty folder (removed afterwards) and starts after
    ``os.sync()``, so that no run pays for the previous one's writeback. One untimed run of each
    comes first, to fill the bytecode folder (see :func:`_bytecode_env`).
    """
    results: tuple[list[synthetic.Measurement], list[synthetic.Measurement]] = ([], [])
    for index in range(-1, runs):
        for side, command in enumerate((engine, ours)):
            run_dir = work / f"run-{side}-{index}"
            shutil.rmtree(run_dir, ignore_errors=True)
            (run_dir / "pkgs").mkdir(parents=True)
            run_env = {**env, **_bytecode_env(work), "CONDA_PKGS_DIRS": str(run_dir / "pkgs")}
            os.sync()
            measurement = synthetic.run_measured(command(run_dir), env=run_env)
            shutil.rmtree(run_dir, ignore_errors=True)
            if index >= 0:
                results[side].append(measurement)
                label = ("engine", "unpack")[side]
                print(f"  {label:7} {measurement.seconds:.2f} s", flush=True)
    return results


def _bytecode_env(work: Path) -> dict[str, str]:
    """Let every run keep compiled bytecode, in a folder of the benchmark's own.

    A user's ``pip install`` compiles the package; an editable install under
    ``PYTHONDONTWRITEBYTECODE`` (as in some sandboxes) would compile it on every run instead.
    """
    return {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (default: 3)")
    parser.add_argument("--bench-dir", type=Path, default=synthetic.BENCH_DIR)
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help=f"where each run's cache and prefix go (default: {synthetic.MEMORY_FS} with room, "
        "else --bench-dir)",
    )
    parser.add_argument(
        "--conda-python",
        default=sys.executable,
        help="interpreter where conda and conda-pixi-pack import (default: this one)",
    )
    args = parser.parse_args(argv)

    channel = synthetic.ensure_channel(args.bench_dir)
    work = args.bench_dir / "unpack"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pack = work / "environment.tar"
    with synthetic.Server(channel) as server:
        project = synthetic.write_project(work / "project", server.url, channel)
        print("packing the environment once", flush=True)
        synthetic.run_measured([sys.executable, "-m", "conda_pixi_pack", "pack", project, "-o", pack, "-q"])
    explicit = _explicit_file(channel, work / "explicit.txt")
    env = {"CONDA_ALWAYS_YES": "true"}
    runs = synthetic.runs_dir(args.runs_dir, work, RUN_ROOM)
    print(f"each run's package cache and prefix go to {runs}", flush=True)
    try:
        rows = _rows(args, runs, channel, pack, explicit, env)
    finally:
        if args.runs_dir is None and runs != work:
            shutil.rmtree(runs, ignore_errors=True)
    lines = _table(rows, channel, pack, args.runs, runs)
    synthetic.write_results("unpack", "\n".join(lines))
    return 0


def _rows(
    args: argparse.Namespace, runs: Path, channel: Path, pack: Path, explicit: Path, env: dict[str, str]
) -> Rows:
    """Both backends' paired runs (the conda rows only where conda imports)."""
    rows: Rows = []
    conda_python = _conda_python(args.conda_python)
    if conda_python is None:
        print(f"conda is not importable by {args.conda_python}: skipping the conda rows", flush=True)
    else:
        print(f"conda alone vs unpack --installer conda ({args.runs} runs each, interleaved)", flush=True)
        engine, ours = _paired_runs(
            args.runs,
            runs,
            lambda run: [conda_python, "-m", "conda", "create", "--offline", "--yes", "--quiet",
                         "-p", run / "env", "--file", explicit],
            lambda run: [conda_python, "-m", "conda_pixi_pack", "unpack", pack, "-o", run / "out",
                         "--installer", "conda", "--pkgs-dir", run / "pkgs"],
            env,
        )  # fmt: skip
        rows.append(("conda", "`conda create --offline --file explicit.txt`", engine, ours))

    print(
        f"rattler.install alone vs unpack --installer rattler ({args.runs} runs each, alternating)",
        flush=True,
    )
    engine, ours = _paired_runs(
        args.runs,
        runs,
        lambda run: [sys.executable, ENGINE, channel, run / "env", run / "pkgs"],
        lambda run: [sys.executable, "-m", "conda_pixi_pack", "unpack", pack, "-o", run / "out",
                     "--installer", "rattler", "--pkgs-dir", run / "pkgs"],
        env,
    )  # fmt: skip
    rows.append(("rattler", "bare `rattler.install` of the same records", engine, ours))
    return rows


def _table(rows: Rows, channel: Path, pack: Path, run_count: int, runs: Path) -> list[str]:
    """The markdown table and its notes."""
    lines = [
        f"Unpack: {synthetic.channel_summary(channel)}; the pack is {pack.stat().st_size / MB:.0f} MB.",
        "",
        synthetic.row(
            "Backend",
            "Engine alone",
            "Engine time",
            "`unpack` time (whole command)",
            "Ratio",
            "Target",
            "Met",
            "Peak RSS engine",
            "Peak RSS `unpack`",
        ),
        synthetic.row("---", "---", "---:", "---:", "---:", "---", "---", "---:", "---:"),
    ]
    peak = 0
    for backend, engine_name, engine_runs, our_runs in rows:
        engine_t, ours_t = synthetic.median_time(engine_runs), synthetic.median_time(our_runs)
        peak = max(peak, synthetic.peak_rss(our_runs))
        lines.append(
            synthetic.row(
                backend, engine_name, f"{engine_t:.2f} s", f"{ours_t:.2f} s", f"{ours_t / engine_t:.2f}x",
                f"<= {TARGETS[backend]:.2f}x", synthetic.verdict(ours_t / engine_t, TARGETS[backend]),
                f"{synthetic.peak_rss(engine_runs) / MB:.0f} MB",
                f"{synthetic.peak_rss(our_runs) / MB:.0f} MB",
            )
        )  # fmt: skip
    lines += [
        "",
        f"Peak RSS of unpack: {peak / MB:.0f} MB (target < 200 MB: {synthetic.verdict(peak / MB, 200)}). "
        + synthetic.machine_note(run_count)
        + " Engine and `unpack` runs alternate; each starts with an empty package cache and a new"
        f" prefix (under `{runs}`, {synthetic.file_system(runs)}), after `os.sync()` (no run pays"
        " for the previous one's dirty-page writeback).",
        "",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
