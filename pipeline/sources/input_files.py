"""Local input files (captions, benchmarks) as they really arrive: checked before any work, read with errors
that name the file, the row and the fix.

- `sniff(path)`: a compressed file (gzip, bz2, xz, zstd, zip) or a Parquet file under a text name, or a
  text file (or an empty one) named .parquet, is refused up front with what to do.
- `unreadable(path, e, where)`: an `InputFileError` for an OS or decoding error (permissions, a symlink
  loop, a truncated Parquet file, a corrupt page), naming the file and the place reached.
- `Fingerprint`: size and mtime of a file when the source was opened; a file that changes while it is read
  (a download still going, a writer appending) stops its shard with a clear error instead of giving rows
  of two different versions.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa

# leading bytes -> (what the file is, how to make it readable)
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed", "gzip -dc FILE > PLAIN"),
    (b"BZh", "bzip2-compressed", "bzip2 -dc FILE > PLAIN"),
    (b"\xfd7zXZ\x00", "xz-compressed", "xz -dc FILE > PLAIN"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -dc FILE > PLAIN"),
    (b"PK\x03\x04", "a zip archive", "unzip FILE"),
)
PARQUET_MAGIC = b"PAR1"


class InputFileError(ValueError):
    """An input file that cannot be read as what its name says (or at all); the message names it and the fix."""


def sniff(path: Path) -> None:
    """Refuse, before any work, a file whose bytes are not what its name says."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise unreadable(path, e) from None
    suffix = path.suffix.lower()
    for magic, what, fix in _MAGIC:
        if head.startswith(magic):
            plain = path.with_name(f"{path.stem}.plain{path.suffix}")
            raise InputFileError(f"{path}: the file is {what}, not {suffix or 'a data'} text. Fix: decompress "
                                 f"it first ({fix.replace('FILE', str(path)).replace('PLAIN', str(plain))}) and "
                                 "pass the result instead (a folder given as input must not hold the compressed file).")
    if suffix == ".parquet":
        if size == 0:
            raise InputFileError(f"{path}: the file is empty (0 bytes), not a Parquet file. Fix: copy it "
                                 "again (a download or copy may have been cut), or remove it.")
        if not head.startswith(PARQUET_MAGIC):
            raise InputFileError(f"{path}: not a Parquet file (it does not start with PAR1; starts with "
                                 f"{head[:8]!r}). Fix: copy it again if it was cut, or give it the suffix of "
                                 "what it holds (.jsonl, .json or .csv).")
    elif head.startswith(PARQUET_MAGIC):
        raise InputFileError(f"{path}: the file is Parquet, named {suffix}. Fix: rename it to "
                             f"{path.with_suffix('.parquet').name}.")


def unreadable(path: Path, e: BaseException, where: str | None = None) -> InputFileError:
    """A clear error for a file that failed to open or decode."""
    at = f" ({where})" if where else ""
    if isinstance(e, PermissionError):
        fix = (f"give the user running ssvd read access (e.g. chmod a+r {path}), or copy the file somewhere "
               "readable")
        what = "permission denied"
    elif isinstance(e, OSError) and e.errno == errno.ELOOP:
        what, fix = "a symlink loop", "point the link at a real file, or remove it"
    elif isinstance(e, OSError) and e.errno == errno.ENOENT:
        what = "no such file (a broken symlink, or removed while the run went on)"
        fix = "restore the file or point the link at it"
    elif isinstance(e, OSError) and e.errno == errno.EISDIR:
        what, fix = "a directory, not a file", "pass the directory itself, or a file in it"
    elif isinstance(e, (pa.ArrowException, OSError)) and path.suffix.lower() == ".parquet":
        what = f"not a readable Parquet file ({str(e).strip()})"
        fix = "the file is truncated or corrupt: copy or download it again, or remove it"
    elif isinstance(e, UnicodeDecodeError):
        what, fix = f"not UTF-8 text ({e})", "convert the file to UTF-8 (e.g. iconv -t UTF-8)"
    else:
        what, fix = f"cannot be read ({type(e).__name__}: {e})", "check the file, copy it again, or remove it"
    return InputFileError(f"{path}{at}: {what}. Fix: {fix}.")


def kind_of(path: Path) -> str | None:
    """"file", "dir" or None (nothing there). A broken link, a link loop, a path through a folder the user may
    not enter, or a pipe, socket or device is an InputFileError naming it, never a traceback or "no such file"."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        if os.path.islink(path):  # a link to nothing
            raise unreadable(path, e) from None
        return None
    except NotADirectoryError:
        return None
    except OSError as e:  # ELOOP, EACCES, ...
        raise unreadable(path, e) from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise InputFileError(f"{path}: not a regular file (a pipe, socket or device). Fix: write the data to a file "
                         "first; ssvd reads each input file twice (its head when the run starts, then its rows).")


def walk_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Data files under `root` (by suffix), recursively, sorted by path; hidden files and folders skipped;
    symlinked folders not followed (a link loop cannot make it endless). A folder that cannot be listed, or a
    data file's name that leads nowhere (a broken link, a link loop), is an InputFileError naming it: a file
    the scan cannot see would otherwise be silently missing from the corpus."""
    def fail(e: OSError) -> None:
        raise unreadable(Path(e.filename or root), e) from None

    found = []
    for d, dirs, files in os.walk(root, onerror=fail, followlinks=False):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for name in files:
            f = Path(d) / name
            if name.startswith(".") or f.suffix.lower() not in suffixes:
                continue
            if kind_of(f) == "file":
                found.append(f)
    return sorted(found, key=lambda f: f.as_posix())


def guarded_rows(path: Path, rows: Iterator[tuple]) -> Iterator[tuple]:
    """`rows` ((where, record, error) per row of `path`) passed through; a file that cannot be read on (a
    corrupt Parquet page, a file removed or made unreadable meanwhile) raises InputFileError naming the last
    row read."""
    where = "before its first row"
    try:
        for row in rows:
            where = "after " + row[0].removeprefix(f"{path} ")
            yield row
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise unreadable(path, e, where) from None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "Fingerprint":
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns)

    def check(self, path: Path, rows_read: int) -> None:
        """Raise InputFileError if `path` changed since the fingerprint was taken."""
        try:
            now = Fingerprint.of(path)
        except OSError as e:
            raise unreadable(path, e, f"at the end, after {rows_read} row(s)") from None
        if now != self:
            raise InputFileError(
                f"{path}: the file changed while it was being read (size {self.size} -> {now.size} bytes; "
                f"{rows_read} row(s) read). ssvd reads each input file as one fixed version, so a corpus never "
                "mixes rows of two. Fix: wait until the file is completely written (or copy it to a place "
                "nothing writes to), then run the same command again: rows already done are kept.")
