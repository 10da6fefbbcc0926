"""A 2 GB self-extracting pack: memory stays flat and the disk holds at most one extra copy.

pixi-pack's executables read the whole archive into memory (pixi-pack #192, #304). Ours stream it
(``tail -c +OFFSET | tar -x``) or are read in place; this script shows it on a pack larger than
the memory any step may use. It builds, once, a channel of 16 packages of 128 MB of random bytes
(nothing compresses), packs it with ``--create-executable`` twice (without an embedded installer,
and with ``--unpacker-source`` of the tests' stand-in micromamba, which installs with this tool in
the folder the script extracted), and installs each the way a user would, ``sh environment.sh -o
DIR``, next to ``unpack`` of the same pack as a tar:

- time (median of ``--runs``), and the ratio to ``unpack`` of the tar;
- peak RSS of the largest process of the run (``wait4``);
- peak extra disk: the file system's largest use during the run minus its use at the end (the
  environment stays), sampled every 20 ms with ``statvfs``. One extra copy of the pack is what the
  embedded-installer path needs by design (the pack extracted to ``$TMPDIR``); reading in place
  needs none.

Other processes writing to the same file system while it runs add noise to the disk column.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import synthetic

if TYPE_CHECKING:
    from collections.abc import Callable

#: The pack: PACKAGES packages of PACKAGE_SIZE random bytes each, in files of FILE_SIZE.
PACKAGES: Final = 16
PACKAGE_SIZE: Final = 128 * 1024 * 1024
FILE_SIZE: Final = 4 * 1024 * 1024
#: Bump when the channel's shape changes.
CHANNEL_VERSION: Final = 1
#: How often the disk use is sampled (seconds).
SAMPLE_EVERY: Final = 0.02
#: The file system's use is settled when it moved less than this in 0.2 s.
SETTLED: Final = 4 * 1024 * 1024


def ensure_big_channel(bench_dir: Path) -> Path:
    """Build (once) the channel of large packages under ``bench_dir/big-channel``."""
    from tests.support.packages import PackageSpec, build_package

    channel = bench_dir / "big-channel"
    marker = channel / "complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == CHANNEL_VERSION:
        return channel
    shutil.rmtree(channel, ignore_errors=True)
    channel.mkdir(parents=True)
    print(f"building {PACKAGES} packages of {PACKAGE_SIZE >> 20} MiB in {channel}...", flush=True)
    records: dict[str, dict[str, object]] = {}
    for index in range(PACKAGES):
        with tempfile.TemporaryDirectory(dir=bench_dir) as staging:
            files: dict[str, object] = {}
            for part in range(PACKAGE_SIZE // FILE_SIZE):
                path = Path(staging) / f"{part:03d}.bin"
                path.write_bytes(os.urandom(FILE_SIZE))
                files[f"share/big{index:02d}/{part:03d}.bin"] = path
            spec = PackageSpec(f"big{index:02d}", "1.0", "0", files=files, compression_level=1)  # type: ignore[arg-type]
            package = build_package(spec, channel)
        sha256, md5 = synthetic._digests(package)
        records[package.name] = {
            "name": spec.name, "version": "1.0", "build": "0", "build_number": 0, "depends": [],
            "subdir": "linux-64", "sha256": sha256, "md5": md5, "size": package.stat().st_size,
        }  # fmt: skip
    for subdir, packages in (("linux-64", records), ("noarch", {})):
        (channel / subdir).mkdir(exist_ok=True)
        document = {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": packages,
            "repodata_version": 1,
        }
        (channel / subdir / "repodata.json").write_text(json.dumps(document, indent=1))
    total = sum(int(r["size"]) for r in records.values())  # type: ignore[call-overload]
    marker.write_text(json.dumps({"version": CHANNEL_VERSION, "packages": PACKAGES, "bytes": total}))
    return channel


class DiskPeak:
    """The largest use of the file system holding ``folder`` while the block runs, in a thread."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._stop = threading.Event()
        self.start = self.peak = self.end = self._used()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _used(self) -> int:
        stat = os.statvfs(self._folder)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> DiskPeak:
        self.start = self.peak = self._used()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self._used()
        self.peak = max(self.peak, self.end)

    @property
    def extra(self) -> int:
        """Bytes used at the peak beyond what stays (the environment)."""
        return self.peak - self.end


