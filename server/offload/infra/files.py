"""Reading files for tools, but only inside the allowed roots (OFFLOAD_ROOTS).

The host model names files; the server reads them so the host never has to. That makes this
module the fence: every match is resolved to its real path (symlinks followed) and must lie
inside a root. The check is repeated on the opened file descriptor, so swapping a path for a
symlink between the check and the open (a classic race) cannot leak a file from outside.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from offload.config.settings import Settings
from offload.core.errors import PathRefusedError

_HOW_TO_ALLOW = "to allow it, add its directory to OFFLOAD_ROOTS (paths separated by ':') in the server's env"
_BINARY_SNIFF_BYTES = 8192
# A glob that has to list more directories than this is refused rather than walked on.
MAX_GLOB_DIRS = 100_000


def _fmt_roots(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "(none)"


def _inside(real: Path, roots: Sequence[Path]) -> bool:
    return any(real == r or real.is_relative_to(r) for r in roots)


def _real_roots(roots: Sequence[Path]) -> list[Path]:
    if not roots:
        raise PathRefusedError(f"no allowed roots are configured; {_HOW_TO_ALLOW}")
    return [Path(r).expanduser().resolve() for r in roots]


def _check_inside(shown: str, real: Path, roots: Sequence[Path]) -> None:
    if not _inside(real, roots):
        via = "" if str(real) == shown else f" (it resolves to {real})"
        raise PathRefusedError(
            f"path {shown}{via} is outside the allowed roots {_fmt_roots(roots)}; "
            f"send a path inside them, or {_HOW_TO_ALLOW}"
        )


def resolve(patterns: Sequence[str], roots: Sequence[Path], *, max_files: int = 200) -> list[Path]:
    """Real paths of the files `patterns` name, each checked to lie inside one of `roots`.

    A pattern is a path or a glob (`**` recurses); relative ones are taken from the first root.
    The result is de-duplicated and in a stable order (pattern order, then sorted matches).
    """
    if isinstance(patterns, str):  # a lone string would be iterated character by character
        patterns = [patterns]
    real_roots = _real_roots(roots)
    found: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        if not pattern or not pattern.strip():
            raise PathRefusedError("an empty path was given; send a file path or a glob such as 'logs/*.log'")
        if "\x00" in pattern:  # the OS rejects NUL in paths with a ValueError, which would crash the tool
            raise PathRefusedError(f"path {pattern[:80]!r} contains a NUL character; send a plain file path or glob")
        try:
            matches = _matches(pattern, roots, real_roots, max_files)
            for match in matches:
                real = match.resolve()
                _check_inside(str(match), real, real_roots)
                if not real.exists():
                    raise PathRefusedError(
                        f"no such file: {match}; send an existing path inside {_fmt_roots(real_roots)}"
                    )
                if real.is_dir():
                    raise PathRefusedError(
                        f"{match} is a directory; send files, e.g. the glob '{match}/**/*.py' or '{match}/*'"
                    )
                if real not in seen:
                    seen.add(real)
                    found.append(real)
                if len(found) > max_files:
                    raise PathRefusedError(
                        f"the paths match more than {max_files} files; "
                        "narrow the glob (e.g. a subdirectory or a file extension) or send fewer paths"
                    )
        except (OSError, RuntimeError) as exc:  # a name longer than the file system allows, a loop of links
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise PathRefusedError(f"cannot use path {pattern[:80]!r}: {why}; send a plain file path or glob") from None
    return found


def _matches(pattern: str, roots: Sequence[Path], real_roots: Sequence[Path], max_files: int) -> list[Path]:
    base = Path(pattern).expanduser()
    if not base.is_absolute():
        base = Path(roots[0]).expanduser() / base
    if not glob.has_magic(str(base)):
        return [base]
    if ".." in Path(pattern).parts:
        # Matching "*/../x" lists outside the roots, and "outside" versus "matched nothing" would
        # tell whether a file exists there: refuse before touching the file system.
        raise PathRefusedError(
            f"the glob {pattern[:200]!r} contains '..', which can lead outside the allowed roots; "
            "send a glob without '..'"
        )
    matches = _Glob(pattern, real_roots, limit=max_files + 1).run(base)
    if not matches:
        raise PathRefusedError(
            f"the glob {pattern[:200]!r} matched no files under {_fmt_roots(real_roots)}; "
            "check the pattern (use '**/' to search subdirectories) or send exact paths"
        )
    return matches


class _Glob:
    """The stdlib glob's matching rules, walked so that it never lists a directory outside the roots.

    `glob.iglob` lists wherever the pattern points (so a refusal could name files found outside,
    and "matched nothing" versus "outside" told whether they exist) and follows symlinked
    directories under `**` without end (two links to `..` meant 2**40 paths). Here every
    directory is resolved and checked before it is listed, and each real directory is walked at
    most once per pattern position.
    """

    def __init__(self, pattern: str, real_roots: Sequence[Path], *, limit: int) -> None:
        self.pattern = pattern
        self.real_roots = real_roots
        self.limit = limit
        self.out: list[Path] = []
        self.seen: set[tuple[Path, int]] = set()
        self.listed = 0

    def run(self, base: Path) -> list[Path]:
        parts = base.parts
        first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        self.parts = parts[first:]
        self._walk(Path(*parts[:first]), 0)
        return sorted(self.out)

    def _enter(self, shown: Path, index: int) -> bool:
        """Check a directory about to be listed; False if it was already walked at this position."""
        real = shown.resolve()
        if not _inside(real, self.real_roots):
            via = "" if real == shown else f" (it resolves to {real})"
            raise PathRefusedError(
                f"the glob {self.pattern[:200]!r} reaches {shown}{via}, outside the allowed roots "
                f"{_fmt_roots(self.real_roots)}; send a pattern inside them, or {_HOW_TO_ALLOW}"
            )
        if (real, index) in self.seen:
            return False
        self.seen.add((real, index))
        self.listed += 1
        if self.listed > MAX_GLOB_DIRS:
            raise PathRefusedError(
                f"the glob {self.pattern[:200]!r} walks more than {MAX_GLOB_DIRS:,} directories; "
                "narrow it to a subdirectory or send exact paths"
            )
        return True

    def _entries(self, directory: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except (NotADirectoryError, FileNotFoundError, PermissionError):
            return []

    def _found(self, path: Path) -> None:
        if len(self.out) < self.limit:
            self.out.append(path)

    def _walk(self, directory: Path, index: int) -> None:
        if len(self.out) >= self.limit:
            return
        part = self.parts[index]
        last = index == len(self.parts) - 1
        if part == "**":
            self._walk_any_depth(directory, index, last)
        elif not glob.has_magic(part):  # a literal name (or '..') between magic parts
            self._walk_literal(directory / part, index, last)
        elif self._enter(directory, index):
            hidden_ok = part.startswith(".")
            for entry in self._entries(directory):
                if (entry.name.startswith(".") and not hidden_ok) or not fnmatch.fnmatch(entry.name, part):
                    continue
                if last and not entry.is_dir():
                    self._found(directory / entry.name)
                elif not last and entry.is_dir():
                    self._walk(directory / entry.name, index + 1)

    def _walk_any_depth(self, directory: Path, index: int, last: bool) -> None:
        if not self._enter(directory, index):
            return
        if not last:
            self._walk(directory, index + 1)  # '**' matching no directory at all
        for entry in self._entries(directory):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                self._walk(directory / entry.name, index)
            elif last:  # 'dir/**': every file below
                self._found(directory / entry.name)

    def _walk_literal(self, path: Path, index: int, last: bool) -> None:
        if last:
            if os.path.lexists(path) and not path.is_dir():
                self._found(path)
        elif path.is_dir():
            self._walk(path, index + 1)


def _fd_real_path(fd: int) -> Path | None:
    """Where an open descriptor really points, from the kernel rather than from the name we used."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        return Path(os.readlink(proc))
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        import fcntl

        buf = fcntl.fcntl(fd, 50, b"\0" * 1024)  # F_GETPATH
        return Path(buf.split(b"\0", 1)[0].decode())
    return None  # pragma: no cover - other platforms fall back to the inode comparison


