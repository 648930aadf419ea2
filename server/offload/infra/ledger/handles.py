"""Handles: content kept in the ledger so a later trim can reslice it without a resend.

The id is a digest of the content, so saving the same text twice returns the same handle and
stores one row; rows unused for a week are pruned. Compression runs in a worker thread so a
multi-megabyte result does not stall the event loop other tool calls share.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from datetime import datetime, timedelta

from offload.core.errors import InputError
from offload.infra.ledger.db import Also, Ledger
from offload.infra.ledger.windows import iso, utcnow

HANDLE_PREFIX = "h_"


def handle_for(content: str, owner: str | None = None) -> str:
    # The owner is part of the digest: two tokens trimming the same text get two handles, so
    # neither can read (or learn of) the other's by its id.
    digest = hashlib.sha256(content.encode("utf-8"))
    if owner is not None:
        digest.update(b"\0owner:" + owner.encode("utf-8"))
    return HANDLE_PREFIX + digest.hexdigest()[:12]


# Below this many bytes zlib takes less time than a hop to a worker thread and back.
COMPRESS_IN_THREAD_OVER = 16_000


async def save(
    ledger: Ledger,
    content: str,
    kind: str,
    *,
    owner: str | None = None,
    now: datetime | None = None,
    also: Also | None = None,
) -> str:
    """Store `content` for `owner` (idempotent) and return its handle; `also` joins the transaction."""
    handle = handle_for(content, owner)
    raw = content.encode("utf-8")
    # A small original is compressed and written on the loop (lite.py); a big one on threads.
    small = len(raw) <= COMPRESS_IN_THREAD_OVER
    blob = zlib.compress(raw, 6) if small else await asyncio.to_thread(zlib.compress, raw, 6)
    ts = iso(now or utcnow())
    async with ledger.write(inline=small) as conn:
        await conn.execute(
            "INSERT INTO handles (id, kind, bytes, created_at, last_used_at, content, owner)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET last_used_at = excluded.last_used_at",
            (handle, kind, len(raw), ts, ts, blob, owner),
        )
        if also is not None:
            await also(conn)
    return handle


async def load(ledger: Ledger, handle: str, *, owner: str | None = None, now: datetime | None = None) -> str:
    """The content `owner` saved under `handle`; refreshes its last use so it is not pruned."""
    async with ledger.write() as conn:
        cur = await conn.execute("SELECT content FROM handles WHERE id = ? AND owner IS ?", (handle, owner))
        row = await cur.fetchone()
        await cur.close()
        if row is None:
            raise InputError(
                f"handle {handle!r} is unknown or expired (handles are kept 7 days after last use); "
                "send the content or its path instead"
            )
        await conn.execute("UPDATE handles SET last_used_at = ? WHERE id = ?", (iso(now or utcnow()), handle))
    data = await asyncio.to_thread(zlib.decompress, row[0])
    return data.decode("utf-8")


async def kind_of(ledger: Ledger, handle: str, *, owner: str | None = None) -> str | None:
    """The kind recorded with `owner`'s `handle`, or None if there is no such handle."""
    cur = await ledger.conn.execute("SELECT kind FROM handles WHERE id = ? AND owner IS ?", (handle, owner))
    row = await cur.fetchone()
    await cur.close()
    return None if row is None else str(row[0])


async def prune(ledger: Ledger, older_than_days: int = 7, *, now: datetime | None = None) -> int:
    """Delete handles not used for `older_than_days`; returns how many went."""
    cutoff = iso((now or utcnow()) - timedelta(days=older_than_days))
    async with ledger.write() as conn:
        cur = await conn.execute("DELETE FROM handles WHERE last_used_at < ?", (cutoff,))
        deleted = cur.rowcount
        await cur.close()
    return max(deleted, 0)
