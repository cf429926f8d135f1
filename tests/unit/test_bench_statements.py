"""The bench's statement classes hold for the statements the services really send (taken from
the code, so a changed statement that escapes its class fails here)."""

from __future__ import annotations

import pytest

from bench.statements import READ_PATH, StatementCounts, classify
from services.account.adapters import account_repository, outbox_reader
from services.auth.adapters import (
    attempt_counters,
    session_retention,
    session_store,
    user_repository,
)
from services.transfer.adapters import outbox_store, retention_store, transfer_repository
from shared import session_confirmation

CASES = [
    (account_repository._BALANCE_SQL, "read", READ_PATH[0]),
    (account_repository._RECENT_SQL, "read", READ_PATH[0]),
    (account_repository._ACCOUNTS_OF_SQL, "read", READ_PATH[0]),
    (account_repository._LOANS_SQL, "read", READ_PATH[0]),
    (account_repository._PAGE_SQL, "read", READ_PATH[0]),
    (account_repository._SNAPSHOTS_SQL, "read", "warm-ups after login"),
    (outbox_reader._CATCH_UP_SQL, "read", "event catch-up"),
    (user_repository._BY_EMAIL, "read", "logins: credentials"),
    (user_repository._REGISTER, "write", "registrations"),
    (user_repository._CHANGE_PASSWORD, "write", "logouts and password changes"),
    (session_store._INSERT_SESSION, "write", "logins: new session"),
    (attempt_counters._LOCK, "write", "logins: attempt counters"),
    (attempt_counters._WRITE, "write", "logins: attempt counters"),
    (attempt_counters._GIVE_BACK, "write", "logins: attempt counters"),
    (attempt_counters._PURGE, "write", "logins: attempt counters"),
    (session_store._REVOKE_SESSIONS, "write", "logouts and password changes"),
    (session_store._LIST_ACTIVE, "read", "session lists"),
    (session_confirmation._CONFIRM, "write", "session confirmations (request gate)"),
    (transfer_repository._TRANSFER_SQL, "write", "transfers (transfer_money)"),
    (transfer_repository._BATCH_SQL, "write", "transfer batches (transfer_money_batch)"),
    (transfer_repository._GET_SQL, "read", "transfer reads"),
    (outbox_store._MARK_SQL, "background", "outbox confirmations"),
    (outbox_store._CLAIM_SQL, "background", "outbox relay"),
    (outbox_store._BACKLOG_SQL, "background", "outbox relay"),
    (retention_store._DELETE_CONFIRMED_OUTBOX, "background", "retention"),
    (session_retention._DELETE_ENDED, "background", "retention"),
    ("BEGIN", "control", "transaction control and settings"),
]


@pytest.mark.parametrize(("query", "kind", "what"), CASES)
def test_each_statement_has_its_class(query: str, kind: str, what: str) -> None:
    assert classify(query) == (kind, what)


def test_counts_add_up_by_kind_and_read_path() -> None:
    counts = StatementCounts.of([(10, account_repository._BALANCE_SQL),
                                 (3, account_repository._SNAPSHOTS_SQL),
                                 (5, user_repository._BY_EMAIL),
                                 (7, transfer_repository._TRANSFER_SQL), (9, "COMMIT")])
    assert (counts.reads, counts.read_path, counts.data) == (18, 13, 25)


def test_health_probes_are_background() -> None:
    assert classify("SELECT $1") == ("background", "health probes")
