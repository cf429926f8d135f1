"""A typed client for the cachebank services, for internal callers (sync and asyncio).

    from cachebank_client import BankClient, Endpoints, Money, new_idempotency_key

See README.md beside pyproject.toml. The generated stubs are the `bank` package of the same
distribution (`from bank.v1 import account_pb2`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from cachebank_client.aio import AsyncBankClient  # noqa: E402
from cachebank_client.channel import (  # noqa: E402
    ChannelSettings,
    RetryPolicy,
    open_aio_channel,
    open_channel,
    tls_credentials,
)
from cachebank_client.client import BankClient, new_idempotency_key  # noqa: E402
from cachebank_client.credentials import (  # noqa: E402
    BearerToken,
    CallCredentials,
    MachineCredential,
)
from cachebank_client.endpoints import Endpoints  # noqa: E402
from cachebank_client.models import (  # noqa: E402
    Account,
    Balance,
    LedgerEntry,
    Money,
    RecentTransactions,
    Session,
    Transfer,
    TransferPage,
)

__all__ = [
    "Account", "AsyncBankClient", "Balance", "BankClient", "BearerToken", "CallCredentials",
    "MachineCredential",
    "ChannelSettings", "Endpoints", "LedgerEntry", "Money", "RecentTransactions", "RetryPolicy",
    "Session", "Transfer", "TransferPage", "new_idempotency_key", "open_aio_channel",
    "open_channel", "tls_credentials",
]
