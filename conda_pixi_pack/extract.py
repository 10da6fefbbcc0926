"""Safe, streaming extraction of a pack's outer tar into a private folder.

The tar comes from someone else, so every member is checked before a byte of it is written:
an absolute name, a ``..`` component, a link, a device or fifo, or a second member with the same
name is refused with a :class:`PackError` naming the member. Packs (ours and pixi-pack's) hold only
folders and regular files, so links of any kind are refused outright rather than resolved: there
is no legitimate use for one and no way for a refused link to escape the target.

Python's extraction filters (``tarfile.data_filter``) would cover most of this, but they exist only
from 3.12 (and late 3.10/3.11 patch releases) and *sanitize* some members rather than refuse them;
the checks below behave the same on every supported Python. The archive is read in stream mode
(``r|*``) so that a pipe works and memory stays flat whatever the member sizes.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Final

from conda_pixi_pack.errors import PackError

if TYPE_CHECKING:
    from conda_pixi_pack.progress import Reporter

#: Copy buffer for member data; large enough to keep syscalls cheap, small enough to stay flat.
CHUNK_SIZE: Final = 1 << 20
#: Shown with every refusal: a good pack never triggers one.
UNSAFE_HINT: Final = "the pack is damaged or was not written by `pack`/pixi-pack; do not use it"


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path components, refusing anything that could land outside the target."""
    name = member.name
    if not name or "\0" in name:
        raise PackError(f"unsafe pack: member {name!r} has an invalid name", UNSAFE_HINT)
    posix = PurePosixPath(name.replace("\\", "/"))
    # Windows drive letters ("C:...") are absolute there even without a leading slash.
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise PackError(f"unsafe pack: member {name!r} has an absolute path", UNSAFE_HINT)
    parts = tuple(p for p in posix.parts if p != ".")
    if ".." in parts:
        raise PackError(f"unsafe pack: member {name!r} points outside the pack ('..')", UNSAFE_HINT)
    return parts


def _check_type(member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        raise PackError(
            f"unsafe pack: member {member.name!r} is a {kind} (to {member.linkname!r}); "
            "packs hold only files and folders",
            UNSAFE_HINT,
        )
    if not (member.isfile() or member.isdir()):
        raise PackError(
            f"unsafe pack: member {member.name!r} is a device, fifo or other special file",
            UNSAFE_HINT,
        )


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tar.extractfile(member)
    assert data is not None  # regular files always have data
    # "xb": never follow or replace something already there.
    with data, open(path, "xb") as out:
        shutil.copyfileobj(data, out, CHUNK_SIZE)
    if member.mode & 0o111:
        os.chmod(path, 0o755)


def extract_tar(source: Path | IO[bytes], target: Path, reporter: Reporter) -> None:
    """Extract the tar ``source`` (a file or a readable binary stream) into the folder ``target``.

    ``target`` must exist and be empty (a fresh temporary folder): files are created exclusively,
    so nothing already there is ever followed or overwritten.
    """
    label = str(source) if isinstance(source, Path) else "standard input"
    seen: set[tuple[str, ...]] = set()
    try:
        if isinstance(source, Path):
            tar = tarfile.open(source, mode="r|*")
        else:
            tar = tarfile.open(fileobj=source, mode="r|*")
    except FileNotFoundError:
        raise PackError(f"pack {label} does not exist", "give the path of a pack file") from None
    except IsADirectoryError:  # pragma: no cover - unpack() handles folders before this
        raise PackError(f"pack {label} is a folder, not a tar file") from None
    except (tarfile.TarError, EOFError) as exc:
        raise PackError(
            f"{label} is not a pack: it is not a tar archive ({exc})",
            "a self-extracting .sh/.ps1 pack is run, not unpacked; otherwise give a .tar pack",
        ) from None
    except OSError as exc:
        raise PackError(f"cannot read pack {label}: {exc.strerror or exc}") from None
    task = reporter.task("Extracting pack", None, "B")
    try:
        with tar:
            for member in tar:
                parts = _member_parts(member)
                _check_type(member)
                if not parts:  # "." itself: the target folder
                    continue
                if parts in seen:
                    raise PackError(f"unsafe pack: member {member.name!r} appears twice", UNSAFE_HINT)
                seen.add(parts)
                try:
                    _write_member(tar, member, target.joinpath(*parts))
                except (FileExistsError, NotADirectoryError):
                    raise PackError(
                        f"unsafe pack: member {member.name!r} clashes with another member",
                        UNSAFE_HINT,
                    ) from None
                task.advance(member.size)
    except (tarfile.TarError, EOFError) as exc:
        raise PackError(f"pack {label} is damaged: {exc}", "copy the pack again") from None
    finally:
        task.done()
