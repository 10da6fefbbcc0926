"""A worker process of seed.py: extracts package archives with rattler and answers their checksums.

Started by seed.py (see ``WORKER_CODE`` there). Each request on stdin is one line of bytes,
``<archive path>\\t<destination folder>`` (paths as the OS has them, whatever the locale); each
answer on stdout is a UTF-8 line, ``ok\\t<sha256>\\t<md5>`` or ``error\\t<message>``. The
archive path may be a named pipe the parent is filling.

A process, not a thread: py-rattler's ``extract`` holds the GIL while it runs, so threads would
take turns. Only rattler's extraction module is imported, to start fast.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    # The parent handles Ctrl-C (it stops this process); a traceback from here would be noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from rattler.package_streaming import extract

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
