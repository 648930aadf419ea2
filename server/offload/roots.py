"""Reading files for tools, but only inside the allowed roots (OFFLOAD_ROOTS).

The host model names files; the server reads them so the host never has to. That makes this
module the fence: every match is resolved to its real path (symlinks followed) and must lie
inside a root. The check is repeated on the opened file descriptor, so swapping a path for a
symlink between the check and the open (a classic race) cannot leak a file from outside.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from offload.errors import PathRefusedError
from offload.settings import Settings

_HOW_TO_ALLOW = "to allow it, add its directory to OFFLOAD_ROOTS (paths separated by ':') in the server's env"
_BINARY_SNIFF_BYTES = 8192


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
        except OSError as exc:  # e.g. a name longer than the file system allows, a loop of links
            raise PathRefusedError(
                f"cannot use path {pattern[:80]!r}: {exc.strerror or exc}; send a plain file path or glob"
            ) from None
    return found


def _matches(pattern: str, roots: Sequence[Path], real_roots: Sequence[Path], max_files: int) -> list[Path]:
    base = Path(pattern).expanduser()
    if not base.is_absolute():
        base = Path(roots[0]).expanduser() / base
    if not glob.has_magic(str(base)):
        return [base]
    matches = _glob_files(str(base), limit=max_files + 1)
    if not matches:
        raise PathRefusedError(
            f"the glob {pattern[:200]!r} matched no files under {_fmt_roots(real_roots)}; "
            "check the pattern (use '**/' to search subdirectories) or send exact paths"
        )
    return matches


def _glob_files(pattern: str, *, limit: int) -> list[Path]:
    # iglob so a huge tree stops being walked once we already know it is too many files.
    out: list[Path] = []
    for hit in glob.iglob(pattern, recursive=True):
        p = Path(hit)
        if p.is_dir():
            continue
        out.append(p)
        if len(out) >= limit:
            break
    return sorted(out)


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


def read_many(patterns: Sequence[str], settings: Settings) -> list[tuple[Path, str]]:
    """Resolve and read every file, within the per-file and total byte limits of `settings`."""
    paths = resolve(patterns, settings.roots)
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
