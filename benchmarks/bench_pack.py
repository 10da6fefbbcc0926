"""Time ``conda-pixi-pack pack`` against ``curl --parallel`` + ``tar cf`` on a realistic environment.

Targets (issue 2): pack within 1.2x of the baseline, a warm-cache pack within 0.3x of a cold
one, peak memory under 200 MB. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic

#: Parallel transfers for the baseline, as many as a tuned downloader would use.
CURL_PARALLEL: Final[int] = 50

MB: Final[int] = 1_000_000


def _timed(command: list[str | os.PathLike[str]], env: dict[str, str] | None = None) -> synthetic.Measurement:
    """One timed run, after ``os.sync()``.

    Each run writes ~1.1 GB (the downloads and the tar); without a sync, the writeback of the
    previous run's dirty pages can land in the next run and slow it down.
    """
    os.sync()
    measurement = synthetic.run_measured(command, env=env)
    print(f"  {measurement.seconds:.2f} s", flush=True)
    return measurement


def _bytecode_env(work: Path) -> dict[str, str]:
    """Let our runs keep compiled bytecode, in a folder of the benchmark's own.

    A user's ``pip install`` compiles the package; an editable install under
    ``PYTHONDONTWRITEBYTECODE`` (as in some sandboxes) would compile it on every run instead,
    ~50 ms that no user pays. An untimed warm-up run fills the folder.
    """
    return {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def _baseline_command(work: Path, urls: list[tuple[str, str]]) -> list[str]:
    """``curl --parallel`` into a channel-shaped folder, then ``tar cf`` of it, as one shell command."""
    config = work / "curl.cfg"
    lines = []
    for url, relative in urls:
        lines += [f'url = "{url}"', f'output = "{work / "download" / relative}"']
    config.write_text("\n".join(lines) + "\n")
    script = (
        f"rm -rf {work}/download {work}/baseline.tar && "
        f"curl --silent --show-error --fail --create-dirs --parallel --parallel-max {CURL_PARALLEL} "
        f"--config {config} && tar cf {work}/baseline.tar -C {work}/download ."
    )
    return ["bash", "-c", script]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (default: 3)")
    parser.add_argument("--bench-dir", type=Path, default=synthetic.BENCH_DIR)
    parser.add_argument(
        "--cli",
        default=f"{sys.executable} -m conda_pixi_pack",
        help="how to call the tool (default: this interpreter's -m conda_pixi_pack)",
    )
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        sys.exit("error: the baseline needs curl (apt-get install curl)")

    channel = synthetic.ensure_channel(args.bench_dir)
    work = args.bench_dir / "pack"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cli = args.cli.split()
    with synthetic.Server(channel) as server:
        project = synthetic.write_project(work / "project", server.url, channel)
        urls = [
            (r.url, f"{r.subdir}/{r.file_name}")  # type: ignore[attr-defined]
            for r in synthetic.records(server.url, channel)
        ]
        output = work / "environment.tar"
        cache = work / "cache"
        pack = [*cli, "pack", project, "-o", output, "-q"]

        def fresh_output() -> None:
            output.unlink(missing_ok=True)

        rows = {}
        print(f"baseline: curl --parallel + tar cf (1 warm-up + {args.runs} runs)", flush=True)
        baseline = _baseline_command(work, urls)
        synthetic.run_measured(baseline)
        rows["baseline"] = [_timed(baseline) for _ in range(args.runs)]
        shutil.rmtree(work / "download", ignore_errors=True)
        (work / "baseline.tar").unlink(missing_ok=True)

        env = _bytecode_env(work)
        print("pack, warm-up (1 run, not in the table)", flush=True)
        fresh_output()
        synthetic.run_measured(pack, env=env)

        print(f"pack, cold, no cache ({args.runs} runs)", flush=True)
        cold = []
        for _ in range(args.runs):
            fresh_output()
            cold.append(_timed(pack, env))
        rows["cold"] = cold
        size = output.stat().st_size

        print("pack, filling the cache (1 run, not in the table)", flush=True)
        fresh_output()
        shutil.rmtree(cache, ignore_errors=True)
        synthetic.run_measured([*pack, "--use-cache", cache], env=env)

        print(f"pack, warm cache ({args.runs} runs)", flush=True)
        warm = []
        for _ in range(args.runs):
            fresh_output()
            warm.append(_timed([*pack, "--use-cache", cache], env))
        rows["warm"] = warm
        fresh_output()

    base = synthetic.median_time(rows["baseline"])
    cold_t = synthetic.median_time(rows["cold"])
    warm_t = synthetic.median_time(rows["warm"])
    peak = max(synthetic.peak_rss(rows["cold"]), synthetic.peak_rss(rows["warm"]))
    row, verdict, rss = synthetic.row, synthetic.verdict, synthetic.peak_rss
    table = [
        f"Pack: {synthetic.channel_summary(channel)} over loopback HTTP; the pack is {size / MB:.0f} MB.",
        "",
        row("Command", "Median time", "Ratio", "Target", "Met", "Peak RSS"),
        row("---", "---:", "---:", "---", "---", "---:"),
        row(
            f"baseline: `curl --parallel --parallel-max {CURL_PARALLEL}` + `tar cf`",
            f"{base:.2f} s", "1.00x", "", "", f"{rss(rows['baseline']) / MB:.0f} MB",
        ),
        row(
            "`conda-pixi-pack pack` (cold, no cache)", f"{cold_t:.2f} s", f"{cold_t / base:.2f}x of baseline",
            "<= 1.2x", verdict(cold_t / base, 1.2), f"{rss(rows['cold']) / MB:.0f} MB",
        ),
        row(
            "`conda-pixi-pack pack --use-cache` (warm)", f"{warm_t:.2f} s", f"{warm_t / cold_t:.2f}x of cold",
            "<= 0.3x", verdict(warm_t / cold_t, 0.3), f"{rss(rows['warm']) / MB:.0f} MB",
        ),
        "",
        f"Peak RSS of pack: {peak / MB:.0f} MB (target < 200 MB: {verdict(peak / MB, 200)}). "
        + synthetic.machine_note(args.runs)
        + " `os.sync()` before every timed run (baseline and pack alike), so that no run pays for"
        " the previous one's writeback.",
        "",
    ]  # fmt: skip
    synthetic.write_results("pack", "\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
