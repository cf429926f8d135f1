"""The account service: reads of the caller's own accounts, cache-aside on the Redis Cluster.

Decisions (the system around them: docs/architecture.md):

- Cached: `GetBalance` (`account:{id}:balance`, 60 s), `ListRecentTransactions`
  (`transactions:{id}:recent`, 120 s) and `ListLoans` (`api:{user}:loans`, 300 s), TTLs +-10 %.
  Not cached: `GetAccount` and `ListAccounts` (one indexed row or a few; caching them would need
  per-user invalidation on every transfer) and `ListTransactions` (keyset pages).
- Entry format (`shared/cache/entry.py`): `<version>|v|<owner>|<data>` or a tombstone
  `<version>|t||`. The owner is in the entry so a hit is checked for ownership without the
  database; an event keeps the owner and replaces the data. Loans carry no version (stored at 0,
  filled only when absent; nothing in the system changes a loan yet).
- Every fill and every event is one Lua compare-and-set (`shared/cache/scripts.py`): a value
  only replaces an older version (or a tombstone at or below it); an event at version n replaces
  anything below n: the balance takes the event's data, the recent list (and a balance that is
  not cached) becomes a tombstone at n, so a fill read before the change is rejected.
  Tombstones live 2 x the statement timeout + 5 s (15 s), not a full TTL: they only have to
  outlive fills already in flight, and events write them for accounts nobody reads.
- PostgreSQL reads go through psycopg's pool in autocommit mode (`shared/pg_pool.py`): one round
  trip per read, statements prepared once per connection; SQLAlchemy's engine (2 connections)
  only serves the shared SessionStore and the health probe.
- Read-your-writes: a `min_version` newer than the cached balance usually means its event is a
  few ms away, so the read waits up to `min_version_wait_ms` (25 ms) for the consumer to apply
  it (`shared/cache/applied_versions.py`, in-process: every replica consumes every partition),
  then reads the cache again (`hit_after_wait`); on timeout it reads PostgreSQL (`bypass`, and
  `version_wait_expired`). No wait while the subscription is down. Not for the recent list: its
  event only tombstones it.
- Misses: in-process single flight per key, then one script that re-checks the entry and takes a
  lease (SET NX PX 1 s); a replica that finds the lease taken polls for the fill for 250 ms, then
  reads PostgreSQL itself. The fill releases the lease in the same round trip.
- Redis faults: every cache call has the `redis_timeout_ms` budget and goes through a circuit
  breaker (`circuit_failure_threshold`, half-open probe after `circuit_reset_s`); any failure is a
  read from PostgreSQL. Cache calls in flight are bounded (half of `redis_max_connections`) so a
  burst queues instead of being refused by the client's pool. Health: SERVING while PostgreSQL
  answers; Redis outages degrade to PostgreSQL instead of leaving the rotation.
- Events: one plain connection per master, SSUBSCRIBE per partition channel. A (re)subscription
  confirmation, a sequence gap (or step back) or an undecodable message triggers a catch-up from
  the outbox: the newest row per account of those partitions within the longest TTL (+ margin).
  A Redis topology event (failover, a primary reconnected) repairs the slots it names the same
  way from every partition. Failed applies are kept and retried by the catch-up loop with
  backoff, never dropped; the consumer's writes have their own circuit breaker.
- No entry older than a version this replica's consumer applied is served (a failover may have
  lost that write): such a read goes to PostgreSQL and its fill restores the newer version.
- `ListTransactions` tokens (`shared/page_tokens.py`, the format ListTransfers uses too): base64url
  of (created_at us, entry id) plus an 8-byte keyed BLAKE2b MAC over it and the account id (the
  key derived from BANK_SESSION_SIGNING_KEY, so clients cannot forge positions): tampering,
  another account's token or a position out of range is INVALID_ARGUMENT; a token grants
  nothing (ownership is checked on every call). Page size 1..100 (0 means 20, larger is capped).
- Another user's account is NOT_FOUND, worded like a missing one.
"""
