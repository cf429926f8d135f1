"""The checks of a chaos run. Each gives a `Check`: passed or not, and what it found.

In PostgreSQL, after the run (every key settled): money is conserved; every acknowledged
transfer is there exactly once, with its two ledger entries summing to zero; no key posted twice,
every key attempted posted once (a failed attempt was retried under its key until it did), and
no transfer of the run's users came from anywhere else. From what the clients saw: a writer never
read a balance older than its acknowledged transfers; a revoked session was never accepted; after
each fault, the cache caught up with PostgreSQL within `CACHE_DEADLINE_S`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import AsyncConnection

from chaos.workload import KeyAttempt, ReadSample

CACHE_DEADLINE_S = 2.0


@dataclass
class Check:
    name: str
    passed: bool
    found: list[str] = field(default_factory=list)

    def summary(self, limit: int = 5) -> str:
        if self.passed:
            return "pass"
        shown = "; ".join(self.found[:limit])
        more = f" (+{len(self.found) - limit} more)" if len(self.found) > limit else ""
        return f"FAIL: {shown}{more}"


async def ledger_checks(dsn: str, user_ids: Sequence[str],
                        keys: dict[str, KeyAttempt]) -> list[Check]:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        total = (await (await conn.execute("SELECT sum(balance) FROM accounts")).fetchone())
        money = Check("money is conserved (the sum of all balances is 0)",
                      total is not None and int(total[0]) == 0,
                      [f"sum of balances {total[0] if total else None}"])
        rows = await (await conn.execute(
            "SELECT t.idempotency_key, t.id::text, count(e.id), coalesce(sum(e.amount), 0)"
            " FROM transfers t LEFT JOIN transactions e ON e.transfer_id = t.id"
            " WHERE t.user_id = ANY(%(users)s::uuid[]) GROUP BY t.idempotency_key, t.id",
            {"users": list(user_ids)})).fetchall()
        unbalanced = await (await conn.execute(
            "SELECT a.id::text FROM accounts a LEFT JOIN transactions e ON e.account_id = a.id"
            " GROUP BY a.id, a.balance HAVING a.balance <> coalesce(sum(e.amount), 0)"
        )).fetchall()
    by_key: dict[str, list[str]] = {}
    entries_wrong = []
    for key, transfer_id, entries, amount_sum in rows:
        by_key.setdefault(str(key), []).append(str(transfer_id))
        if int(entries) != 2 or int(amount_sum) != 0:
            entries_wrong.append(f"transfer {transfer_id}: {entries} entries summing to"
                                 f" {amount_sum}")
    acked = {a.key: a.transfer_id for a in keys.values() if a.transfer_id}
    missing_or_other = [f"key {k}: acknowledged {t}, stored {by_key.get(k)}"
                        for k, t in acked.items() if by_key.get(k) != [t]]
    twice = [f"key {k}: {len(ids)} transfers" for k, ids in by_key.items() if len(ids) > 1]
    never = [f"key {k}: no transfer after its retries ({a.statuses})"
             for k, a in keys.items() if not a.refused and k not in by_key]
    refused_posted = [f"key {k}: refused with {a.refused} yet posted"
                      for k, a in keys.items() if a.refused and k in by_key]
    phantom = [f"key {k}: a transfer nobody asked for" for k in by_key if k not in keys]
    return [
        money,
        Check("every acknowledged transfer is in the ledger exactly once, its entries summing"
              " to 0", not missing_or_other and not entries_wrong and not unbalanced,
              missing_or_other + entries_wrong
              + [f"account {a}: balance differs from its entries" for (a,) in unbalanced]),
        Check("a retried key never posts twice, and posts once after its retries",
              not twice and not never and not refused_posted and not phantom,
              twice + never + refused_posted + phantom),
    ]


def writer_check(reads: Sequence[ReadSample], t0: float) -> Check:
    stale = [f"at {r.started - t0:.1f} s user {r.user} ({r.session} session) read version"
             f" {r.version} ({r.source}) after its transfer acknowledged version {r.floor} at"
             f" {r.floor_at - t0:.1f} s" for r in reads if r.version < r.floor]
    return Check("a writer never reads a balance older than its acknowledged transfer",
                 not stale, stale)


def revocation_check(violations: Sequence[str], probes: int) -> Check:
    return Check(f"revoked sessions stay revoked ({probes} probes)", not violations,
                 list(violations))


def cache_check(results: Sequence[tuple[str, float | None, dict[str, tuple[int, int]]]]
                ) -> Check:
    """(fault, seconds until the cache caught up or None, what was behind at the end)."""
    late = [f"{fault}: caught up after {seconds:.2f} s" if seconds is not None
            else f"{fault}: still behind: {dict(list(behind.items())[:3])}"
            for fault, seconds, behind in results
            if seconds is None or seconds > CACHE_DEADLINE_S]
    return Check(f"every cached balance is PostgreSQL's within {CACHE_DEADLINE_S:g} s after"
                 " each fault ends", not late, late)
