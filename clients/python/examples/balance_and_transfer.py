"""Log in, show each account's balance, move money with an idempotency key, and read the
source account's balance back at the version the transfer returned (read-your-writes).

    python examples/balance_and_transfer.py --email alice@example.com --to ACCOUNT_ID \\
        --amount 1250 [--endpoints local|kubernetes | --account T --transfer T --auth T]

The password is read from standard input (one line), never from the command line.
"""

from __future__ import annotations

import argparse
import sys

from cachebank_client import BankClient, Endpoints, Money, new_idempotency_key
from cachebank_client.errors import BankClientError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--email", required=True)
    parser.add_argument("--to", required=True, help="the account to pay")
    parser.add_argument("--amount", type=int, required=True, help="minor units (cents)")
    parser.add_argument("--endpoints", choices=["local", "kubernetes"], default="local")
    parser.add_argument("--account", help="gRPC target of the account service")
    parser.add_argument("--transfer", help="gRPC target of the transfer service")
    parser.add_argument("--auth", help="gRPC target of the auth service")
    args = parser.parse_args(argv)
    endpoints = Endpoints.local() if args.endpoints == "local" else Endpoints.kubernetes()
    if args.account and args.transfer and args.auth:
        endpoints = Endpoints(args.account, args.transfer, args.auth)
    password = sys.stdin.readline().rstrip("\n")

    with BankClient(endpoints) as bank:
        try:
            session = bank.login(args.email, password)
            bank.credentials = session.credentials()
            accounts = bank.accounts()
            for account in accounts:
                print(f"{account.account_id}  {account.name}: {account.balance}")
            source = accounts[0]
            key = new_idempotency_key()  # keep it: a retry of this transfer reuses it
            done = bank.transfer(source.account_id, args.to, Money(args.amount, source.currency),
                                 idempotency_key=key, description="example")
            print(f"transfer {done.transfer_id}: {done.amount} (idempotency key {key})")
            version = done.source_balance.version if done.source_balance else 0
            after = bank.balance(source.account_id, min_version=version)
            print(f"balance now {after.amount} at version {after.version}")
            bank.logout()
        except BankClientError as error:
            print(f"failed: {error.code.name}: {error.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
