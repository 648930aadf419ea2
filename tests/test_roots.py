"""roots.py against a real directory tree with real symlinks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from offload.config.settings import Settings
from offload.core.errors import PathRefusedError
from offload.infra.files import read_many, read_text, resolve


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    outside = tmp_path / "secret"
    (root / "src" / "pkg").mkdir(parents=True)
    outside.mkdir()
    (root / "README.md").write_text("# readme\n")
    (root / "src" / "a.py").write_text("a = 1\n")
    (root / "src" / "pkg" / "b.py").write_text("b = 2\n")
    (outside / "key.txt").write_text("TOP SECRET\n")
    return root.resolve(), outside.resolve()


def _settings(roots: tuple[Path, ...], **kw: Any) -> Settings:
    return Settings(policy_path=Path("p.yaml"), db_path=Path("d.db"), session_id="s", roots=roots, **kw)


def test_relative_and_absolute_inside(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert resolve(["README.md"], [root]) == [root / "README.md"]
    assert resolve([str(root / "src" / "a.py")], [root]) == [root / "src" / "a.py"]


def test_dotdot_escape_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError) as exc:
        resolve(["../secret/key.txt"], [root])
    msg = str(exc.value)
    assert "outside the allowed roots" in msg and str(root) in msg and "OFFLOAD_ROOTS" in msg
    assert "key.txt" in msg


def test_absolute_outside_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        resolve([str(outside / "key.txt")], [root])


def test_file_symlink_to_outside_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "link.txt").symlink_to(outside / "key.txt")
    with pytest.raises(PathRefusedError, match="resolves to"):
        resolve(["link.txt"], [root])


def test_directory_symlink_to_outside_refused_even_through_glob(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "ext").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathRefusedError, match="outside"):
        resolve(["ext/key.txt"], [root])
    with pytest.raises(PathRefusedError, match="outside"):
        resolve(["**/*.txt"], [root])


def test_symlink_inside_ok(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "alias.py").symlink_to(root / "src" / "a.py")
    assert resolve(["alias.py"], [root]) == [root / "src" / "a.py"]


def test_glob_recursive_sorted_and_deduplicated(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    got = resolve(["src/**/*.py", "src/a.py"], [root])
    assert got == [root / "src" / "a.py", root / "src" / "pkg" / "b.py"]


def test_glob_matching_nothing_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError, match="matched no files"):
        resolve(["**/*.rs"], [root])


def test_directory_refused_with_glob_hint(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError, match=r"is a directory.*\*\*/\*"):
        resolve(["src"], [root])


def test_missing_file_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError, match="no such file"):
        resolve(["nope.txt"], [root])


def test_too_many_files(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    for i in range(5):
        (root / f"f{i}.log").write_text("x")
    assert len(resolve(["*.log"], [root], max_files=5)) == 5
    with pytest.raises(PathRefusedError, match="more than 4 files"):
        resolve(["*.log"], [root], max_files=4)


def test_multiple_roots(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    got = resolve(["README.md", str(outside / "key.txt")], [root, outside])
    assert got == [root / "README.md", outside / "key.txt"]


def test_read_text_size_limit(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    big = root / "big.txt"
    big.write_text("x" * 101)
    assert read_text(big, max_bytes=101) == "x" * 101
    with pytest.raises(PathRefusedError) as exc:
        read_text(big, max_bytes=100)
    assert "101 bytes" in str(exc.value) and "100-byte" in str(exc.value)
    assert "OFFLOAD_MAX_FILE_BYTES" in str(exc.value)


def test_read_text_binary_and_bad_utf8(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "img.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(PathRefusedError, match="binary"):
        read_text(root / "img.bin", max_bytes=1000)
    (root / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(PathRefusedError, match="not valid UTF-8"):
        read_text(root / "latin1.txt", max_bytes=1000)


def test_read_text_refuses_final_symlink_at_open_time(tree: tuple[Path, Path]) -> None:
    # The race: resolve() said the path was a plain file, then it was swapped for a symlink.
    root, outside = tree
    target = root / "swapped.txt"
    target.write_text("fine")
    (checked,) = resolve(["swapped.txt"], [root])
    target.unlink()
    target.symlink_to(outside / "key.txt")
    with pytest.raises(PathRefusedError, match="symlink"):
        read_text(checked, max_bytes=1000, roots=[root])


def test_read_text_rechecks_parent_swapped_for_symlink(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "sub").mkdir()
    (root / "sub" / "key.txt").write_text("fine")
    (checked,) = resolve(["sub/key.txt"], [root])
    os.rename(root / "sub", root / "sub.old")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        read_text(checked, max_bytes=1000, roots=[root])


def test_read_text_refuses_fifo_without_blocking(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mkfifo(root / "pipe")
    with pytest.raises(PathRefusedError, match="not a regular file"):
        read_text(root / "pipe", max_bytes=1000, roots=[root])


def test_read_many_limits(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    got = read_many(["src/**/*.py"], _settings((root,)))
    assert [(p.name, t) for p, t in got] == [("a.py", "a = 1\n"), ("b.py", "b = 2\n")]
    with pytest.raises(PathRefusedError, match="OFFLOAD_MAX_TOTAL_BYTES"):
        read_many(["src/**/*.py"], _settings((root,), max_total_bytes=10))
    with pytest.raises(PathRefusedError, match="OFFLOAD_MAX_FILE_BYTES"):
        read_many(["src/**/*.py"], _settings((root,), max_file_bytes=5))


@pytest.mark.parametrize("name", ["a" * 300, "a" * 5000, "d/" + "b" * 300 + "/*.py"])
def test_names_the_file_system_cannot_hold_are_refused_clearly(tmp_path: Path, name: str) -> None:
    # Found by the tool fuzzer: an over-long name raised a bare OSError (ENAMETOOLONG).
    with pytest.raises(PathRefusedError, match="send"):
        resolve([name], [tmp_path])
