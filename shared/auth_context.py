"""Who is calling: set by the auth interceptor, read by use cases. No gRPC or Redis here."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from shared.errors import Unauthenticated


@dataclass(frozen=True)
class Caller:
    user_id: str
    session_id: str
    # The request gate could not read the user's read-your-writes floors (Redis did not answer
    # for the user's slot): reads of versioned data must not trust the cache for this call.
    floors_unknown: bool = field(default=False, compare=False)


_current: ContextVar[Caller | None] = ContextVar("caller", default=None)


def current_caller() -> Caller:
    caller = _current.get()
    if caller is None:
        raise Unauthenticated("this call needs a session: send 'authorization: Bearer <token>'")
    return caller


def set_caller(caller: Caller | None) -> None:
    _current.set(caller)


@dataclass(frozen=True)
class MachineCaller:
    """A machine credential (shared/machine_credentials.py): acts for no user."""

    credential_id: str
    name: str
    scopes: frozenset[str]


_machine: ContextVar[MachineCaller | None] = ContextVar("machine_caller", default=None)


def current_machine() -> MachineCaller:
    machine = _machine.get()
    if machine is None:
        raise Unauthenticated("this call needs a machine credential: send 'authorization: "
                              "Bearer mc1.<id>.<secret>'")
    return machine


def set_machine(machine: MachineCaller | None) -> None:
    _machine.set(machine)
