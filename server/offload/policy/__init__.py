"""Routing policy, pure: the `Policy` model and the routing engine. Loading lives in `offload.config.policy`."""

from offload.policy.engine import RouteDecision, RouteRequest, decide, should_escalate, worst_case_by_tier
from offload.policy.models import DIFFICULTIES, TRIGGERS, Budgets, Policy, Rule, When

__all__ = [
    "DIFFICULTIES",
    "TRIGGERS",
    "Budgets",
    "Policy",
    "RouteDecision",
    "RouteRequest",
    "Rule",
    "When",
    "decide",
    "should_escalate",
    "worst_case_by_tier",
]
