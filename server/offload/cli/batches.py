"""`offload batches`: a table (or JSON) of the batches in the ledger."""

from __future__ import annotations

import json

import anyio

from offload.config.settings import Settings
from offload.core.money import fmt_usd, usd_json
from offload.infra.ledger import batches as store
from offload.infra.ledger import windows as w
from offload.services.batches.views import age


def cmd_list(settings: Settings, *, include_done: bool = False, as_json: bool = False) -> int:
    """`offload batches`: a table (or JSON) of batches in the ledger."""
    if settings.db_url is None and not settings.db_path.exists():
        print(f"no ledger at {settings.db_path}: no batches yet")
        return 0
    rows = anyio.run(store.list_batches_readonly, settings.ledger_target, include_done)
    if as_json:
        for r in rows:
            for k in ("worst_pusd", "typical_pusd", "sync_pusd", "cost_pusd"):
                r[k.replace("_pusd", "_usd")] = usd_json(int(r.pop(k)))
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no open batches (use --all to include finished ones)" if not include_done else "no batches")
        return 0
    now = w.utcnow()
    head = f"{'batch':<16} {'state':<6} {'age':>7} {'done':>15} {'cost':>10} {'estimate':>10}  model"
    print(head)
    for r in rows:
        done = f"{r['settled']:,}/{r['request_count']:,}"
        print(
            f"{r['id']:<16} {r['state']:<6} {age(r['created_at'], now):>7} {done:>15} "
            f"{fmt_usd(r['cost_pusd']):>10} {fmt_usd(r['typical_pusd']):>10}  {r['model']}"
        )
    return 0
