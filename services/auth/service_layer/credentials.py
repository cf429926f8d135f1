"""Use cases of a user's credentials: register, log in, change the password."""

from __future__ import annotations

import dataclasses
import logging
import time

from services.auth.domain import (
    EmailAlreadyRegistered,
    InvalidCredentials,
    LoginRequest,
    NewSession,
    Registration,
    StoredCredentials,
    check_password_length,
    check_password_strength,
    normalize_currency,
    normalize_email,
    normalize_name,
)
from services.auth.service_layer.device_tokens import check_device_token_format
from services.auth.service_layer.ports import AuthDependencies
from shared.auth_context import Caller
from shared.errors import Aborted, InvalidArgument, PermissionDenied, Unauthenticated, Unavailable

log = logging.getLogger(__name__)


async def register(deps: AuthDependencies, email: str, password: str, name: str,
                   currency: str = "", client_address: str = "") -> Registration:
    """A new user and their first account, in one transaction.

    Order, cheapest refusal first: the input's rules (no I/O), the registration limits (per client
    address group and overall, every attempt counted), whether the email is taken, and only then
    argon2 (in its own bounded pool). A taken email is ALREADY_EXISTS without any hashing: a
    sign-up form has to say that an email is taken, so the answer tells nothing the reply did not
    already say, and the per-address limit (5 an hour) makes probing through this call slower than
    it was; hashing first would only spend 64 MiB and tens of ms on every probe."""
    email = normalize_email(email)
    name = normalize_name(name)
    currency = normalize_currency(currency)
    password = check_password_strength(password, email=email, name=name)
    reservation = await deps.register_limiter.reserve(client_address)
    if await deps.users.email_taken(email):
        raise EmailAlreadyRegistered()
    try:
        password_hash = await deps.hasher.hash(password)
    except Unavailable:
        # The hashing pool is full: the client is told to retry, and the retry must not cost it
        # one of its few attempts (the email was free, so the answer told it nothing).
        await deps.register_limiter.release(reservation)
        raise
    # Two sign-ups of one email at once both pass the check: the insert decides.
    return await deps.users.register(email, name, password_hash, currency)


async def login(deps: AuthDependencies, request: LoginRequest) -> NewSession:
    """Unknown email and wrong password give the same error after the same work (a dummy argon2
    verification), and both count as failures against the email and the client address."""
    email = normalize_email(request.email)
    password = check_password_length(request.password)
    check_device_token_format(request.device_token)
    device = deps.device_tokens.device_of(request.device_token, email, time.time())
    reservation = await deps.limiter.reserve(email, request.client_address, device)
    try:
        credentials = await _check_credentials(deps, email, password)
    except InvalidCredentials:
        raise  # a failure: the reserved slots stay taken until the window ends
    except Exception:
        await deps.limiter.release(reservation)  # an outage is not a guess
        raise
    await deps.limiter.succeeded(reservation)
    if deps.hasher.needs_rehash(credentials.password_hash):
        await _rehash(deps, credentials.user_id, credentials.password_hash, password)
    session = await deps.sessions.create(credentials.user_id, request.client_address,
                                         request.user_agent)
    # The visit's first reads are a balance and the recent transactions: have them cached by
    # then (services/account/service_layer/warm_up.py), without delaying this reply.
    deps.warmer.warm(session.token)
    # A fresh device token with every login: the device stays known as long as it is used.
    return dataclasses.replace(session,
                               device_token=deps.device_tokens.issue(email, time.time()))


async def _check_credentials(deps: AuthDependencies, email: str,
                             password: str) -> StoredCredentials:
    credentials = await deps.users.credentials_by_email(email)
    if credentials is None:
        await deps.hasher.verify_dummy(password)
        raise InvalidCredentials()
    if not await deps.hasher.verify(credentials.password_hash, password):
        raise InvalidCredentials()
    return credentials


async def _rehash(deps: AuthDependencies, user_id: str, old_hash: str, password: str) -> None:
    """The hash was made with older parameters: the plain password is only here, now."""
    try:
        new_hash = await deps.hasher.hash(password)
        await deps.users.replace_password_hash(user_id, old_hash, new_hash)
    except Exception:
        # The login itself succeeded; the next one will try again.
        log.exception("password rehash failed", extra={"fields": {"user_id": user_id}})


async def change_password(deps: AuthDependencies, caller: Caller, current_password: str,
                          new_password: str, client_address: str) -> int:
    """Needs the current password (a stolen session alone cannot lock the owner out); revokes
    every other session with the change, in the same transaction. Returns how many."""
    current = check_password_length(current_password, "current_password")
    credentials = await deps.users.credentials_by_id(caller.user_id)
    if credentials is None:
        raise Unauthenticated("session token is invalid or expired")
    new = check_password_strength(new_password, email=credentials.email, field="new_password")
    if new == current:
        raise InvalidArgument("new_password must differ from current_password")
    await _check_password_again(deps, credentials, current, "current_password", client_address)
    new_hash = await deps.hasher.hash(new)
    revoked = await deps.users.change_password(
        caller.user_id, credentials.password_hash, new_hash, caller.session_id
    )
    if revoked is None:
        raise Aborted("the password was changed by another request; try again")
    await deps.sessions.write_tombstones(caller.user_id, revoked)
    return len(revoked)


async def revoke_all_sessions(deps: AuthDependencies, caller: Caller, password: str,
                              keep_current: bool, client_address: str) -> int:
    """Every session of the user ends ("log out everywhere"), the calling one too unless
    `keep_current`. Needs the password: whoever holds only a stolen session must not be able to
    end the owner's sessions (and, with keep_current, keep theirs). Returns how many ended."""
    password = check_password_length(password, "password")
    credentials = await deps.users.credentials_by_id(caller.user_id)
    if credentials is None:
        raise Unauthenticated("session token is invalid or expired")
    await _check_password_again(deps, credentials, password, "password", client_address)
    revoked = await deps.sessions.revoke_all(
        caller.user_id, except_session_id=caller.session_id if keep_current else None)
    return len(revoked)


async def _check_password_again(deps: AuthDependencies, credentials: StoredCredentials,
                                password: str, field: str, client_address: str) -> None:
    """A signed-in user confirms their password: guessing it through these calls is brute
    force like any login, counted by the same limits."""
    reservation = await deps.limiter.reserve(credentials.email, client_address)
    try:
        matches = await deps.hasher.verify(credentials.password_hash, password)
    except Exception:
        await deps.limiter.release(reservation)  # a full pool or an outage is not a guess
        raise
    if not matches:
        raise PermissionDenied(f"{field} is incorrect")
    await deps.limiter.succeeded(reservation)
