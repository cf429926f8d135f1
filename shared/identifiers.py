"""Ids as this API spells them: canonical UUID text (lower case, with dashes)."""

from __future__ import annotations

import re
import uuid

# How ids leave this API (str(uuid) is lower case), so what clients send back: kept as they are.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(raw: str) -> str | None:
    """The canonical spelling of a UUID, or None when `raw` is not one."""
    if _CANONICAL_UUID.fullmatch(raw):
        return raw  # a regex match costs a fifth of parsing the UUID and printing it again
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None
