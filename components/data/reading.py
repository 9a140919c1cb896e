"""Read a `data add` input one entry at a time, without trusting it.

An entry is (name, bytes or None, origin, reason, detail): reason is None for a readable
regular file, else why its bytes were not read (`link`, `shard_truncated`,
`shard_unreadable`). Links are never followed, special files are never opened, and a tar is
read member by member, so a damaged tar still yields every member before the damage.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from litops.core.component_cli import UserError
from litops.core.shard_index import TAR_ERRORS, TarMember, ends_cleanly, open_tar, tar_members

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass
class Entry:
    name: str
    data: bytes | None
    origin: str
    reason: str | None = None
    detail: str = ""
    cut_inside: bool = False  # a damaged shard: the damage lies inside this entry's sample


def is_tar(p: Path) -> bool:
    return p.name.lower().endswith(TAR_SUFFIXES)


def check_input(path: str | Path) -> Path:
    """The resolved input, or a one-line UserError; reads nothing but its type."""
    src = Path(path).expanduser()
    if not src.exists():
        raise UserError(f"no such file or folder: {src}")
    src = src.resolve()
    if src.is_file() and not is_tar(src):
        raise UserError(f"{src} is not a .tar shard or a folder")
    if not (src.is_file() or src.is_dir()):
        raise UserError(f"{src} is not a regular file or a folder")
    if not os.access(src, os.R_OK | (os.X_OK if src.is_dir() else 0)):
        raise UserError(f"{src} is not readable")
    return src


# --------------------------------------------------------------------------- folders


def _is_hidden(root: Path, p: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)  # .DS_Store, .git/...


def folder_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(tars, other entries) under root in sorted order. Symlinked folders are listed as
    entries, never entered; loose hidden files are skipped."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        files += [here / d for d in dirnames if (here / d).is_symlink()]
        files += [here / f for f in filenames]
    files.sort()
    tars = [p for p in files if is_tar(p) and not p.is_symlink()]
    loose = [p for p in files if (not is_tar(p) or p.is_symlink()) and not _is_hidden(root, p)]
    return tars, loose


def folder_entry(root: Path, p: Path) -> Entry | None:
    rel = p.relative_to(root).as_posix()
    st = p.lstat()
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, None, rel, "link", f"symbolic link to {os.readlink(p)!r}, not followed")
    if not stat.S_ISREG(st.st_mode):
        return None  # fifos, sockets, devices: never opened
    if st.st_nlink > 1:
        return Entry(rel, None, rel, "link", f"hard link ({st.st_nlink} names), not followed")
    return Entry(rel, p.read_bytes(), rel)


# --------------------------------------------------------------------------- tars


def _member_entry(member: TarMember, label: str) -> Entry | None:
    m = member.info
    origin = f"{label}:{m.name}"
    if m.issym() or m.islnk():
        kind = "symbolic" if m.issym() else "hard"
        return Entry(m.name, None, origin, "link", f"{kind} link to {m.linkname!r}, not followed")
    if not m.isfile():
        return None  # folders and special members carry no sample data
    return Entry(m.name, member.read(), origin)


def iter_tar(path: Path, label: str) -> Iterator[Entry]:
    """Members in stored order; damage ends the shard with one `shard_truncated` (or, when
    nothing could be read, `shard_unreadable`) entry instead of an exception."""
    try:
        tar = open_tar(path, compressed=True)
    except TAR_ERRORS as e:
        yield Entry("", None, label, "shard_unreadable", f"not a readable tar: {e}"[:200])
        return
    with tar:
        member_name = ""
        try:
            for member in tar_members(tar):
                member_name = member.info.name
                e = _member_entry(member, label)
                if e is not None:
                    yield e
            if ends_cleanly(tar):
                return
            # Cut (or garbage) between members: the last sample may still be whole.
            detail, cut_inside = f"tar ends without an end-of-archive block after {member_name or 'no member'}", False
        except TAR_ERRORS as err:
            detail, cut_inside = f"damaged at {member_name or 'the first member'}: {err}"[:200], True
    yield Entry(member_name, None, f"{label}:{member_name}", "shard_truncated", detail, cut_inside or not member_name)
