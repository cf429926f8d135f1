"""google.api.http path templates compiled to regular expressions, once, at start-up.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

The regular expressions match the raw (still percent-encoded) path, so an encoded "/" inside a
variable does not split it. They use only what Python's `re` and RE2 (Envoy's `safe_regex`) read
alike: literals escaped with a backslash, `[^/]+` and `.+`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    """An annotation's path template does not follow the grammar (a proto bug: fail at start-up)."""


@dataclass(frozen=True)
class PathTemplate:
    template: str
    regex: re.Pattern[str]
    # Field paths ("account_id", "parent.name") in capture-group order.
    variables: tuple[str, ...]
    literal_segments: int
    verb: str

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: try a route with a custom verb, then more literal segments, first."""
        return (1 if self.verb else 0, self.literal_segments, len(self.template))

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, field_path in enumerate(self.variables):
            # errors="strict": a path that is not UTF-8 is the client's error, reported as such.
            values[field_path] = unquote(found.group(index + 1), errors="strict")
        return values


def compile_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    body, verb = _split_verb(template[1:])
    variables: list[str] = []
    literals = 0
    parts: list[str] = []
    for segment in _split_segments(body, template):
        if segment.startswith("{"):
            name, _, inner = segment[1:-1].partition("=")
            if not _IDENT.fullmatch(name):
                raise TemplateError(f"bad variable {segment!r} in {template!r}")
            if name in variables:
                raise TemplateError(f"variable {name!r} appears twice in {template!r}")
            variables.append(name)
            pattern = _segments_regex(inner.split("/"), template) if inner else "[^/]+"
            parts.append(f"({pattern})")
        else:
            if segment not in ("*", "**"):
                literals += 1
            parts.append(_segments_regex([segment], template))
    regex = "/" + "/".join(parts) + (re.escape(":" + verb) if verb else "")
    return PathTemplate(template, re.compile(regex), tuple(variables), literals, verb)


def _split_verb(body: str) -> tuple[str, str]:
    """The verb is a ':' after the last '/' and outside any '{...}'."""
    depth = 0
    last_colon = -1
    for index, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            last_colon = -1
        elif char == ":" and depth == 0:
            last_colon = index
    if last_colon < 0:
        return body, ""
    return body[:last_colon], body[last_colon + 1 :]


def _split_segments(body: str, template: str) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    depth = 0
    for char in body:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"unbalanced '}}' in {template!r}")
        if char == "/" and depth == 0:
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise TemplateError(f"unbalanced '{{' in {template!r}")
    segments.append("".join(current))
    if any(not segment for segment in segments):
        raise TemplateError(f"empty segment in {template!r}")
    return segments


def _segments_regex(segments: list[str], template: str) -> str:
    out: list[str] = []
    for segment in segments:
        if segment == "*":
            out.append("[^/]+")
        elif segment == "**":
            out.append(".+")
        elif "{" in segment or "}" in segment or "*" in segment:
            raise TemplateError(f"bad segment {segment!r} in {template!r}")
        else:
            out.append(re.escape(segment))
    return "/".join(out)
