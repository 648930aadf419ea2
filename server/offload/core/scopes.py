"""The budget scopes, named once.

A scope is named as the policy names its limit (`session_usd`, `daily_usd`, `monthly_usd`,
`user_usd`, `project_usd`, `team_usd`); the spend window of the first three is named as
`budget_status(scope=...)` and `offload spend` name it.

The team scopes (user, project, team) cover the calendar month (UTC), like `monthly`: a team's
bill is monthly. `team` is the whole ledger's month; on a shared ledger that is the sum `monthly`
limits too, so a team policy can say what it means with either key.
"""

from __future__ import annotations

SCOPES = ("session", "daily", "monthly", "user", "project", "team")
TEAM_SCOPES = ("user", "project", "team")
WINDOW_OF = {"session": "session", "daily": "day", "monthly": "month"}
SCOPE_OF = {window: scope for scope, window in WINDOW_OF.items()}
BUDGET_WINDOWS = tuple(WINDOW_OF.values())