def read_text(path: Path | str, *, max_bytes: int, roots: Sequence[Path] | None = None) -> str:
    """The UTF-8 text of one file, refusing large, binary or (given `roots`) escaped files.

    O_NOFOLLOW refuses a final component that became a symlink after `resolve`; comparing the
    descriptor's real path with the roots also catches a swapped parent directory.
    """
    path = Path(path)
    real_roots = _real_roots(roots) if roots is not None else None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PathRefusedError(f"no such file: {path}; send an existing file path") from None
    except OSError as exc:
        reason = "it is a symlink" if os.path.islink(path) else exc.strerror
        raise PathRefusedError(f"cannot open {path} ({reason}); send the real file's path") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PathRefusedError(f"{path} is not a regular file; send a text file's path")
        if real_roots is not None:
            real = _fd_real_path(fd)
            if real is None:  # pragma: no cover - platforms without /proc or F_GETPATH
                same = os.stat(path.resolve())
                real = path.resolve() if (same.st_dev, same.st_ino) == (info.st_dev, info.st_ino) else None
            if real is None:  # pragma: no cover
                raise PathRefusedError(f"{path} changed while it was being opened; send it again")
            _check_inside(str(path), real, real_roots)
        if info.st_size > max_bytes:
            raise PathRefusedError(_too_big(path, info.st_size, max_bytes))
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # the file grew after fstat
        raise PathRefusedError(_too_big(path, len(data), max_bytes))
    nul = data.find(b"\0", 0, _BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise PathRefusedError(
            f"{path} looks binary (a NUL byte at offset {nul}); offload reads text files only — "
            "send a text file, or convert it to text first"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PathRefusedError(
            f"{path} is not valid UTF-8 (byte offset {exc.start}); offload reads UTF-8 text only — "
            "convert it (e.g. iconv -t utf-8) or send the text as content"
        ) from None


def _too_big(path: Path, size: int, limit: int) -> str:
    return (
        f"{path} is {size:,} bytes, over the {limit:,}-byte limit per file; send a smaller file or a "
        "slice of it, or raise OFFLOAD_MAX_FILE_BYTES in the server's env"
    )


@contextmanager
def atomic_writer(target: Path, roots: Sequence[Path], *, may_replace: Callable[[bytes], bool]) -> Iterator[TextIO]:
    """A text file handle whose contents become `target` when the block ends without error.

    The directory is opened once and checked through its descriptor (a parent swapped for a
    symlink after an earlier check is caught); the data goes to a new temporary file in it and is
    renamed over the name, so a symlink or a hard link planted at the name is replaced, never
    written through. An existing file is only replaced when `may_replace(first 4 KiB)` says it is
    one of ours (a file the user wrote is never clobbered silently); an empty one always may be.
    """
    real_roots = _real_roots(roots)
    parent, name = target.parent, target.name
    try:
        dir_fd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise PathRefusedError(f"cannot write {target} ({exc.strerror}); send another path") from None
    try:
        real = _fd_real_path(dir_fd)
        if real is None:  # pragma: no cover - platforms without /proc or F_GETPATH
            real = parent.resolve()
        _check_inside(str(parent), real, real_roots)
        _check_replaceable(dir_fd, name, target, may_replace)
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise PathRefusedError(f"cannot write in {parent} ({exc.strerror}); send another path") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                yield fh
            _check_replaceable(dir_fd, name, target, may_replace)  # it may have appeared meanwhile
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _check_replaceable(dir_fd: int, name: str, target: Path, may_replace: Callable[[bytes], bool]) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PathRefusedError(f"{target} is a symlink; offload does not write through links — send another name")
    if not stat.S_ISREG(info.st_mode):
        raise PathRefusedError(f"{target} exists and is not a regular file; send another name")
    if info.st_size == 0:
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(name, flags, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(4096)
    if not may_replace(head):
        raise PathRefusedError(
            f"{target} already exists and was not written by offload; send a new file name, "
            "or delete that file first if it may be replaced"
        )


def read_many(patterns: Sequence[str], settings: Settings, *, max_files: int = 200) -> list[tuple[Path, str]]:
    """Resolve and read every file, within the per-file and total byte limits of `settings`."""
    paths = (
        resolve(patterns, settings.roots)
        if max_files is None
        else resolve(patterns, settings.roots, max_files=max_files)
    )
    # Sizes first, so a request that is too large in total fails before anything is read.
    total = 0
    for p in paths:
        total += p.stat().st_size
    if total > settings.max_total_bytes:
        raise PathRefusedError(
            f"the {len(paths)} files add up to {total:,} bytes, over the "
            f"{settings.max_total_bytes:,}-byte limit per call; send fewer or smaller files, "
            "or raise OFFLOAD_MAX_TOTAL_BYTES in the server's env"
        )
    out: list[tuple[Path, str]] = []
    read = 0
    for p in paths:
        text = read_text(p, max_bytes=settings.max_file_bytes, roots=settings.roots)
        read += len(text.encode("utf-8"))
        if read > settings.max_total_bytes:  # files grew between stat and read
            raise PathRefusedError(
                f"the files grew past the {settings.max_total_bytes:,}-byte total limit while being read; "
                "send fewer files or raise OFFLOAD_MAX_TOTAL_BYTES"
            )
        out.append((p, text))
    return out


def shown(path: Path, roots: Sequence[Path]) -> str:
    """How a file is named to the model and in results: relative to the first root when under it."""
    if roots:
        try:
            return str(path.relative_to(Path(roots[0]).resolve()))
        except ValueError:
            pass
    return str(path)
