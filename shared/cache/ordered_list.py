"""The data format of a bounded, newest-first list that an event can extend inside Redis. Pure.

    <header>\\n<primary>,<secondary>,<item>\\n<primary>,<secondary>,<item>...

Items are in descending (primary, secondary) order: their order key, non-negative integers
(for a ledger: created_at in µs, then the entry id). Neither the header nor an item contains a
newline. The Lua of `UpdateMode.INSERT` (scripts.APPLY_VERSION) reads only this framing: it
inserts one item at its place and keeps the newest `keep`, without decoding any item.

An insertion's data is `<header>\\n<primary>,<secondary>,<item>`: the header must equal the
cached one (a list of another format or currency is replaced by a tombstone instead).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_NEWLINE = b"\n"
_COMMA = b","


@dataclass(frozen=True, slots=True)
class OrderedItem:
    primary: int
    secondary: int
    item: bytes


def _line(entry: OrderedItem) -> bytes:
    if entry.primary < 0 or entry.secondary < 0:
        raise ValueError("an order key is never negative")
    if _NEWLINE in entry.item:
        raise ValueError("a list item cannot contain a newline")
    return b"%d,%d," % (entry.primary, entry.secondary) + entry.item


def _check_header(header: bytes) -> None:
    if _NEWLINE in header:
        raise ValueError("a list header cannot contain a newline")


def encode_ordered_list(header: bytes, items: Iterable[OrderedItem]) -> bytes:
    """`items` newest first, as the caller read them."""
    _check_header(header)
    return _NEWLINE.join([header, *(_line(entry) for entry in items)])


def encode_insertion(header: bytes, entry: OrderedItem) -> bytes:
    """The data of an `UpdateMode.INSERT` key update."""
    _check_header(header)
    return header + _NEWLINE + _line(entry)


def decode_ordered_list(data: bytes) -> tuple[bytes, list[OrderedItem]] | None:
    """None for data that is not such a list."""
    header, *lines = data.split(_NEWLINE)
    items = []
    for line in lines:
        parts = line.split(_COMMA, 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        items.append(OrderedItem(int(parts[0]), int(parts[1]), parts[2]))
    return header, items


def insert_item(data: bytes, insertion: bytes, keep: int) -> bytes | None:
    """What the Lua of `UpdateMode.INSERT` writes (for the fake backend): None when it writes
    a tombstone instead (not a list, another header, the item already there)."""
    cached = decode_ordered_list(data)
    added = decode_ordered_list(insertion)
    if cached is None or added is None or len(added[1]) != 1 or cached[0] != added[0]:
        return None
    new = added[1][0]
    key = (new.primary, new.secondary)
    if any((e.primary, e.secondary) == key for e in cached[1]):
        return None
    items = cached[1]
    place = next((i for i, e in enumerate(items) if (e.primary, e.secondary) < key), len(items))
    items.insert(place, new)
    return encode_ordered_list(cached[0], items[:keep])
