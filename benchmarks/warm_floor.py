"""The least a warm pack can do, timed beside the warm pack: the floor under its figure.

A warm ``pack --use-cache`` of a lock has to start Python, read the lock (with py-rattler, as
``pack`` does) and copy every cached package into one file. This script does exactly that and
nothing else: no tar headers, no repodata, no checks of the cache, no temporary file and rename;
one preallocated file, each package copied by the kernel (``copy_file_range``, the fastest of the
ways measured here: read/write, mmap + write, with and without preallocation) at its offset.
Its time is a lower bound for any warm pack written in Python with py-rattler on this machine.

Usage: ``python warm_floor.py LOCK CACHE_DIR OUTPUT``; prints the bytes copied.
"""

import os
import sys


def main(lock_path: str, cache_dir: str, output: str) -> int:
    from rattler import LockFile

    environment = LockFile.from_path(lock_path).default_environment()
    assert environment is not None
    platform = environment.platforms()[0]
    files = [
        os.path.join(cache_dir, record.subdir, record.file_name)
        for record in environment.conda_repodata_records_for_platform(platform) or []
    ]
    sizes = [os.stat(path).st_size for path in files]
    target = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(target, 0, sum(sizes))
        offset = 0
        for path, size in zip(files, sizes, strict=True):
            source = os.open(path, os.O_RDONLY)
            try:
                done = 0
                while done < size:
                    done += os.copy_file_range(source, target, size - done, done, offset + done)
            finally:
                os.close(source)
            offset += size
    finally:
        os.close(target)
    print(offset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
