"""Per-department policy: who may use which model, with which data, under which limits.

The gateway depends on this package, never the reverse. Entry points: `PolicyStore` (load and
hot-reload a directory), `evaluate` (decide one request), `checker.main` (the offline checker).
"""

from policy.decision import Decision, Denial, PolicyRequest, Subject
from policy.definitions import AuditContent
from policy.engine import evaluate
from policy.issues import Issue, PolicyError
from policy.loader import load_directory
from policy.policyset import PolicySet
from policy.store import PolicyStore

__all__ = [
    "AuditContent",
    "Decision",
    "Denial",
    "Issue",
    "PolicyError",
    "PolicyRequest",
    "PolicySet",
    "PolicyStore",
    "Subject",
    "evaluate",
    "load_directory",
]
