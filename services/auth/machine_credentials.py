"""Machine credentials for operators: create (the token is shown once), list, revoke.

    python -m services.auth.machine_credentials create treasury-batch treasury:deposit ...
    python -m services.auth.machine_credentials list
    python -m services.auth.machine_credentials revoke treasury-batch

Reads BANK_DATABASE_URL. What a credential may call is its scopes: each RPC that acts for no
user names the one it needs in its proto (`option (bank.v1.machine_scope)`); the services check
tokens with shared/machine_credentials.py, and a revocation takes effect within its 5 s cache.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime

import psycopg

from shared.config import Settings
from shared.machine_credentials import TOKEN_PREFIX, secret_hash
from shared.pg_pool import libpq_url

SCOPES = ("treasury:deposit", "treasury:withdraw")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class CredentialInfo:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


async def create_credential(conn: psycopg.AsyncConnection[tuple[object, ...]], name: str,
                            scopes: list[str]) -> str:
    """The new credential's token (only its hash is stored: show it once)."""
    if not _NAME.fullmatch(name):
        raise ValueError("name: 1-63 of a-z 0-9 . _ - (starting with a letter or digit)")
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}"
                         + (f" (not {', '.join(unknown)})" if unknown else ""))
    secret = secrets.token_urlsafe(32)
    row = await (await conn.execute(
        "INSERT INTO machine_credentials (name, secret_hash, scopes) VALUES (%s, %s, %s)"
        " RETURNING id::text", (name, secret_hash(secret), sorted(set(scopes))))).fetchone()
    assert row is not None
    return f"{TOKEN_PREFIX}{row[0]}.{secret}"


async def revoke_credential(conn: psycopg.AsyncConnection[tuple[object, ...]],
                            name: str) -> bool:
    cursor = await conn.execute("UPDATE machine_credentials SET revoked_at = now()"
                                " WHERE name = %s AND revoked_at IS NULL", (name,))
    return cursor.rowcount == 1


async def list_credentials(conn: psycopg.AsyncConnection[tuple[object, ...]]
                           ) -> list[CredentialInfo]:
    rows = await (await conn.execute("SELECT name, scopes, created_at, revoked_at"
                                     " FROM machine_credentials ORDER BY name")).fetchall()
    return [CredentialInfo(str(r[0]), tuple(r[1]), r[2], r[3]) for r in rows]  # type: ignore[arg-type]


async def _main(args: argparse.Namespace) -> int:
    settings = Settings.from_env(redis_nodes="unused")
    settings.require("database_url")
    async with await psycopg.AsyncConnection.connect(libpq_url(settings.database_url),
                                                     autocommit=True) as conn:
        if args.command == "create":
            print(await create_credential(conn, args.name, args.scopes))
            print("(shown once: store it in a secret now)", file=sys.stderr)
        elif args.command == "revoke":
            if not await revoke_credential(conn, args.name):
                print(f"no active credential named {args.name}", file=sys.stderr)
                return 1
        else:
            for info in await list_credentials(conn):
                state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
                print(f"{info.name:<32} {','.join(info.scopes):<40} {state}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth.machine_credentials",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="a new credential; prints its token once")
    create.add_argument("name")
    create.add_argument("scopes", nargs="+", choices=SCOPES)
    revoke = commands.add_parser("revoke", help="revoke a credential by name")
    revoke.add_argument("name")
    commands.add_parser("list", help="every credential and its scopes")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
