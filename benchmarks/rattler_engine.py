"""The rattler baseline of ``bench_unpack.py``: a bare ``rattler.install``, nothing else imported.

Run as ``python rattler_engine.py CHANNEL PREFIX CACHE``: the channel's records (read with
rattler's own repodata parser, ``file://`` URLs) installed into PREFIX. Kept apart from the
benchmark script so that the engine's time holds no benchmark imports (``http.server``,
``subprocess``... ~80 ms) and the comparison favours the engine, not us.
"""

import asyncio
import os
import sys
from pathlib import Path

import rattler


def main() -> None:
    channel, prefix, cache = (Path(arg) for arg in sys.argv[1:4])
    records = []
    for subdir in sorted(p.parent for p in channel.glob("*/repodata.json")):
        repodata = rattler.RepoData.from_path(subdir / "repodata.json")
        records.extend(repodata.into_repo_data(rattler.Channel(channel.as_uri() + "/")))
    asyncio.run(rattler.install(records, prefix, cache_dir=cache, show_progress=False))
    # py-rattler's runtime threads can crash CPython's teardown (a segfault was seen here once
    # in about 50 runs, after the install had finished); `conda-pixi-pack` itself leaves the
    # same way (cli.run), so neither side pays for the teardown.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
