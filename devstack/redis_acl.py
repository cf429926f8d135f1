"""The Redis ACL users: one per process kind, each with the commands, keys and channels it needs.

The one home of the rules: the local cluster (devstack/redis_cluster.py, `make run` and the test
harness) writes them into its ACL file with fresh passwords, and `main` (run by
deploy/compose/make-redis-users.sh) writes the same file with the passwords for docker compose
and Kubernetes (docs/operations.md,
"Redis users and certificates"). `tests/integration/test_redis_acl.py` holds each user to its
job and checks that it is refused (NOPERM) outside it.

Why the rules look as they do:
- Lua scripts are checked twice: EVALSHA's declared keys against the key patterns (with read
  and write rights, since Redis cannot know what a script does), then every command the script
  runs, with its keys and channels. So a user holds the commands its scripts run.
- Every service runs the request gate (shared/request_gate.py): it reads a session entry, slides
  its TTL and writes it back once PostgreSQL confirmed it, counts the per-user window and reads
  the read-your-writes floors. Hence read-write on `session:*` for each of them. Entries are
  HMAC-signed with a key Redis never sees, so a written entry makes no session by itself.
- The pipelined client reads the layout (CLUSTER SLOTS), follows ASK, and probes a suspect node
  with EXISTS of a `probe:{N}` key (read only).
- Balance-changed events: SPUBLISH needs the channel (`&events:balance:*`), and the publish script
  also names the channel among its keys; only the transfer service and the relay may publish, only
  the account service subscribes.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# What every user of the pipelined client needs: connect, learn the layout, follow redirects,
# probe suspect nodes, run scripts.
_CLIENT = ("+ping +hello +auth +cluster|slots +cluster|shards +asking +exists %R~probe:*"
           " +evalsha +eval +script|load +time")
# The request gate's scripts (shared/request_gate.py) on the user's slot; `ratelimit:{U}:60s`
# and `ratelimit:{ip:A}:60s`. (Login limits are counted in PostgreSQL, not here.)
_GATE = ("+get +set +expire +pexpire +zremrangebyscore +zcard +zadd +zrange +hget"
         " ~session:* ~ratelimit:{*}:60s ~ryw:*")
# The publish script (services/transfer/adapters/event_publisher.py).
_PUBLISH = ("+incr +incrby +spublish +zremrangebyscore +zscore +zadd"
            " ~events:seq:* ~events:published:* ~events:balance:* &events:balance:*")

SERVICE_RULES: dict[str, str] = {
    # Cache entries (versioned compare-and-set scripts, leases, DEL), the event subscription
    # (redis-py's cluster client reads COMMAND to route), the gate.
    "account": (f"{_CLIENT} {_GATE} +del +command +ssubscribe +sunsubscribe"
                " ~account:* ~transactions:* ~api:* &events:balance:*"),
    # The gate, raising the read-your-writes floors (HSET), publishing events.
    "transfer": f"{_CLIENT} {_GATE} +hset {_PUBLISH}",
    # The outbox relay publishes and does nothing else.
    "relay": f"{_CLIENT} {_PUBLISH}",
    # The gate, session entries and tombstones (services/auth/adapters/session_store.py).
    "auth": f"{_CLIENT} {_GATE}",
}
# Replication (masteruser), `redis-cli --cluster`, operators and the tests' direct looks.
ADMIN_USER = "admin"
ADMIN_RULES = "~* &* +@all"
# Prometheus' redis_exporter: server statistics, no keys.
EXPORTER_USER = "exporter"
EXPORTER_RULES = ("+ping +hello +auth +info +config|get +cluster|info +client|list +client|setname"
                  " +slowlog|get +slowlog|len +latency|latest +select")

ALL_RULES: dict[str, str] = {**SERVICE_RULES, ADMIN_USER: ADMIN_RULES,
                             EXPORTER_USER: EXPORTER_RULES}

# The process kinds of devstack.components that talk to Redis, and their users. The retention
# jobs use PostgreSQL only, so they get none.
COMPONENT_USERS: dict[str, str] = {
    "account": "account", "transfer": "transfer", "auth": "auth", "outbox-relay": "relay",
}


@dataclass(frozen=True)
class RedisUser:
    name: str
    password: str = field(repr=False)

    def settings(self) -> dict[str, str]:
        """The Settings fields (redis_username, redis_password) of a process using this user."""
        return {"redis_username": self.name, "redis_password": self.password}

    def env(self) -> dict[str, str]:
        return {"BANK_REDIS_USERNAME": self.name, "BANK_REDIS_PASSWORD": self.password}


def compose_password_variable(user: str) -> str:
    """The .env variable docker-compose.yml takes a user's password from."""
    return f"REDIS_{user.upper()}_PASSWORD"


def new_users() -> dict[str, RedisUser]:
    """Every user with a fresh random password (256 bits, hex: no ACL syntax in it)."""
    return {name: RedisUser(name, secrets.token_hex(32)) for name in ALL_RULES}


def acl_file(users: Mapping[str, RedisUser]) -> str:
    """The ACL file (redis.conf `aclfile`): the default user off, then every user."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for name, rules in ALL_RULES.items():
        lines.append(f"user {name} on >{users[name].password} resetchannels -@all {rules}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/compose/make-redis-users.sh",
        description="Write users.acl, a password file per user (redis-USER.password) and"
                    " compose.env (REDIS_USER_PASSWORD=... lines for docker compose's .env),"
                    " mode 0600, into a folder: the Redis users of docker compose and"
                    " Kubernetes, with new passwords.")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    users = new_users()
    _write_secret(folder / "users.acl", acl_file(users))
    for user in users.values():
        _write_secret(folder / f"redis-{user.name}.password", user.password)
    _write_secret(folder / "compose.env", "".join(
        f"{compose_password_variable(user.name)}={user.password}\n" for user in users.values()))
    print(f"wrote {folder}/users.acl, redis-<user>.password and compose.env for"
          f" {', '.join(users)}")
    return 0


def _write_secret(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
