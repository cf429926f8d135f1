"""Account use cases on fakes: ownership, input checks, cache-aside wiring, pagination."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from services.account.adapters.fakes import FakeAccountReader
from services.account.domain import AccountDetails, LedgerEntry, Loan, PagePosition
from services.account.service_layer import accounts, balances
from services.account.service_layer.cache_layout import balance_key, loans_key, recent_key
from services.account.service_layer.dependencies import AccountReads, CacheTtls
from services.account.service_layer.pagination import (
    decode_page_token,
    encode_page_token,
    transaction_page_tokens,
)
from shared.auth_context import Caller
from shared.cache import CircuitBreaker, ReadThroughCache, VersionedCache, decode_entry
from shared.cache.fake_backend import InMemoryCacheBackend
from shared.errors import InvalidArgument, NotFound

ALICE = Caller(str(uuid.uuid4()), str(uuid.uuid4()))
MALLORY = Caller(str(uuid.uuid4()), str(uuid.uuid4()))
TOKENS = transaction_page_tokens(bytes(range(32)))


World = tuple[AccountReads, FakeAccountReader, InMemoryCacheBackend, str]


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def world() -> World:
    reader = FakeAccountReader()
    account_id = new_id()
    reader.add_account(AccountDetails(account_id, ALICE.user_id, "Current", "EUR", 0, 1, "open",
                                      1_700_000_000_000_000))
    for n in range(1, 26):
        reader.post(account_id, LedgerEntry(n, new_id(), 100, n * 100, new_id(), f"#{n}",
                                            1_700_000_000_000_000 + n // 2))
    reader.loans.append(Loan(new_id(), account_id, 50_000, 20_000, "EUR", 450, "active", 1))
    backend = InMemoryCacheBackend()
    cache = VersionedCache(backend, CircuitBreaker(3, 1.0), 0.1)
    reads = AccountReads(reader, ReadThroughCache(cache, ttl_jitter=0.1),
                         CacheTtls(60, 120, 300, 0.1), TOKENS)
    return reads, reader, backend, account_id


async def test_balance_is_cached_with_its_version_and_owner(world: World) -> None:
    reads, reader, backend, account_id = world
    first = await balances.get_balance(reads, ALICE, account_id)
    second = await balances.get_balance(reads, ALICE, account_id.upper())
    assert first.value == second.value
    assert first.value is not None and first.value.minor_units == 2500
    assert (first.from_cache, second.from_cache) == (False, True)
    assert reader.loads["balance"] == 1
    entry = decode_entry(backend.raw(balance_key(account_id)) or b"")
    assert entry is not None and (entry.version, entry.owner) == (26, ALICE.user_id)


async def test_recent_transactions_are_the_newest_ten(world: World) -> None:
    reads, _, backend, account_id = world
    read = await balances.list_recent_transactions(reads, ALICE, account_id)
    assert read.value is not None
    assert [e.entry_id for e in read.value.entries] == list(range(25, 15, -1))
    again = await balances.list_recent_transactions(reads, ALICE, account_id)
    assert again.from_cache and again.value == read.value
    assert backend.raw(recent_key(account_id)) is not None


@pytest.mark.parametrize("rpc", ["balance", "recent", "account", "history"])
async def test_another_users_account_is_not_found(world: World, rpc: str) -> None:
    reads, _, _, account_id = world
    await balances.get_balance(reads, ALICE, account_id)  # cached: a hit must not leak either
    await balances.list_recent_transactions(reads, ALICE, account_id)
    calls = {
        "balance": lambda: balances.get_balance(reads, MALLORY, account_id),
        "recent": lambda: balances.list_recent_transactions(reads, MALLORY, account_id),
        "account": lambda: accounts.get_account(reads, MALLORY, account_id),
        "history": lambda: accounts.list_transactions(reads, MALLORY, account_id, 5, ""),
    }
    with pytest.raises(NotFound) as foreign:
        await calls[rpc]()
    missing = new_id()
    with pytest.raises(NotFound) as absent:
        await {"balance": lambda: balances.get_balance(reads, ALICE, missing),
               "recent": lambda: balances.list_recent_transactions(reads, ALICE, missing),
               "account": lambda: accounts.get_account(reads, ALICE, missing),
               "history": lambda: accounts.list_transactions(reads, ALICE, missing, 5, "")}[rpc]()
    assert foreign.value.message.replace(account_id, "X") == absent.value.message.replace(
        missing, "X")


@pytest.mark.parametrize("bad", ["", "nope", "123", "' OR 1=1 --", "x" * 500])
async def test_malformed_account_ids_are_invalid_arguments(world: World, bad: str) -> None:
    reads, reader, _, _ = world
    with pytest.raises(InvalidArgument):
        await balances.get_balance(reads, ALICE, bad)
    with pytest.raises(InvalidArgument):
        await accounts.list_transactions(reads, ALICE, bad, 0, "")
    assert reader.loads == {}


async def test_negative_min_version_and_page_size_are_invalid(world: World) -> None:
    reads, _, _, account_id = world
    with pytest.raises(InvalidArgument):
        await balances.get_balance(reads, ALICE, account_id, min_version=-1)
    with pytest.raises(InvalidArgument):
        await accounts.list_transactions(reads, ALICE, account_id, -1, "")


async def test_history_pages_cover_everything_once(world: World) -> None:
    reads, _, _, account_id = world
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await accounts.list_transactions(reads, ALICE, account_id, 10, token)
        seen.extend(e.entry_id for e in page.entries)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(25, 0, -1))
    assert pages == 3


async def test_page_size_defaults_and_is_capped(world: World) -> None:
    reads, reader, _, account_id = world
    assert len((await accounts.list_transactions(reads, ALICE, account_id, 0, "")).entries) == 20
    for n in range(26, 200):
        reader.post(account_id, LedgerEntry(n, new_id(), 1, 1, new_id(), "", 1_800_000_000 + n))
    assert len((await accounts.list_transactions(reads, ALICE, account_id, 1000, "")).entries) \
        == 100


def test_page_tokens_round_trip_and_refuse_tampering() -> None:
    account_id = new_id()
    position = PagePosition(account_id, 1_700_000_000_123_456, 987)
    token = encode_page_token(TOKENS, position)
    assert decode_page_token(TOKENS, token, account_id) == position
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for bad in [flipped, token[:-2], token + "AA", "not-base64!", "", "A" * 65]:
        with pytest.raises(InvalidArgument):
            decode_page_token(TOKENS, bad, account_id)
    with pytest.raises(InvalidArgument):
        decode_page_token(TOKENS, token, new_id())  # another account's cursor


async def test_loans_are_an_api_cache_of_the_callers_own(world: World) -> None:
    reads, reader, backend, _ = world
    first = await accounts.list_loans(reads, ALICE)
    second = await accounts.list_loans(reads, ALICE)
    assert first.value is not None and len(first.value.loans) == 1
    assert second.from_cache and second.value == first.value
    assert reader.loads["loans"] == 1
    assert backend.raw(loans_key(ALICE.user_id)) is not None
    other = await accounts.list_loans(reads, MALLORY)
    assert other.value is not None and other.value.loans == ()


async def test_accounts_are_read_from_the_database(world: World) -> None:
    reads, _, _, account_id = world
    mine = await accounts.list_accounts(reads, ALICE)
    assert [a.account_id for a in mine] == [account_id]
    assert await accounts.list_accounts(reads, MALLORY) == []
    assert (await accounts.get_account(reads, ALICE, account_id)).minor_units == 2500


def test_account_ids_come_out_canonical_whatever_form_they_came_in() -> None:
    canonical = new_id()
    for given in (canonical, canonical.upper(), canonical.replace("-", ""),
                  "{" + canonical + "}", "urn:uuid:" + canonical):
        assert balances.parse_account_id(given) == canonical
    with pytest.raises(InvalidArgument):
        balances.parse_account_id(canonical + "\n")


@pytest.mark.parametrize("read", [balances.get_balance, balances.list_recent_transactions])
async def test_a_min_version_the_account_has_not_reached_is_an_error(
    world: World, read: Any
) -> None:
    reads, _, _, account_id = world
    assert (await read(reads, ALICE, account_id, min_version=26)).value is not None
    with pytest.raises(balances.VersionNotReached) as refused:
        await read(reads, ALICE, account_id, min_version=27)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "min_version 27 is newer than" in refused.value.message
    assert "current version 26" in refused.value.message
    with pytest.raises(NotFound):  # someone else's account: not found first, no version told
        await read(reads, MALLORY, account_id, min_version=27)


async def test_a_caller_whose_floors_are_unknown_reads_postgres(world: World) -> None:
    """The request gate could not read the user's read-your-writes floors (Redis did not answer
    for the user): the cached entry may predate the user's own last transfer."""
    reads, reader, _, account_id = world
    assert not (await balances.get_balance(reads, ALICE, account_id)).from_cache
    assert (await balances.get_balance(reads, ALICE, account_id)).from_cache
    blind = Caller(ALICE.user_id, ALICE.session_id, floors_unknown=True)
    for read in (balances.get_balance, balances.list_recent_transactions):
        result = await read(reads, blind, account_id)
        assert not result.from_cache and result.value is not None
    assert reader.loads["balance"] == 2


@pytest.mark.parametrize("floors_unknown", [False, True])
@pytest.mark.parametrize("rpc", ["balance", "recent"])
async def test_a_foreign_caller_leaves_no_owner_in_the_cache(
    world: World, rpc: str, floors_unknown: bool,
) -> None:
    """An entry carries its account's owner: a caller asking for someone else's account, on a
    miss, must not put that owner id into Redis (nor a lease that outlives the request)."""
    reads, _, backend, account_id = world
    caller = Caller(MALLORY.user_id, MALLORY.session_id, floors_unknown=floors_unknown)
    read = {"balance": balances.get_balance, "recent": balances.list_recent_transactions}[rpc]
    with pytest.raises(NotFound):
        await read(reads, caller, account_id)
    for key in (balance_key(account_id), recent_key(account_id)):
        assert backend.raw(key) is None and backend.raw(key + ":lease") is None
    # The owner's own read fills it as before.
    assert not (await read(reads, ALICE, account_id)).from_cache
    assert (await read(reads, ALICE, account_id)).from_cache
