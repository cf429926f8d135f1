"""How many login and registration attempts may go, and when: the rules, without I/O.

Every counter is one stored `Window` (attempts, when it ends), kept in PostgreSQL by
adapters/attempt_counters.py; a rule (domain.py: `FixedWindow`, `RisingDelay`) decides from it
whether one more attempt may go now.

Logins (`LoginLimits`), three counters, all counted before the password is checked:
- per (email, client address group): a hard `FixedWindow` (5 failures per 15 minutes). Only the
  guesser's own address is stopped by it, never the owner elsewhere.
- per client address group, across every email: a wider `FixedWindow` (credential stuffing from
  one address).
- per email, from any address: `RisingDelay`. The first few failures are free; then each further
  attempt must wait a delay that doubles with every failure, capped (1 s, 2 s, 4 s ... 5 min),
  since the previous attempt. Never a lockout: whoever has the password (from an address with no
  failures of its own) gets in once the current delay has passed, so five wrong guesses by a third
  party cannot lock the owner out; the delays bound a distributed guesser to a few attempts per
  `delay_max_s` for an email.
- a login with a valid device token (service_layer/device_tokens.py: the owner's device, known
  from an earlier login) is not subject to the email's delay; it counts against the device
  instead (the same rising delay, for that device only), with the (email, address) limit, so
  that a guesser timing its attempts to each end of the email's delay cannot keep the owner out,
  and a stolen device token buys no more guesses than the email allows.
A success gives its slots back and clears the email's (and the device's) failures; an attempt
that failed for another reason than a wrong password (an outage) gives its slots back. Client
addresses are grouped (an IPv6 /64, shared/call_metadata.py `address_group`).

Registrations (`RegisterLimits`): a `FixedWindow` per client address group (5 an hour) and a
global one (per minute), counted before the email is looked up or anything hashed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from services.auth.domain import FixedWindow, RisingDelay
from services.auth.service_layer.ports import AttemptCounters, AttemptReservation, CounterRule
from shared.call_metadata import address_group
from shared.errors import ResourceExhausted


def _email_digest(email: str) -> str:
    # No addresses in the table (or its dumps): the key holds a hash of the email.
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def email_counter_key(email: str) -> str:
    return f"login-email:{_email_digest(email)}"


def pair_counter_key(email: str, client_address: str) -> str:
    return f"login-pair:{_email_digest(email)}:{address_group(client_address)}"


def address_counter_key(client_address: str) -> str:
    return f"login-addr:{address_group(client_address)}"


def device_counter_key(device: str) -> str:
    return f"login-device:{device[:64]}"


def too_many(what: str, wait_s: float) -> ResourceExhausted:
    retry_after_s = max(1, math.ceil(wait_s))
    return ResourceExhausted(f"too many {what}; try again in {retry_after_s} s", retry_after_s)


@dataclass(frozen=True)
class LoginPolicy:
    per_pair: FixedWindow
    per_address: FixedWindow
    per_email: RisingDelay
    per_device: RisingDelay


class LoginLimits:
    """The login attempt counters (see the module docstring)."""

    def __init__(self, counters: AttemptCounters, policy: LoginPolicy) -> None:
        self._counters = counters
        self._policy = policy

    async def reserve(self, email: str, client_address: str,
                      device: str | None = None) -> AttemptReservation:
        """Count one attempt, or ResourceExhausted (retry_after_s) with nothing counted.
        `device`: the id of a valid device token of this email, which takes the place of the
        email's delay."""
        email_key = email_counter_key(email)
        rules: list[CounterRule]
        if device is None:
            rules = [(email_key, self._policy.per_email)]
            forget: tuple[str, ...] = (email_key,)
        else:
            device_key = device_counter_key(device)
            rules = [(device_key, self._policy.per_device)]
            forget = (email_key, device_key)
        if client_address:
            rules.append((pair_counter_key(email, client_address), self._policy.per_pair))
            rules.append((address_counter_key(client_address), self._policy.per_address))
        wait_s = await self._counters.take(rules)
        if wait_s is not None:
            raise too_many("failed login attempts", wait_s)
        return AttemptReservation(tuple(key for key, _ in rules), forget_on_success=forget)

    async def release(self, reservation: AttemptReservation) -> None:
        """The attempt was no guess (an outage): its slots are given back."""
        await self._counters.give_back(reservation.keys)

    async def succeeded(self, reservation: AttemptReservation) -> None:
        """The password was right: slots given back, the email's failures forgotten."""
        keys = tuple(dict.fromkeys(reservation.keys + reservation.forget_on_success))
        await self._counters.give_back(keys, clear=reservation.forget_on_success)


@dataclass(frozen=True)
class RegisterPolicy:
    per_address: FixedWindow
    overall: FixedWindow


class RegisterLimits:
    def __init__(self, counters: AttemptCounters, policy: RegisterPolicy) -> None:
        self._counters = counters
        self._policy = policy

    async def reserve(self, client_address: str) -> AttemptReservation:
        """Count one registration attempt, or ResourceExhausted with nothing counted. Every
        answered attempt counts, whatever its outcome: a taken email is what a prober looks
        for."""
        rules: list[CounterRule] = [("register-all", self._policy.overall)]
        if client_address:
            rules.append((f"register-addr:{address_group(client_address)}",
                          self._policy.per_address))
        wait_s = await self._counters.take(rules)
        if wait_s is not None:
            raise too_many("registrations", wait_s)
        return AttemptReservation(tuple(key for key, _ in rules))

    async def release(self, reservation: AttemptReservation) -> None:
        """The server could not serve the attempt (busy, an outage): it does not count."""
        await self._counters.give_back(reservation.keys)
