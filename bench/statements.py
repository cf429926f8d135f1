"""PostgreSQL's statements sorted by what they are for (pure): reads the cache is there to remove,
reads it is not (a login's credential lookup), writes that must reach PostgreSQL whatever the
cache, and background work. pg_stat_statements gives calls per normalised statement; the
classification reads the statement's text, in the order below (the first match wins)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# (kind, what, pattern). Kinds: "read" (a SELECT that answers a client), "write" (changes data
# for a client), "background" (the services' own upkeep), "control" (BEGIN, SET, ...).
_RULES: tuple[tuple[str, str, str], ...] = (
    ("control", "transaction control and settings",
     r"^\s*(begin|commit|end|rollback|start transaction|set|show|reset|discard|deallocate)\b"),
    ("background", "health probes", r"^\s*select\s+(\$1|1)\s*$"),
    ("write", "transfers (transfer_money)", r"\btransfer_money\s*\("),
    ("write", "transfer batches (transfer_money_batch)", r"\btransfer_money_batch\s*\("),
    ("write", "registrations", r"\binsert\s+into\s+users\b"),
    ("write", "logins: new session", r"^\s*insert\s+into\s+sessions\b"),
    ("write", "session confirmations (request gate)", r"^\s*update\s+sessions\s+set\s+last_used"),
    ("write", "logouts and password changes", r"\bupdate\s+(sessions|users)\b"),
    # Failed-login and sign-up counters (services/auth/adapters/attempt_counters.py): a login's
    # take (upsert + update) and, on success, its give-back; their purge too.
    ("write", "logins: attempt counters", r"\blogin_attempt_windows\b"),
    ("background", "outbox confirmations", r"^\s*update\s+outbox\s+set\s+published_at"),
    ("background", "outbox relay", r"\bfrom\s+outbox\b.*\bfor\s+update\s+skip\s+locked"),
    ("background", "outbox relay", r"^\s*select\s+count\(\*\)\s+from\s+outbox\b"),
    ("background", "retention", r"^\s*delete\s+from\b"),
    ("read", "logins: credentials", r"\bfrom\s+users\b"),
    ("read", "warm-ups after login",
     r"(?=.*\bfrom\s+transactions\b)(?=.*\bowner_user_id\s*=)"),
    ("read", "event catch-up", r"\bfrom\s+outbox\b"),
    ("read", "account reads (balance, recent, details, loans)",
     r"\bfrom\s+(accounts|loans|transactions)\b"),
    ("read", "transfer reads", r"\bfrom\s+transfers\b"),
    ("read", "session lists", r"\bfrom\s+sessions\b"),
)
_COMPILED = tuple((kind, what, re.compile(pattern, re.IGNORECASE | re.DOTALL))
                  for kind, what, pattern in _RULES)
# The reads the cache exists to take off PostgreSQL: what the account service reads for its
# clients, the warm-ups that stand in for their first misses included.
READ_PATH = ("account reads (balance, recent, details, loans)", "warm-ups after login")
# A transfer's round trip: alone, or shared with the others of its batch.
TRANSFER_PATH = ("transfers (transfer_money)", "transfer batches (transfer_money_batch)")


def classify(query: str) -> tuple[str, str]:
    """(kind, what) of a normalised statement."""
    for kind, what, pattern in _COMPILED:
        if pattern.search(query):
            return kind, what
    if re.match(r"^\s*(select|with)\b", query, re.IGNORECASE):
        return "read", "other reads"
    return "other", "other statements"


@dataclass(frozen=True)
class StatementCounts:
    """Calls per (kind, what) over a window."""

    calls: dict[tuple[str, str], int]

    @classmethod
    def of(cls, deltas: Iterable[tuple[int, str]]) -> StatementCounts:
        """From (calls, query) pairs: the per-statement increases of pg_stat_statements."""
        out: dict[tuple[str, str], int] = {}
        for calls, query in deltas:
            key = classify(query)
            out[key] = out.get(key, 0) + calls
        return cls(out)

    def total(self, kind: str | None = None, what: Iterable[str] | None = None) -> int:
        wanted = set(what) if what is not None else None
        return sum(n for (k, w), n in self.calls.items()
                   if (kind is None or k == kind) and (wanted is None or w in wanted))

    @property
    def reads(self) -> int:
        return self.total("read")

    @property
    def read_path(self) -> int:
        return self.total("read", READ_PATH)

    @property
    def data(self) -> int:
        """Every statement that moves data (control statements left out)."""
        return sum(n for (k, _), n in self.calls.items() if k != "control")
