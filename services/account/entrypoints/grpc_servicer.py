"""Thin gRPC servicer: proto in, use case, proto out. No SQL or Redis here."""

from __future__ import annotations

import grpc
from bank.v1 import account_pb2, account_pb2_grpc

from services.account.entrypoints.proto_mapping import (
    account_message,
    balance_message,
    ledger_entry_message,
    loan_message,
    source,
)
from services.account.service_layer import accounts, balances, warm_up
from services.account.service_layer.dependencies import AccountReads
from shared.auth_context import current_caller
from shared.grpc_interceptor import Prefetch

_SERVICE = "/bank.v1.AccountService/"


def prefetchers(reads: AccountReads) -> dict[str, Prefetch]:
    """Cache reads that can leave with the session check (shared/grpc_interceptor.py)."""
    return {
        _SERVICE + "GetBalance":
            lambda request: balances.prefetch_balance(reads, request.account_id),
        _SERVICE + "ListRecentTransactions":
            lambda request: balances.prefetch_recent_transactions(reads, request.account_id),
    }


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, reads: AccountReads) -> None:
        self._reads = reads

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.Account:
        account = await accounts.get_account(self._reads, current_caller(), request.account_id)
        return account_message(account)

    async def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.ListAccountsResponse:
        found = await accounts.list_accounts(self._reads, current_caller())
        return account_pb2.ListAccountsResponse(accounts=[account_message(a) for a in found])

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.Balance:
        read = await balances.get_balance(
            self._reads, current_caller(), request.account_id, request.min_version
        )
        snap = read.value
        assert snap is not None  # the use case raises NotFound instead
        return balance_message(snap, read.from_cache)

    async def ListRecentTransactions(
        self,
        request: account_pb2.ListRecentTransactionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> account_pb2.ListRecentTransactionsResponse:
        read = await balances.list_recent_transactions(
            self._reads, current_caller(), request.account_id, request.min_version
        )
        recent = read.value
        assert recent is not None
        return account_pb2.ListRecentTransactionsResponse(
            entries=[ledger_entry_message(recent.account_id, recent.currency, e)
                     for e in recent.entries],
            version=recent.version,
            source=source(read.from_cache),
        )

    async def ListTransactions(
        self, request: account_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.ListTransactionsResponse:
        page = await accounts.list_transactions(
            self._reads, current_caller(), request.account_id, request.page_size,
            request.page_token,
        )
        return account_pb2.ListTransactionsResponse(
            entries=[ledger_entry_message(page.account_id, page.currency, e)
                     for e in page.entries],
            next_page_token=page.next_page_token,
        )

    async def ListLoans(
        self, request: account_pb2.ListLoansRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.ListLoansResponse:
        read = await accounts.list_loans(self._reads, current_caller())
        loans = read.value.loans if read.value is not None else ()
        return account_pb2.ListLoansResponse(loans=[loan_message(loan) for loan in loans])

    async def WarmCache(
        self, request: account_pb2.WarmCacheRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.WarmCacheResponse:
        done = await warm_up.warm_caller_cache(self._reads, current_caller())
        return account_pb2.WarmCacheResponse(accounts=done.accounts, loaded=done.loaded,
                                             filled=done.filled)
