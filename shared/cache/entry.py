"""The wire format of a versioned cache entry. Pure: no I/O.

    b"<version>|v|<owner>|<data>"   a value read at account version <version>
    b"<version>|t||"                 a tombstone: "versions below <version> are stale"

The version prefix is what the Lua compare-and-set scripts read (without decoding the data).
`owner` is the user allowed to read the entry (immutable per key), so that a cache hit can be
checked for ownership without a database round trip, and so that an event that only carries a
new balance can rewrite the data while keeping the owner.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEP = b"|"
_VALUE = b"v"
_TOMBSTONE = b"t"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    version: int
    owner: str
    data: bytes
    tombstone: bool = False


def encode_value(version: int, owner: str, data: bytes) -> bytes:
    if version < 0:
        raise ValueError("a cache entry version is never negative")
    if "|" in owner:
        raise ValueError("an entry owner cannot contain '|'")
    return b"%d|v|%s|" % (version, owner.encode()) + data


def encode_tombstone(version: int) -> bytes:
    if version < 0:
        raise ValueError("a cache entry version is never negative")
    return b"%d|t||" % version


def decode_entry(raw: bytes) -> CacheEntry | None:
    """None for bytes that are not an entry (a corrupt entry is treated as a miss)."""
    parts = raw.split(_SEP, 3)
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    version = int(parts[0])
    if parts[1] == _VALUE:
        return CacheEntry(version, parts[2].decode(), parts[3])
    if parts[1] == _TOMBSTONE:
        return CacheEntry(version, "", b"", tombstone=True)
    return None
