"""BankClient: the blocking facade for the common calls. AsyncBankClient (aio.py) is its twin.

    with BankClient(Endpoints.kubernetes()) as bank:
        session = bank.login("alice@example.com", password)
        bank.credentials = session.credentials()
        balance = bank.balance(account_id)
        bank.transfer(account_id, other, Money(1250, "EUR"), idempotency_key=key)

Every call has a deadline (ChannelSettings.timeout_s); side-effect-free calls are retried on
UNAVAILABLE by the channel; a transfer never is (retry it with the same idempotency key).
Failures raise cachebank_client.errors.BankClientError subclasses. The generated stubs are
public (`account`, `transfer_service`, `auth`) for the calls the facade does not wrap.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc
from bank.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    transfer_pb2,
    transfer_pb2_grpc,
)

from cachebank_client import _convert
from cachebank_client.channel import ChannelSettings, open_channel
from cachebank_client.credentials import CallCredentials
from cachebank_client.endpoints import Endpoints
from cachebank_client.errors import Unauthenticated, from_rpc_error
from cachebank_client.models import (
    Account,
    Balance,
    Money,
    RecentTransactions,
    Session,
    Transfer,
    TransferPage,
)

R = TypeVar("R")


def new_idempotency_key() -> str:
    """A fresh key for one transfer; keep it to retry that transfer."""
    return str(uuid.uuid4())


class BankClient:
    def __init__(self, endpoints: Endpoints, *, credentials: CallCredentials | None = None,
                 settings: ChannelSettings | None = None,
                 channel_credentials: grpc.ChannelCredentials | None = None) -> None:
        settings = settings or ChannelSettings()
        self._timeout_s = settings.timeout_s
        self._channels = [open_channel(target, settings, channel_credentials=channel_credentials)
                          for target in (endpoints.account, endpoints.transfer, endpoints.auth)]
        self.account = account_pb2_grpc.AccountServiceStub(self._channels[0])
        self.transfer_service = transfer_pb2_grpc.TransferServiceStub(self._channels[1])
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[2])
        # The default credentials of every call; each method also takes its own.
        self.credentials = credentials

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _call(self, method: Callable[..., R], request: Any,
              credentials: CallCredentials | None, *, public: bool = False) -> R:
        if not public:  # public RPCs (login) carry no one's credentials
            credentials = credentials or self.credentials
            if credentials is None:
                raise Unauthenticated("no credentials: log in, or pass credentials")
        try:
            return method(request, timeout=self._timeout_s,
                          metadata=_convert.call_metadata(credentials))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def login(self, email: str, password: str, *, device_token: str = "") -> Session:
        """`device_token`: the one this device's last Session carried, if any."""
        request = auth_pb2.LoginRequest(email=email, password=password, device_token=device_token)
        reply = self._call(self.auth.Login, request, None, public=True)
        return _convert.session(reply)

    def logout(self, *, credentials: CallCredentials | None = None) -> None:
        self._call(self.auth.Logout, auth_pb2.LogoutRequest(), credentials)

    def revoke_session(self, session_id: str, *,
                       credentials: CallCredentials | None = None) -> None:
        """End one of the caller's own sessions (NotFound for anyone else's)."""
        self._call(self.auth.RevokeSession,
                   auth_pb2.RevokeSessionRequest(session_id=session_id), credentials)

    def revoke_all_sessions(self, password: str, *, keep_current: bool = False,
                            credentials: CallCredentials | None = None) -> int:
        """End every session of the caller (the calling one too unless keep_current); needs
        the password. Returns how many ended."""
        request = auth_pb2.RevokeAllSessionsRequest(password=password, keep_current=keep_current)
        return int(self._call(self.auth.RevokeAllSessions, request, credentials).revoked_sessions)

    def accounts(self, *, credentials: CallCredentials | None = None) -> list[Account]:
        reply = self._call(self.account.ListAccounts, account_pb2.ListAccountsRequest(),
                           credentials)
        return [_convert.account(a) for a in reply.accounts]

    def balance(self, account_id: str, *, min_version: int = 0,
                credentials: CallCredentials | None = None) -> Balance:
        request = account_pb2.GetBalanceRequest(account_id=account_id, min_version=min_version)
        return _convert.balance(self._call(self.account.GetBalance, request, credentials))

    def recent_transactions(self, account_id: str, *, min_version: int = 0,
                            credentials: CallCredentials | None = None) -> RecentTransactions:
        request = account_pb2.ListRecentTransactionsRequest(account_id=account_id,
                                                            min_version=min_version)
        reply = self._call(self.account.ListRecentTransactions, request, credentials)
        return _convert.recent(account_id, reply)

    def transfer(self, from_account_id: str, to_account_id: str, amount: Money, *,
                 idempotency_key: str, description: str = "",
                 credentials: CallCredentials | None = None) -> Transfer:
        """Move `amount`; with a key already used for the same transfer, the stored result
        comes back and nothing moves twice. Never retried automatically."""
        request = _convert.transfer_request(from_account_id, to_account_id, amount,
                                            idempotency_key, description)
        reply = self._call(self.transfer_service.CreateTransfer, request, credentials)
        return _convert.transfer(reply)

    def transfers(self, *, page_size: int = 20, page_token: str = "",
                  credentials: CallCredentials | None = None) -> TransferPage:
        request = transfer_pb2.ListTransfersRequest(page_size=page_size, page_token=page_token)
        reply = self._call(self.transfer_service.ListTransfers, request, credentials)
        return _convert.transfer_page(reply)
