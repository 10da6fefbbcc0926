"""``--use-cache DIR``: a channel-shaped folder of verified package files shared between packs.

Layout: ``<dir>/<subdir>/<file>`` and ``<dir>/pypi/<file>``, plus a ``CACHEDIR.TAG`` so that
backup tools skip it. That tag would hide a user's own files from backups, so a folder is only
taken when it is new, empty, tagged already, or holds nothing but subdir and ``pypi`` folders
(what pixi-pack's ``--use-cache`` writes, untagged).

Entries only ever appear by ``os.replace`` of a complete, verified temp file written in the
entry's own folder, so two packs sharing a cache never see half a file. A hit is linked, or
copied, into the pack.

Verification stamps: re-hashing every hit would cost more than the rest of a warm pack (sha256
runs at ~300 MB/s per core). So when an entry is added, right after its download was verified,
a stamp ``<dir>/<subdir>/.<file>.verified`` (JSON, written atomically) records the checksum that
was verified (sha256, or md5 when that is all the lock has), the size, and the file's
``(st_dev, st_ino, st_size, st_mtime_ns)``. A hit is trusted without reading it when its stamp
holds the checksum the lock asks for AND the file's current stat equals the stamped one. Any
other hit (no stamp: an older cache or another tool; a stamp for other bytes; changed metadata)
is hashed in full: stamped if good, discarded if bad (and fetched again).

What this detects: any write to the entry (it changes mtime, and usually size), a replacement
(another inode), a truncation, a copy or restore from backup (another inode or mtime). What it
does not: bytes changed without their metadata changing, i.e. silent disk corruption or someone
writing in place and resetting the mtime, and an in-place, same-size write within the file
system's timestamp resolution of the download's last write (a few ms on ext4, 2 s on FAT).
Delete the stamps (``.*.verified``) to force every hit to be hashed again.

Stamps are only a shortcut: a missing, unreadable or stale one just means a hash. Two packs
writing the stamp of one entry at once each replace it whole; the last one wins, and a stamp that
describes an inode no longer there never matches.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from conda_pixi_pack.artifacts import file_mismatch
from conda_pixi_pack.errors import PackError
from conda_pixi_pack.fileio import PARTIAL_SUFFIX, create_new, temp_path, write_atomically
from conda_pixi_pack.format import PYPI_DIR

if TYPE_CHECKING:
    from conda_pixi_pack.artifacts import Artifact

#: Name of the cache directory tag (https://bford.info/cachedir/).
CACHEDIR_TAG: Final = "CACHEDIR.TAG"
#: Its content: the standard signature line, then comments.
CACHEDIR_TAG_CONTENT: Final = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by conda-pixi-pack.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
#: Suffix of verification stamps (``.<file>.verified`` beside the entry); see the module docstring.
STAMP_SUFFIX: Final = ".verified"
#: Version of the stamp's JSON; a stamp of another version is ignored (the entry is hashed).
STAMP_VERSION: Final = 1
#: A conda subdir name (``noarch``, ``linux-64``, ``osx-arm64``, ``zos-z``…): the platform
#: families rattler knows with any architecture, so a cache for a new architecture still counts
#: while ``photos-2024`` does not (its files are checked too, see ``_cache_like``).
SUBDIR_RE: Final = re.compile(
    r"noarch|(?:linux|osx|win|emscripten|wasi|zos|freebsd|ios|iossimulator|android)-[a-z0-9]+"
)
#: What a cache folder holds: packages, wheels, their verification stamps and files in progress.
CACHE_FILE_RE: Final = re.compile(r".*\.(?:conda|tar\.bz2|whl)|\..*(?:\.verified|\.part)")


class Cache:
    """A verified package cache rooted at ``root`` (created, and tagged, on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            check_folder(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            tag = self.root / CACHEDIR_TAG
            if not tag.exists():
                write_atomically(tag, CACHEDIR_TAG_CONTENT.encode("ascii"))
        except OSError as exc:
            raise PackError(
                f"cannot use {self.root} as a cache: {exc.strerror or exc}",
                "give a writable folder with `--use-cache`",
            ) from exc

    def entry(self, artifact: Artifact) -> Path:
        """Where ``artifact`` lives in the cache (not necessarily present)."""
        return self.root / artifact.relative_path

    def trusted(self, artifact: Artifact) -> tuple[Path, os.stat_result] | None:
        """The cached file for ``artifact`` and the stat its stamp vouches for (no byte is read),
        or None. None does not mean a miss: :meth:`lookup` may still find a good entry by hashing it.
        """
        path = self.entry(artifact)
        try:
            current = path.stat()
        except FileNotFoundError:
            return None
        return (path, current) if stamp_matches(path, artifact, current) else None

    def lookup(self, artifact: Artifact) -> Path | None:
        """The verified cached file for ``artifact``, or None; a corrupt entry is discarded.

        A hit with a matching stamp is trusted as it is; any other is hashed (see the module
        docstring), then stamped when good.
        """
        path = self.entry(artifact)
        try:
            before = path.stat()
        except FileNotFoundError:
            return None
        if stamp_matches(path, artifact, before):
            return path
        try:
            problem = file_mismatch(path, artifact)
            after: os.stat_result | None = path.stat()
        except FileNotFoundError:
            problem, after = "gone", None
        # Stamp or discard only what was checked: another pack may just have replaced it.
        unchanged = after is not None and file_identity(after) == file_identity(before)
        if problem is None:
            if unchanged:
                write_stamp(path, artifact, before)
            return path
        if unchanged:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return None

    def add(self, verified_temp: Path, artifact: Artifact) -> Path:
        """Publish a verified file written in the entry's folder (see :func:`temp_path`) and stamp it."""
        path = self.entry(artifact)
        verified = verified_temp.stat()  # a rename keeps the inode and the mtime
        os.replace(verified_temp, path)
        write_stamp(path, artifact, verified)
        return path


def check_folder(root: Path) -> None:
    """Refuse a file, or a folder of other things: tagging it would hide them from backups.

    Writes nothing, so that ``pack`` can call it before reading the lock.
    """
    if root.exists() and not root.is_dir():
        raise PackError(f"cannot use {root} as a cache: it is a file", "give a folder with `--use-cache`")
    if not root.is_dir():
        return
    # One scan answers both "is it tagged?" and "what else is there?": a separate exists() check
    # before the scan raced with another pack tagging the folder in between (its tag then showed
    # up in the scan as a foreign file).
    try:
        with os.scandir(root) as scan:
            entries = list(scan)
        if any(entry.name == CACHEDIR_TAG for entry in entries):
            return  # a tagged cache: its subfolders are not read (one listing per pack)
        foreign = sorted(entry.name for entry in entries if not _cache_like(entry))
    except OSError as exc:
        raise PackError(
            f"cannot use {root} as a cache: {exc.strerror or exc}",
            "give a writable folder with `--use-cache`",
        ) from exc
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise PackError(
            f"cannot use {root} as a cache: it is not a package cache (it holds {shown})",
            "give an empty or new folder, or one used as a cache before",
        )


def _cache_like(entry: os.DirEntry[str]) -> bool:
    """A subdir or ``pypi`` folder holding only package files, or the temp file of a tag another
    pack is writing right now. (A name alone is not enough: ``photos-2024`` looks like a subdir.)"""
    if entry.is_dir(follow_symlinks=False):
        if entry.name != PYPI_DIR and SUBDIR_RE.fullmatch(entry.name) is None:
            return False
        with os.scandir(entry.path) as files:
            return all(
                CACHE_FILE_RE.fullmatch(f.name) is not None and f.is_file(follow_symlinks=False)
                for f in files
            )
    return entry.name.startswith(f".{CACHEDIR_TAG}.") and entry.name.endswith(PARTIAL_SUFFIX)


def stamp_path(entry: Path) -> Path:
    """Where the verification stamp of the cache entry ``entry`` lives."""
    return entry.with_name(f".{entry.name}{STAMP_SUFFIX}")


def file_identity(st: os.stat_result) -> list[int]:
    """What any write, truncation or replacement of a file changes (ctime is not used: a hard
    link into a pack changes it on every hit)."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _verified_checksum(artifact: Artifact) -> tuple[str, str] | None:
    """The checksum a verification against ``artifact`` compares (as :class:`Hasher` does)."""
    if artifact.sha256:
        return "sha256", artifact.sha256.lower()
    if artifact.md5:
        return "md5", artifact.md5.lower()
    return None


def write_stamp(entry: Path, artifact: Artifact, verified: os.stat_result) -> None:
    """Record that ``entry``, as ``verified`` describes it, matched ``artifact``.

    Best effort: a cache we cannot write a stamp into still works, its hits are hashed.
    """
    checksum = _verified_checksum(artifact)
    document = {
        "version": STAMP_VERSION,
        "checksum": list(checksum) if checksum else None,
        "file": file_identity(verified),
    }
    stamp = stamp_path(entry)
    temp = temp_path(stamp)
    try:
        with os.fdopen(create_new(temp), "w", encoding="utf-8") as stream:
            json.dump(document, stream)
        os.replace(temp, stamp)
    except OSError:
        pass
    finally:
        temp.unlink(missing_ok=True)


def stamp_matches(entry: Path, artifact: Artifact, current: os.stat_result) -> bool:
    """True when ``entry``'s stamp vouches for ``artifact`` and the file is still the one stamped."""
    if artifact.size is not None and artifact.size != current.st_size:
        return False
    try:
        document = json.loads(stamp_path(entry).read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(document, dict) or document.get("version") != STAMP_VERSION:
        return False
    checksum = _verified_checksum(artifact)
    return document.get("file") == file_identity(current) and document.get("checksum") == (
        list(checksum) if checksum else None
    )
