"""The budget scopes, named once.

A scope is named as the policy names its limit (`session_usd`, `daily_usd`, `monthly_usd`);
the spend window it covers is named as `budget_status(scope=...)` and `offload spend` name it.
"""

from __future__ import annotations

SCOPES = ("session", "daily", "monthly")
WINDOW_OF = {"session": "session", "daily": "day", "monthly": "month"}
SCOPE_OF = {window: scope for scope, window in WINDOW_OF.items()}
BUDGET_WINDOWS = tuple(WINDOW_OF.values())