def _settle(folder: Path) -> None:
    """Wait until the file system's use stops changing: ext4 frees the blocks of the previous
    run's removed environment some time after ``rmtree`` returns, which would otherwise count
    as this run's use falling (and its start as a peak)."""
    os.sync()
    previous = -1
    for _ in range(150):
        stat = os.statvfs(folder)
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        if abs(used - previous) < SETTLED:
            return
        previous = used
        time.sleep(0.2)


def _tools(work: Path) -> Path:
    """A folder with a ``conda-pixi-pack`` that runs this checkout (the script's path 2), with the
    rattler backend as the other rows (the script passes no ``--installer``: where conda is
    importable the default would be conda's, which extracts into its own package cache)."""
    folder = work / "tools"
    folder.mkdir(exist_ok=True)
    script = folder / "conda-pixi-pack"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH="{synthetic.ROOT}" '
        f'exec "{sys.executable}" -m conda_pixi_pack "$@" --installer rattler\n'
    )
    script.chmod(0o755)
    return folder


def _measure(
    label: str, runs: int, work: Path, command: Callable[[Path], list[str]], env: dict[str, str]
) -> tuple[str, float, int, int]:
    """``runs`` installs into fresh folders: (label, median seconds, peak RSS, largest extra disk)."""
    measurements, extras = [], []
    for index in range(runs):
        out = work / f"{label.split()[0]}-{index}"
        _settle(work)
        with DiskPeak(work) as disk:
            measurements.append(synthetic.run_measured(command(out), env=env, cwd=work))
        extras.append(disk.extra)
        shutil.rmtree(out)
    return label, synthetic.median_time(measurements), synthetic.peak_rss(measurements), max(extras)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    from tests.support.unpacker import fake_micromamba

    bench_dir = synthetic.BENCH_DIR
    bench_dir.mkdir(parents=True, exist_ok=True)
    channel = ensure_big_channel(bench_dir)
    work = Path(tempfile.mkdtemp(prefix="executable-", dir=bench_dir))
    tools = _tools(work)
    env = {
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(work),
        "PYTHONPATH": str(synthetic.ROOT),
    }
    cli = [sys.executable, "-m", "conda_pixi_pack"]
    try:
        micromamba, _ = fake_micromamba(work / "micromamba")
        with synthetic.Server(channel) as server:
            project = synthetic.write_project(work / "project", server.url, channel)
            pack = [*cli, "pack", str(project), "-p", "linux-64", "-q"]
            subprocess.run(
                [*pack, "-o", str(work / "environment.tar")], check=True, env={**os.environ, **env}
            )
            subprocess.run(
                [*pack, "--create-executable", "-o", str(work / "environment.sh")],
                check=True,
                env={**os.environ, **env},
            )
            subprocess.run(
                [
                    *pack,
                    "--create-executable",
                    "--unpacker-source",
                    str(micromamba),
                    "-o",
                    str(work / "embedded.sh"),
                ],
                check=True,
                env={**os.environ, **env},
            )
        size = (work / "environment.tar").stat().st_size
        unpack = [*cli, "unpack", str(work / "environment.tar"), "--installer", "rattler", "-q"]
        rows = [
            _measure("unpack environment.tar", args.runs, work, lambda out: [*unpack, "-o", str(out)], env),
            _measure("sh environment.sh (conda-pixi-pack on PATH)", args.runs, work,
                     lambda out: ["sh", str(work / "environment.sh"), "-o", str(out)], env),
            _measure("sh embedded.sh (embedded installer)", args.runs, work,
                     lambda out: ["sh", str(work / "embedded.sh"), "-o", str(out)], env),
        ]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1]
    lines = [
        f"Self-extracting pack of {PACKAGES} packages, {size / 1e9:.2f} GB of random bytes:",
        "",
        synthetic.row("install", "time", "vs unpack of the tar", "peak RSS", "peak extra disk"),
        synthetic.row("---", "---:", "---:", "---:", "---:"),
        *(
            synthetic.row(
                label,
                f"{seconds:.2f} s",
                f"{seconds / base:.2f}x",
                f"{rss / 1e6:.0f} MB",
                f"{extra / 1e9:.2f} GB",
            )
            for label, seconds, rss, extra in rows
        ),
        "",
        synthetic.machine_note(args.runs),
    ]
    synthetic.write_results("executable", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
