"""The versioned cache (docs/architecture.md, "A cached read"): the account service's read models
sit on it, and its circuit breaker also guards the request gate's Redis calls in every service.

Layers, each in its own module:

- `entry`: the wire format of a versioned entry (value or tombstone), pure.
- `ordered_list`: the data format of a bounded newest-first list, which an event can extend
  inside Redis (`UpdateMode.INSERT`), pure.
- `scripts`: the Lua compare-and-set scripts; an entry only ever moves to a newer version.
- `backend`: the `CacheBackend` port; `redis_backend` is the Redis Cluster adapter and
  `fake_backend` the in-memory fake with the same semantics (for unit tests).
- `circuit_breaker`, `versioned_cache`: a timeout and a breaker around every Redis call, so a
  slow or dead Redis turns into `CacheUnavailable` (the caller reads PostgreSQL) instead of a
  failed request.
- `coalescer`, `read_through`: cache-aside reads with in-process coalescing and a short Redis
  lease across replicas, so concurrent misses on one key load the database once.
- `applied_versions`: where a read that needs a newer version than the cached one waits a few ms
  for the event consumer to apply it, instead of loading the database.

Only `redis_backend` imports redis.
"""

from shared.cache.applied_versions import AppliedVersions
from shared.cache.circuit_breaker import CircuitBreaker, CircuitState
from shared.cache.entry import CacheEntry, decode_entry, encode_tombstone, encode_value
from shared.cache.read_through import EntryCodec, Read, ReadThroughCache
from shared.cache.versioned_cache import CacheUnavailable, KeyUpdate, UpdateMode, VersionedCache

__all__ = [
    "AppliedVersions",
    "CacheEntry",
    "CacheUnavailable",
    "CircuitBreaker",
    "CircuitState",
    "EntryCodec",
    "KeyUpdate",
    "Read",
    "ReadThroughCache",
    "UpdateMode",
    "VersionedCache",
    "decode_entry",
    "encode_tombstone",
    "encode_value",
]
