"""Time ``conda-pixi-pack pack`` against ``curl --parallel`` + ``tar cf``, from four kinds of server.

Servers (``servers.py``): nginx over HTTP/1.1, nginx over HTTPS + HTTP/2, ``http.server`` with a
listen backlog of 1024, and ``python -m http.server`` as it comes (backlog 5). Targets (issue 9):
a cold pack within 1.10x of the baseline from nginx (both rows) and 1.25x from ``python -m
http.server``; a warm ``--use-cache`` pack within 0.3x of a cold one; peak RSS under 200 MB;
at ``--scales 1,3`` time growing linearly with the environment and memory not at all. Beside
each warm pack, ``warm_floor.py`` times the least a warm pack can do (start Python, read the lock
with py-rattler, kernel-copy the cached packages into one file): the floor under the warm figure
on this machine. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers
import synthetic

if TYPE_CHECKING:
    from collections.abc import Callable

#: Parallel transfers for the baseline, as many as a tuned downloader would use.
CURL_PARALLEL: Final[int] = 50
MB: Final[int] = 1_000_000
#: Ratio targets of a cold pack to the baseline, by server (None: measured, no target).
TARGETS: Final[dict[str, float | None]] = {
    "nginx-http": 1.10,
    "nginx-https": 1.10,
    "http-server-1024": None,
    "python-http-server": 1.25,
}
#: Target of a warm pack to a cold one, and of peak memory.
WARM_TARGET: Final = 0.3
RSS_TARGET_MB: Final = 200
#: The least a warm pack can do, timed beside it (see its docstring).
WARM_FLOOR: Final = Path(__file__).resolve().parent / "warm_floor.py"


@dataclass(frozen=True)
class Server:
    key: str
    title: str
    start: Callable[[Path, Path], servers.Running]


def _nginx_title(what: str) -> str:
    try:
        program = servers.nginx_program()
    except servers.Unavailable:
        return f"nginx, {what}"
    version = ".".join(map(str, servers._nginx_version(program)))
    return f"nginx {version}, {what}"


SERVERS: Final = (
    Server(
        "nginx-http",
        _nginx_title("HTTP/1.1"),
        lambda ch, w: servers.nginx(ch, w / "servers" / "nginx-http", tls=False),
    ),
    Server(
        "nginx-https",
        _nginx_title("HTTPS + HTTP/2 (self-signed, trusted via `SSL_CERT_FILE`)"),
        lambda ch, w: servers.nginx(ch, w / "servers" / "nginx-https", tls=True),
    ),
    Server(
        "http-server-1024",
        "`http.server` threaded, backlog 1024, sendfile",
        lambda ch, w: servers.large_backlog_server(ch),
    ),
    Server(
        "python-http-server",
        "`python -m http.server` (threaded, backlog 5)",
        lambda ch, w: servers.python_http_server(ch),
    ),
)


@dataclass
class Row:
    server: Server
    skipped: str | None = None
    baseline: list[synthetic.Measurement] = field(default_factory=list)
    cold: list[synthetic.Measurement] = field(default_factory=list)
    warm: list[synthetic.Measurement] = field(default_factory=list)
    #: ``warm_floor.py`` after each warm pack, on the same cache.
    floor: list[synthetic.Measurement] = field(default_factory=list)
    size: int = 0


def _bytecode_env(work: Path) -> dict[str, str]:
    """Let our runs keep compiled bytecode, in a folder of the benchmark's own.

    A user's ``pip install`` compiles the package; an editable install under
    ``PYTHONDONTWRITEBYTECODE`` (as in some sandboxes) would compile it on every run instead,
    ~50 ms that no user pays. An untimed warm-up run fills the folder.
    """
    return {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def _baseline_command(work: Path, urls: list[tuple[str, str]], ca_file: Path | None) -> list[str]:
    """``curl --parallel`` into a channel-shaped folder, ``tar cf`` of it, and its removal.

    The folder is removed inside the timed command: a packer that downloads to files first must
    remove them too (``pack`` writes a lock's packages straight into the archive and has none to
    remove); the previous run's tar is removed before the timing starts, as the previous pack is.
    """
    config = work / "curl.cfg"
    lines = []
    for url, relative in urls:
        lines += [f'url = "{url}"', f'output = "{work / "download" / relative}"']
    config.write_text("\n".join(lines) + "\n")
    trust = f"--cacert {ca_file} " if ca_file else ""
    script = (
        f"curl --silent --show-error --fail --create-dirs --parallel --parallel-max {CURL_PARALLEL} {trust}"
        f"--config {config} && tar cf {work}/baseline.tar -C {work}/download . && rm -rf {work}/download"
    )
    return ["bash", "-c", script]


def _timed(
    label: str, command: list[str | os.PathLike[str]], env: dict[str, str] | None = None
) -> synthetic.Measurement:
    """One timed run after ``os.sync()`` (each run writes the pack; the previous run's
    writeback must not land in this one)."""
    os.sync()
    measurement = synthetic.run_measured(command, env=env)
    print(f"  {label:9} {measurement.seconds:.2f} s  {measurement.max_rss / MB:.0f} MB", flush=True)
    return measurement


def measure(server: Server, channel: Path, work: Path, cli: list[str], runs: int, warm: bool) -> Row:
    """Baseline and cold pack alternating (and a warm pack and its floor after each cold one
    when ``warm``)."""
    row = Row(server)
    try:
        running = server.start(channel, work)
    except servers.Unavailable as reason:
        row.skipped = str(reason)
        print(f"{server.title}: skipped, {reason}", flush=True)
        return row
    with running:
        run_dir = work / server.key
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        project = synthetic.write_project(run_dir / "project", running.url, channel)
        urls = [(r.url, f"{r.subdir}/{r.file_name}") for r in synthetic.records(running.url, channel)]  # type: ignore[attr-defined]
        baseline = _baseline_command(run_dir, urls, running.ca_file)
        env = {**_bytecode_env(work), **({"SSL_CERT_FILE": str(running.ca_file)} if running.ca_file else {})}
        output, cache = run_dir / "environment.tar", run_dir / "cache"
        pack = [*cli, "pack", project, "-o", output, "-q"]
        floor = [sys.executable, WARM_FLOOR, project / "pixi.lock", cache, run_dir / "floor.bin"]
        print(f"{server.title} at {running.url}: 1 warm-up each, then {runs} runs alternating", flush=True)
        synthetic.run_measured(baseline)
        output.unlink(missing_ok=True)
        synthetic.run_measured([*pack, *(["--use-cache", cache] if warm else [])], env=env)
        for _ in range(runs):
            (run_dir / "baseline.tar").unlink(missing_ok=True)
            row.baseline.append(_timed("curl+tar", baseline))
            output.unlink(missing_ok=True)
            row.cold.append(_timed("pack", pack, env))
            if warm:
                output.unlink(missing_ok=True)
                row.warm.append(_timed("warm pack", [*pack, "--use-cache", cache], env))
                (run_dir / "floor.bin").unlink(missing_ok=True)
                row.floor.append(_timed("floor", floor))
        row.size = output.stat().st_size
        output.unlink(missing_ok=True)
        (run_dir / "floor.bin").unlink(missing_ok=True)
        (run_dir / "baseline.tar").unlink(missing_ok=True)
    return row


def _median(measurements: list[synthetic.Measurement]) -> float:
    return statistics.median(m.seconds for m in measurements)


def table(rows: list[Row], channel: Path, runs: int, where: Path) -> list[str]:
    """The markdown table of one scale."""
    row, verdict = synthetic.row, synthetic.verdict
    measured = [r for r in rows if r.skipped is None]
    size = max((r.size for r in measured), default=0)
    lines = [
        f"Pack: {synthetic.channel_summary(channel)}; the pack is {size / MB:.0f} MB.",
        "",
        row("Server", "curl + tar", "`pack` (cold)", "Ratio", "Target", "Met", "Peak RSS curl+tar / pack"),
        row("---", "---:", "---:", "---:", "---", "---", "---:"),
    ]
    for r in rows:
        if r.skipped is not None:
            lines.append(row(r.server.title, "", "", "", "", "skipped", r.skipped))
            continue
        base, cold = _median(r.baseline), _median(r.cold)
        target = TARGETS[r.server.key]
        lines.append(
            row(
                r.server.title, f"{base:.2f} s", f"{cold:.2f} s", f"{cold / base:.2f}x",
                f"<= {target:.2f}x" if target else "", verdict(cold / base, target) if target else "",
                f"{synthetic.peak_rss(r.baseline) / MB:.0f} / {synthetic.peak_rss(r.cold) / MB:.0f} MB",
            )
        )  # fmt: skip
        if r.warm:
            warm = _median(r.warm)
            lines.append(
                row(
                    f"warm `pack --use-cache` ({r.server.title})", "", f"{warm:.2f} s",
                    f"{warm / cold:.2f}x of cold", f"<= {WARM_TARGET}x", verdict(warm / cold, WARM_TARGET),
                    f"{synthetic.peak_rss(r.warm) / MB:.0f} MB",
                )
            )  # fmt: skip
        if r.floor:
            floor = _median(r.floor)
            lines.append(
                row(
                    "least a warm pack can do (`warm_floor.py`)", "", f"{floor:.2f} s",
                    f"{floor / cold:.2f}x of cold", "", "", f"{synthetic.peak_rss(r.floor) / MB:.0f} MB",
                )
            )  # fmt: skip
    peak = max((synthetic.peak_rss(r.cold + r.warm) for r in measured), default=0)
    lines += [
        "",
        f"Peak RSS of pack: {peak / MB:.0f} MB "
        f"(target < {RSS_TARGET_MB} MB: {verdict(peak / MB, RSS_TARGET_MB)}). "
        + synthetic.machine_note(runs)
        + " Baseline and pack alternate, each after `os.sync()`; the baseline is `curl --parallel"
        f" --parallel-max {CURL_PARALLEL}` into a channel-shaped folder, `tar cf` of it and `rm -rf` of"
        " the folder (a lock's pack writes its packages straight into the archive). Both write under"
        f" `{where}` ({synthetic.file_system(where)}).",
        "",
    ]
    return lines


def growth(by_scale: dict[int, list[Row]]) -> list[str]:
    """How time and memory grow from the smallest scale to each larger one, per server."""
    scales = sorted(by_scale)
    first = scales[0]
    row, rss = synthetic.row, synthetic.peak_rss
    larger = ", ".join(f"{s}x" for s in scales[1:])
    lines = [
        f"Growth from {first}x to {larger} (time ratios; linear growth is the scale factor):",
        "",
        row("Server", "Scale", "curl + tar", "`pack` (cold)", "Peak RSS pack"),
        row("---", "---:", "---:", "---:", "---:"),
    ]
    for index, small in enumerate(by_scale[first]):
        if small.skipped is not None:
            continue
        for scale in scales[1:]:
            big = by_scale[scale][index]
            if big.skipped is not None:
                continue
            lines.append(
                row(
                    small.server.title, f"{scale // first}x",
                    f"{_median(big.baseline) / _median(small.baseline):.2f}x",
                    f"{_median(big.cold) / _median(small.cold):.2f}x",
                    f"{rss(small.cold) / MB:.0f} -> {rss(big.cold) / MB:.0f} MB",
                )
            )  # fmt: skip
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (default: 3)")
    parser.add_argument("--bench-dir", type=Path, default=synthetic.BENCH_DIR)
    parser.add_argument("--scales", default="1", help="environment sizes, e.g. 1,3 (default: 1)")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="where the runs write: the baseline's downloads and tar, the packs (default: --bench-dir)",
    )
    parser.add_argument(
        "--servers", default=",".join(s.key for s in SERVERS), help="comma-separated keys (default: all)"
    )
    parser.add_argument(
        "--cli",
        default=f"{sys.executable} -m conda_pixi_pack",
        help="how to call the tool (default: this interpreter's -m conda_pixi_pack)",
    )
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        sys.exit("error: the baseline needs curl (apt-get install curl)")
    chosen = [s for s in SERVERS if s.key in args.servers.split(",")]
    scales = [int(s) for s in args.scales.split(",")]
    channels = {scale: synthetic.ensure_channel(args.bench_dir, scale) for scale in scales}
    runs = args.runs_dir or args.bench_dir
    print(f"the runs write under {runs} ({synthetic.file_system(runs)})", flush=True)
    by_scale: dict[int, list[Row]] = {}
    markdown: list[str] = []
    for scale in scales:
        work = runs / f"pack-x{scale}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rows = []
        for server in chosen:
            warm = not any(r.warm for r in rows) and server.key != "python-http-server"
            rows.append(measure(server, channels[scale], work, args.cli.split(), args.runs, warm))
        by_scale[scale] = rows
        markdown += [f"### Scale {scale}x", "", *table(rows, channels[scale], args.runs, work)]
    if len(by_scale) > 1:
        markdown += growth(by_scale)
    synthetic.write_results("pack", "\n".join(markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
