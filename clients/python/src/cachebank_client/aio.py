"""AsyncBankClient: the asyncio twin of BankClient (client.py): the same methods, awaited.

    async with AsyncBankClient(Endpoints.kubernetes()) as bank:
        session = await bank.login("alice@example.com", password)
        bank.credentials = session.credentials()
        balance = await bank.balance(account_id)

Create it inside the running event loop (grpc.aio channels belong to one loop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
from cachebank_client.channel import ChannelSettings, open_aio_channel
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


class AsyncBankClient:
    def __init__(self, endpoints: Endpoints, *, credentials: CallCredentials | None = None,
                 settings: ChannelSettings | None = None,
                 channel_credentials: grpc.ChannelCredentials | None = None) -> None:
        settings = settings or ChannelSettings()
        self._timeout_s = settings.timeout_s
        self._channels = [
            open_aio_channel(target, settings, channel_credentials=channel_credentials)
            for target in (endpoints.account, endpoints.transfer, endpoints.auth)]
        self.account = account_pb2_grpc.AccountServiceStub(self._channels[0])
        self.transfer_service = transfer_pb2_grpc.TransferServiceStub(self._channels[1])
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[2])
        # The default credentials of every call; each method also takes its own.
        self.credentials = credentials

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> AsyncBankClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[R]], request: Any,
                    credentials: CallCredentials | None, *, public: bool = False) -> R:
        if not public:  # public RPCs (login) carry no one's credentials
            credentials = credentials or self.credentials
            if credentials is None:
                raise Unauthenticated("no credentials: log in, or pass credentials")
        try:
            return await method(request, timeout=self._timeout_s,
                          metadata=_convert.call_metadata(credentials))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def login(self, email: str, password: str, *, device_token: str = "") -> Session:
        """`device_token`: the one this device's last Session carried, if any."""
        request = auth_pb2.LoginRequest(email=email, password=password, device_token=device_token)
        reply = await self._call(self.auth.Login, request, None, public=True)
        return _convert.session(reply)

    async def logout(self, *, credentials: CallCredentials | None = None) -> None:
        await self._call(self.auth.Logout, auth_pb2.LogoutRequest(), credentials)

    async def revoke_session(self, session_id: str, *,
                             credentials: CallCredentials | None = None) -> None:
        """End one of the caller's own sessions (NotFound for anyone else's)."""
        await self._call(self.auth.RevokeSession,
                         auth_pb2.RevokeSessionRequest(session_id=session_id), credentials)

    async def revoke_all_sessions(self, password: str, *, keep_current: bool = False,
                                  credentials: CallCredentials | None = None) -> int:
        """End every session of the caller (the calling one too unless keep_current); needs
        the password. Returns how many ended."""
        request = auth_pb2.RevokeAllSessionsRequest(password=password, keep_current=keep_current)
        reply = await self._call(self.auth.RevokeAllSessions, request, credentials)
        return int(reply.revoked_sessions)

    async def accounts(self, *, credentials: CallCredentials | None = None) -> list[Account]:
        reply = await self._call(self.account.ListAccounts, account_pb2.ListAccountsRequest(),
                           credentials)
        return [_convert.account(a) for a in reply.accounts]

    async def balance(self, account_id: str, *, min_version: int = 0,
                credentials: CallCredentials | None = None) -> Balance:
        request = account_pb2.GetBalanceRequest(account_id=account_id, min_version=min_version)
        return _convert.balance(await self._call(self.account.GetBalance, request, credentials))

    async def recent_transactions(self, account_id: str, *, min_version: int = 0,
                            credentials: CallCredentials | None = None) -> RecentTransactions:
        request = account_pb2.ListRecentTransactionsRequest(account_id=account_id,
                                                            min_version=min_version)
        reply = await self._call(self.account.ListRecentTransactions, request, credentials)
        return _convert.recent(account_id, reply)

    async def transfer(self, from_account_id: str, to_account_id: str, amount: Money, *,
                 idempotency_key: str, description: str = "",
                 credentials: CallCredentials | None = None) -> Transfer:
        """Move `amount`; with a key already used for the same transfer, the stored result
        comes back and nothing moves twice. Never retried automatically."""
        request = _convert.transfer_request(from_account_id, to_account_id, amount,
                                            idempotency_key, description)
        reply = await self._call(self.transfer_service.CreateTransfer, request, credentials)
        return _convert.transfer(reply)

    async def transfers(self, *, page_size: int = 20, page_token: str = "",
                  credentials: CallCredentials | None = None) -> TransferPage:
        request = transfer_pb2.ListTransfersRequest(page_size=page_size, page_token=page_token)
        reply = await self._call(self.transfer_service.ListTransfers, request, credentials)
        return _convert.transfer_page(reply)
