"""Who a call is made for: the metadata every authenticated call carries.

`CallCredentials` is the hook: anything with `metadata()` can authenticate calls. Today that is
`BearerToken`, an end user's session token (from `login`), sent as `authorization: Bearer ...`
exactly as the edge forwards a browser's. A service identity (a machine credential with
scopes) implements the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Metadata = tuple[tuple[str, str], ...]


@runtime_checkable
class CallCredentials(Protocol):
    def metadata(self) -> Metadata:
        """The gRPC metadata (lower-case keys) to send with each call."""
        ...


@dataclass(frozen=True)
class BearerToken:
    """An end user's session token: `<user_id>.<session_id>.<secret>`."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token):
            raise ValueError("a bearer token is one non-empty word")

    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class MachineCredential:
    """A machine credential's token, `mc1.<id>.<secret>`: for the RPCs that act for no user
    (TreasuryService), with the scopes the bank granted it (`python -m
    services.auth.machine_credentials create`)."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token.startswith("mc1.") or any(c.isspace() for c in self.token):
            raise ValueError("a machine credential's token looks like mc1.<id>.<secret>")

    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.token}"),)
