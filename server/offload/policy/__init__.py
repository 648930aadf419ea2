"""Routing policy: YAML -> `Policy` (models, loader with hot reload) and the pure routing engine."""

from offload.policy.engine import RouteDecision, RouteRequest, decide, should_escalate, worst_case_by_tier
from offload.policy.loader import PolicyHolder, load_policy, parse_policy
from offload.policy.models import DIFFICULTIES, TRIGGERS, Budgets, Policy, Rule, When

__all__ = [
    "DIFFICULTIES",
    "TRIGGERS",
    "Budgets",
    "Policy",
    "PolicyHolder",
    "RouteDecision",
    "RouteRequest",
    "Rule",
    "When",
    "decide",
    "load_policy",
    "parse_policy",
    "should_escalate",
    "worst_case_by_tier",
]
