"""A worker process of seed.py: extracts package archives with rattler and answers their checksums.

Started by seed.py (see ``WORKER_CODE`` there). Each request on stdin is one line of bytes,
``<archive path>\\t<destination folder>`` (paths as the OS has them, whatever the locale); each
answer on stdout is a UTF-8 line, ``ok\\t<sha256>\\t<md5>`` or ``error\\t<message>``. The
archive path may be a named pipe the parent is filling.

A process, not a thread: py-rattler's ``extract`` holds the GIL while it runs, so threads would
take turns. It loads py-rattler's compiled module on its own (:func:`load_extract`): importing
the ``rattler`` package runs its ``__init__``, which imports every wrapper (~70 ms here, in each
worker, while the packages wait), and ``extract`` is all a worker uses.
"""

from __future__ import annotations

import os
import sys

#: typing's flag without importing typing (type checkers know the name): this file imports as
#: little as it can, it starts once per worker while the packages wait.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def load_extract() -> Callable[[str, str], tuple[bytes, bytes]]:
    """py-rattler's native ``extract(archive, destination) -> (sha256, md5)``.

    Loaded from the package's compiled module without running the package's ``__init__``; where
    that module cannot be found or loaded that way, the ordinary import (same function).
    """
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec, PathFinder

    try:
        spec = PathFinder.find_spec("rattler")  # the package's location, nothing run
        folder = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
        names = sorted(os.listdir(folder)) if folder else []
        for suffix in EXTENSION_SUFFIXES:
            if f"rattler{suffix}" in names:
                assert folder is not None
                path = os.path.join(folder, f"rattler{suffix}")
                # importlib.util would do the same in two calls, after importing contextlib (~4 ms)
                loader = ExtensionFileLoader("rattler.rattler", path)
                module = loader.create_module(ModuleSpec("rattler.rattler", loader, origin=path))
                loader.exec_module(module)
                return module.extract  # type: ignore[no-any-return]
    except Exception:  # any surprise in that shortcut: the ordinary import below
        pass
    from rattler.package_streaming import extract

    return extract  # type: ignore[return-value]


def main() -> None:
    # The parent handles Ctrl-C (it stops this process). ``_signal``: the C module under
    # ``signal``, which would import ``enum`` (~5 ms) to wrap it.
    import _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    extract = load_extract()
    for line in sys.stdin.buffer:
        source, _, destination = line.rstrip(b"\n").partition(b"\t")
        try:
            sha256, md5 = extract(os.fsdecode(source), os.fsdecode(destination))
        except Exception as exc:  # any failure is the answer, on one line
            answer = "error\t" + " ".join(str(exc).split())
        else:
            answer = f"ok\t{sha256.hex()}\t{md5.hex()}"
        sys.stdout.buffer.write(answer.encode("utf-8", "replace") + b"\n")
        sys.stdout.buffer.flush()
    # As cli.run: py-rattler's threads may abort the interpreter's teardown; there is nothing left.
    os._exit(0)


if __name__ == "__main__":
    main()
