"""Attacks on the file fence (roots.py): real trees, real symlinks, hard links and FIFOs.

Decisions recorded here:
- A hard link inside a root to a file outside is the same inode under a name inside: reading it
  is allowed (it cannot be told apart from any other file there, and making it needed write
  access inside the root). Writing through one is not: `write_to` replaces the name, never the
  shared inode.
- Case-insensitive file systems: the check compares resolved paths case-sensitively, so a path
  spelled in another case than the configured root is refused (the safe side), never admitted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from offload.core.errors import PathRefusedError
from offload.infra.files import atomic_writer, read_text, resolve


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    outside = tmp_path / "secret"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (root / "src" / "a.py").write_text("a = 1\n")
    (outside / "id_rsa_canary.txt").write_text("TOP SECRET\n")
    return root.resolve(), outside.resolve()


# --- globs ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["absolute", "dotdot", "dotdot-after-magic"])
def test_glob_outside_the_roots_is_refused_without_listing_it(tree: tuple[Path, Path], shape: str) -> None:
    # A glob whose directory lies outside must not be walked: the refusal would otherwise name
    # the files found there (and "matched no files" vs "outside" is an existence oracle).
    root, outside = tree
    pattern = {
        "absolute": f"{outside}/*.txt",
        "dotdot": "../secret/*.txt",
        "dotdot-after-magic": "sr*/../../secret/*.txt",
    }[shape]
    with pytest.raises(PathRefusedError) as hit:
        resolve([pattern], [root])
    with pytest.raises(PathRefusedError) as miss:
        resolve([pattern.replace("*.txt", "*.nothing-here")], [root])
    assert "id_rsa_canary" not in str(hit.value)
    assert "outside the allowed roots" in str(hit.value)
    assert str(hit.value).replace("*.txt", "*.nothing-here") == str(miss.value)


def test_glob_through_a_symlinked_directory_out_is_refused_not_walked(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "ext").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathRefusedError, match="outside") as exc:
        resolve(["**/*.txt"], [root])
    assert "id_rsa_canary" not in str(exc.value)


def test_glob_follows_symlinked_directories_inside_the_roots(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "alias").symlink_to(root / "src", target_is_directory=True)
    assert resolve(["alias/*.py"], [root]) == [root / "src" / "a.py"]
    assert resolve(["**/*.py"], [root]) == [root / "src" / "a.py"]


def test_glob_keeps_hidden_files_hidden(tree: tuple[Path, Path]) -> None:
    # The same rule as the stdlib glob: '*' and '**' skip dot-names unless the pattern names them.
    root, _ = tree
    (root / ".git").mkdir()
    (root / ".git" / "config.py").write_text("x")
    (root / ".env.py").write_text("x")
    assert resolve(["**/*.py"], [root]) == [root / "src" / "a.py"]
    assert resolve([".*.py"], [root]) == [root / ".env.py"]


def test_symlink_loops_under_double_star_terminate(tree: tuple[Path, Path]) -> None:
    # Two links back to the parent made the stdlib glob walk 2**40 paths (it never finished).
    root, _ = tree
    (root / "src" / "up1").symlink_to("..", target_is_directory=True)
    (root / "src" / "up2").symlink_to("..", target_is_directory=True)
    code = (
        "from pathlib import Path\n"
        "from offload.infra.files import resolve\n"
        "from offload.core.errors import PathRefusedError\n"
        f"root = Path({str(root)!r})\n"
        "print([str(p) for p in resolve(['**/*.py'], [root])])\n"
        "try:\n    resolve(['**/*.rs'], [root])\nexcept PathRefusedError as e:\n    print(str(e)[:29])\n"
    )
    # A guard against a hang, not a speed assertion: the old code ran for hours on '**/*.rs'.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr([str(root / "src" / "a.py")]), "the glob '**/*.rs' matched no"]


def test_tilde_expands_to_home_and_is_still_fenced(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        resolve(["~/.ssh/*"], [root])
    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        resolve(["~/.bashrc"], [root])


# --- reading ----------------------------------------------------------------------------


def test_hard_link_to_outside_reads_like_any_file_inside(tree: tuple[Path, Path]) -> None:
    # Documented decision (module docstring): indistinguishable, so allowed.
    root, outside = tree
    os.link(outside / "id_rsa_canary.txt", root / "hl.txt")
    (found,) = resolve(["hl.txt"], [root])
    assert read_text(found, max_bytes=100, roots=[root]) == "TOP SECRET\n"


def test_device_file_is_refused(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(PathRefusedError, match="outside"):
        resolve(["/dev/zero"], [root])
    # Even with /dev allowed, a device is not a regular file.
    with pytest.raises(PathRefusedError, match="not a regular file"):
        read_text("/dev/zero", max_bytes=100, roots=[Path("/dev")])


def test_huge_file_is_refused_before_reading(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    big = root / "sparse.log"
    with big.open("wb") as fh:  # 10 GB apparent size, no disk used
        fh.truncate(10 * 1024**3)
    with pytest.raises(PathRefusedError, match="10,737,418,240 bytes"):
        read_text(big, max_bytes=2_000_000, roots=[root])


# --- writing ----------------------------------------------------------------------------


def _write(target: Path, roots: list[Path], text: str = "new\n") -> None:
    with atomic_writer(target, roots, may_replace=lambda head: head.startswith(b"# ours")) as fh:
        fh.write(text)


def test_writer_creates_and_replaces_only_its_own_files(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    _write(root / "r.md", [root], "# ours\n1\n")
    _write(root / "r.md", [root], "# ours\n2\n")
    assert (root / "r.md").read_text() == "# ours\n2\n"
    (root / "README.md").write_text("the user's readme\n")
    with pytest.raises(PathRefusedError, match="already exists"):
        _write(root / "README.md", [root])
    assert (root / "README.md").read_text() == "the user's readme\n"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "r.md", "src"]  # no temp files left


def test_writer_never_writes_through_a_symlink(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (outside / "x.md").write_text("# ours outside\n")
    (root / "link.md").symlink_to(outside / "x.md")
    with pytest.raises(PathRefusedError, match="symlink"):
        _write(root / "link.md", [root])
    assert (outside / "x.md").read_text() == "# ours outside\n"


def test_writer_never_writes_through_a_hard_link(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (outside / "x.md").write_text("# ours but outside\n")
    os.link(outside / "x.md", root / "hl.md")
    _write(root / "hl.md", [root], "# ours\nreplaced\n")
    assert (outside / "x.md").read_text() == "# ours but outside\n"
    assert (root / "hl.md").read_text() == "# ours\nreplaced\n"


def test_writer_rechecks_a_parent_swapped_for_a_symlink(tree: tuple[Path, Path]) -> None:
    # The race: the directory was checked, then replaced by a link to somewhere outside.
    root, outside = tree
    (root / "out").mkdir()
    target = root / "out" / "r.md"
    os.rename(root / "out", root / "out.old")
    (root / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathRefusedError, match="outside the allowed roots"):
        _write(target, [root])
    assert sorted(p.name for p in outside.iterdir()) == ["id_rsa_canary.txt"]


def test_writer_refuses_fifo_and_directory_names(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mkfifo(root / "p.md")
    with pytest.raises(PathRefusedError, match="not a regular file"):
        _write(root / "p.md", [root])
    (root / "d.md").mkdir()
    with pytest.raises(PathRefusedError, match="not a regular file"):
        _write(root / "d.md", [root])


def test_a_server_started_in_the_filesystem_root_reads_nothing_until_roots_are_set(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from offload.config.settings import Settings\n"
        "from offload.infra.files import resolve\n"
        "s = Settings.from_env({'HOME': '/tmp'})\n"
        "print(s.roots)\n"
        "try:\n    resolve(['etc/hostname'], s.roots)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "()"
    assert "PathRefusedError" in out and "OFFLOAD_ROOTS" in out
