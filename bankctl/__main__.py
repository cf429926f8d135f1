"""bankctl: log in, show balances, transfer, list transfers, check a user's cache entries.

    python -m bankctl login --email alice@example.com     # password on stdin or prompted
    python -m bankctl balances
    python -m bankctl transfer --from ACC --to ACC --amount 1250 [--key KEY]
    python -m bankctl transfers [--page-size 20] [--page-token T]
    python -m bankctl logout
    python -m bankctl logout-everywhere          # every session ends; password on stdin or prompted
    python -m bankctl cache-check (--user USER_ID | --email EMAIL)   # operators: read-only

The gRPC targets are the repository's settings (BANK_ACCOUNT_TARGET, BANK_TRANSFER_TARGET,
BANK_AUTH_TARGET; `make run`'s by default); cache-check also reads BANK_DATABASE_URL,
BANK_REDIS_NODES and BANK_SESSION_SIGNING_KEY. The session token is kept in --session-file
(mode 0600). Exit status: 0 done, 1 refused or a cache problem found, 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from cachebank_client import (
    BankClient,
    BearerToken,
    ChannelSettings,
    Endpoints,
    Money,
    new_idempotency_key,
)
from cachebank_client.errors import BankClientError

from bankctl import cache_check, session_file
from shared.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bankctl", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--session-file", type=Path, default=session_file.DEFAULT)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="log in and keep the session token")
    login.add_argument("--email", required=True)
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input instead of prompting")
    commands.add_parser("logout", help="end the session and forget the token")
    everywhere = commands.add_parser("logout-everywhere",
                                     help="end every session of the user (needs the password)")
    everywhere.add_argument("--password-stdin", action="store_true",
                            help="read the password from standard input instead of prompting")
    commands.add_parser("balances", help="every account of the logged-in user, with balance")
    transfer = commands.add_parser("transfer", help="move money (idempotent by --key)")
    transfer.add_argument("--from", dest="source", required=True)
    transfer.add_argument("--to", dest="target", required=True)
    transfer.add_argument("--amount", type=int, required=True, help="minor units (cents)")
    transfer.add_argument("--currency", default="EUR")
    transfer.add_argument("--description", default="")
    transfer.add_argument("--key", help="idempotency key: reuse it to retry a transfer safely")
    listing = commands.add_parser("transfers", help="the user's transfers, newest first")
    listing.add_argument("--page-size", type=int, default=20)
    listing.add_argument("--page-token", default="")
    check = commands.add_parser("cache-check", help="a user's cache entries vs PostgreSQL")
    who = check.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id")
    who.add_argument("--email")
    return parser


def main(argv: list[str] | None = None, *, settings: Settings | None = None,
         stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if args.command == "cache-check":
        return _cache_check(args, settings or Settings.from_env(), stdout)
    # The client commands need only the targets: the secrets need not be set.
    settings = settings or Settings.from_env(database_url="", redis_nodes="")
    endpoints = Endpoints(settings.account_target, settings.transfer_target,
                          settings.auth_target)
    with BankClient(endpoints, settings=ChannelSettings(timeout_s=args.timeout)) as bank:
        try:
            return _client_command(args, bank, stdin, stdout)
        except BankClientError as error:
            print(f"bankctl: {error.code.name}: {error.message}", file=sys.stderr)
            return 1


def _password(args: argparse.Namespace, stdin: TextIO) -> str:
    return stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()


def _client_command(args: argparse.Namespace, bank: BankClient, stdin: TextIO,
                    stdout: TextIO) -> int:
    if args.command == "login":
        session = bank.login(args.email, _password(args, stdin))
        session_file.save(args.session_file, session.token, session.user_id)
        print(f"logged in as {session.user_id}; session {session.session_id}", file=stdout)
        return 0
    token = session_file.load(args.session_file)
    if token is None:
        print("bankctl: not logged in (bankctl login --email ...)", file=sys.stderr)
        return 1
    bank.credentials = BearerToken(token)
    if args.command == "logout":
        bank.logout()
        session_file.remove(args.session_file)
        print("logged out", file=stdout)
    elif args.command == "logout-everywhere":
        ended = bank.revoke_all_sessions(_password(args, stdin))
        session_file.remove(args.session_file)
        print(f"logged out everywhere: {ended} sessions ended", file=stdout)
    elif args.command == "balances":
        for account in bank.accounts():
            balance = bank.balance(account.account_id)
            source = "cache" if balance.from_cache else "database"
            print(f"{account.account_id}  {balance.amount}  version {balance.version}"
                  f"  ({source})  {account.name}", file=stdout)
    elif args.command == "transfer":
        key = args.key or new_idempotency_key()
        done = bank.transfer(args.source, args.target, Money(args.amount, args.currency),
                             idempotency_key=key, description=args.description)
        print(f"transfer {done.transfer_id}: {done.amount} {done.from_account_id} ->"
              f" {done.to_account_id}  idempotency key {key}", file=stdout)
    else:
        page = bank.transfers(page_size=args.page_size, page_token=args.page_token)
        for item in page.transfers:
            print(f"{item.created_at:%Y-%m-%d %H:%M:%S}  {item.transfer_id}  {item.amount}"
                  f"  {item.from_account_id} -> {item.to_account_id}  {item.description}",
                  file=stdout)
        if page.next_page_token:
            print(f"next page: --page-token {page.next_page_token}", file=stdout)
    return 0


def _cache_check(args: argparse.Namespace, settings: Settings, stdout: TextIO) -> int:
    user_id = args.user or cache_check.user_id_of(settings, args.email)
    if user_id is None:
        print(f"bankctl: no user {args.email}", file=sys.stderr)
        return 1
    findings = cache_check.check_user(settings, user_id)
    for finding in findings:
        mark = "PROBLEM" if finding.problem else "       "
        print(f"{mark} {finding.verdict:<16} {finding.key}  {finding.detail}", file=stdout)
    problems = sum(f.problem for f in findings)
    print(f"{len(findings)} entries checked, {problems} problems", file=stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
