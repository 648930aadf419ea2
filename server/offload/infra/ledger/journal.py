"""The spool for paid answers the ledger could not take (locked past every retry, disk full).

A line per attempt, JSON, appended and fsync'd beside the ledger file under an exclusive
flock. The next `Ledger.open` records every spooled attempt (inserts are idempotent on
request_key, so a line replayed twice still counts once) and its reservation release in one
transaction, and only then empties the file: a crash in between replays again, harmlessly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import HOLD, purge_stale
from offload.infra.ledger.records import Attempt, _insert

if TYPE_CHECKING:
    from offload.infra.ledger.budgets import Reservation
    from offload.infra.ledger.db import Ledger

log = logging.getLogger("offload.ledger")

SUFFIX = ".unrecorded.jsonl"


def journal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + SUFFIX)


@contextlib.contextmanager
def _locked(path: Path, mode: str, *, wait: bool = True) -> Iterator[IO[str]]:
    """The file under an exclusive flock; BlockingIOError at once if `wait` is off and it is taken."""
    with path.open(mode, encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# A hold as the journal names it: (id, session_id, expires_at). Row ids of reservations are reused
# once the newest row is gone (INTEGER PRIMARY KEY), so the id alone could name another call's live
# hold by the time the line is replayed; session and expiry pin it to the one this attempt took.
Hold = tuple[int, str | None, str | None]


def _encode(attempt: Attempt, reservation: Reservation | None) -> str:
    data = dataclasses.asdict(attempt)
    data["usage"] = dataclasses.asdict(attempt.usage)
    data["ts"] = w.iso(attempt.ts or w.utcnow())
    line: dict[str, Any] = {"attempt": data, "reservation_id": None if reservation is None else reservation.id}
    if reservation is not None:
        line["reservation_session"], line["reservation_expires"] = reservation.session_id, reservation.expires_at
    return json.dumps(line, ensure_ascii=False)


def _decode(line: str) -> tuple[Attempt, Hold | None]:
    raw = json.loads(line)
    data: dict[str, Any] = dict(raw["attempt"])
    data["usage"] = Usage(**data["usage"])
    data["ts"] = datetime.fromisoformat(str(data["ts"]).replace("Z", "+00:00"))
    rid = raw.get("reservation_id")
    hold = None if rid is None else (int(rid), raw.get("reservation_session"), raw.get("reservation_expires"))
    return Attempt(**data), hold


def spool(db_path: Path, attempt: Attempt, reservation: Reservation | None) -> Path:
    """Append `attempt` durably; raises OSError only if even the journal cannot be written."""
    path = journal_path(db_path)
    created = not path.exists()
    with _locked(path, "a") as fh:
        fh.write(_encode(attempt, reservation) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if created:  # the new directory entry must survive a crash too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def pending_bytes(db_path: Path) -> int:
    """The journal's size: 0 when nothing waits (a stat, cheap enough for every recorded call)."""
    try:
        return journal_path(db_path).stat().st_size
    except FileNotFoundError:
        return 0


def pending(db_path: Path) -> int:
    """How many spooled attempts wait for a replay."""
    path = journal_path(db_path)
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


async def replay(ledger: Ledger, *, wait: bool = True) -> int:
    """Record every spooled attempt once, then empty the journal. Returns rows newly inserted.

    With `wait` off, a journal another process holds (spooling or replaying it) is left to it.
    """
    path = journal_path(ledger.path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        with _locked(path, "r+", wait=wait) as fh:
            entries, inserted = await _record_all(ledger, fh)
    except BlockingIOError:  # only a non-waiting flock raises it
        return 0
    if entries:
        log.info("ledger journal: replayed %d spooled attempt(s), %d new row(s)", entries, inserted)
    return inserted


async def _record_all(ledger: Ledger, fh: IO[str]) -> tuple[int, int]:
    """(lines read, rows inserted): every line of the locked journal `fh` recorded, then the file emptied."""
    entries = []
    for n, line in enumerate(fh.read().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(_decode(line))
        except (ValueError, KeyError, TypeError) as exc:  # a line cut short by a crash mid-append
            log.warning("ledger journal %s line %d unreadable, skipped: %s", fh.name, n, exc)
    inserted = 0
    now = w.utcnow()
    async with ledger.write() as conn:
        for attempt, hold in entries:
            inserted += await _insert(conn, attempt, now, ledger, own=True)
            # The answer's calls row may be in already, written without its length while the
            # attempt waited here (0160): the learning signals skip a row with none.
            await conn.execute(
                "UPDATE calls SET out_tokens = ?, ended = ?"
                " WHERE session_id = ? AND final_key = ? AND out_tokens IS NULL",
                (
                    attempt.usage.output_tokens,
                    int(attempt.stop_reason != "max_tokens"),
                    attempt.session_id,
                    attempt.request_key,
                ),
            )
            if hold is None:
                continue
            rid, session, expires = hold
            if session is None:  # a line spooled before holds were pinned
                await conn.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            else:
                await conn.execute("DELETE FROM reservations WHERE " + HOLD, (rid, session, expires))
        # The full disk that sent these answers here also refused the releases of calls it failed
        # before they were sent: their servers are gone or their lease tells, so they go now, not
        # at the next reserve (a ledger reopened to read its report showed them held).
        await purge_stale(conn, now, ledger)
    fh.seek(0)
    fh.truncate()
    fh.flush()
    os.fsync(fh.fileno())
    return len(entries), inserted
