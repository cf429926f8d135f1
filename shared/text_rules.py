"""What text the API accepts, in one place.

Every string field of every request is refused (INVALID_ARGUMENT, naming the field) when it
holds a control character (Unicode category Cc: NUL, C0 and C1 controls, DEL): no field has a
use for them, and they break logs, terminals and the database (PostgreSQL refuses NUL in text).
The service interceptor applies this before any handler runs.

Free text that other people see (a transfer's description, a person's name) is also normalised
to NFC, so that one text has one spelling, and refused when it holds invisible format characters
(category Cf: bidirectional overrides such as U+202E, zero-width spaces and joiners, the BOM),
which can make a text read differently from what it is ("Trojan Source").
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from shared.errors import InvalidArgument

# Cc: U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_STRING_TYPE = 9  # FieldDescriptor.TYPE_STRING
_MESSAGE_TYPE = 11  # FieldDescriptor.TYPE_MESSAGE


def check_message_text(message: Any, prefix: str = "") -> None:
    """Raise InvalidArgument for the first string field (nested and repeated ones included)
    that holds a control character. Only set fields are visited."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == _STRING_TYPE:
            values = value if field.is_repeated else (value,)
            for text in values:
                if _CONTROL.search(text):
                    raise InvalidArgument(f"{name} must not contain control characters")
        elif field.type == _MESSAGE_TYPE and field.message_type.GetOptions().map_entry is False:
            children = value if field.is_repeated else (value,)
            for child in children:
                check_message_text(child, name + ".")


def normalize_free_text(field: str, raw: str, *, max_length: int,
                        required: bool = False) -> str:
    """NFC, trimmed; refused with a message naming `field` when empty (if required), too long,
    or holding control or invisible format characters."""
    text = unicodedata.normalize("NFC", raw).strip()
    if required and not text:
        raise InvalidArgument(f"{field} is required")
    if len(text) > max_length:
        raise InvalidArgument(f"{field} must be at most {max_length} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise InvalidArgument(
            f"{field} must not contain control characters or invisible format characters "
            "(bidirectional overrides, zero-width characters)")
    return text
