"""A throwaway (or, with ``durable=True``, a reusable) local PostgreSQL server.

We run ``initdb`` and then ``postgres`` in the foreground ourselves rather than via
``pg_ctl``, so the postmaster pid is our child and can always be stopped by pid.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from devstack.db_roles import (
    MIGRATOR,
    MIGRATOR_PASSWORD_ENV,
    MONITOR,
    MONITOR_PASSWORD_ENV,
    PROVISION_SQL,
    SERVICE_LOGINS,
    login_of,
)
from devstack.ports import HOST, free_ports
from devstack.processes import DevstackError, ManagedProcess, log_tail

__all__ = ["LocalPostgres", "find_pg_bindir"]

_DEPS_HINT = "run scripts/ensure-system-deps.sh (installs postgresql, postgresql-contrib)"
# Unix socket paths are limited to 107 bytes (sun_path) on Linux.
_MAX_SOCKET_PATH = 100


def _has_server_binaries(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); numeric so that 10 sorts above 9.6.
    match = re.search(r"/postgresql/([\d.]+)/bin$", path)
    return tuple(int(x) for x in match.group(1).split(".")) if match else (0,)


def find_pg_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres``.

    Order: $DEVSTACK_PG_BINDIR, the highest Debian-style /usr/lib/postgresql/*/bin,
    ``pg_config --bindir``, then $PATH. The Debian glob comes before pg_config
    because /usr/bin/pg_config may come from a client-only libpq-dev of another
    major version whose bindir has no server binaries.
    """
    env = os.environ.get("DEVSTACK_PG_BINDIR")
    if env:
        if _has_server_binaries(Path(env)):
            return Path(env)
        raise DevstackError(f"DEVSTACK_PG_BINDIR={env} has no initdb/postgres")
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server_binaries(Path(candidate)):
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)
    initdb = shutil.which("initdb")
    if initdb and _has_server_binaries(Path(initdb).parent):
        return Path(initdb).parent
    raise DevstackError(f"PostgreSQL server binaries (initdb, postgres) not found; {_DEPS_HINT}")


class LocalPostgres:
    """PostgreSQL on 127.0.0.1:<free port> with its data under ``base_dir``.

    Layout: ``base_dir/data`` (PGDATA), ``base_dir/run`` (unix socket),
    ``base_dir/postgres.log``, ``base_dir/initdb.log``. An existing initialised
    ``data`` dir is reused (``make run`` keeps its data between runs).

    ``durable=False`` turns off fsync/full_page_writes/synchronous_commit: fine
    for tests and throwaway benchmarks, never for data you want to keep.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        durable: bool = True,
        dbname: str = "cachebank",
        user: str = "postgres",
        port: int | None = None,
        max_connections: int = 300,
        shared_buffers: str = "256MB",
        settings: Mapping[str, str] | None = None,
        bindir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.durable = durable
        self.dbname = dbname
        self.user = user  # database superuser role (initdb -U)
        self._port = port
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.extra_settings = dict(settings or {})
        self._bindir = Path(bindir) if bindir is not None else None
        self.start_timeout = start_timeout
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "run"
        self.log_path = self.base_dir / "postgres.log"
        self._proc: ManagedProcess | None = None
        # Passwords of the migrator and the service logins, new on every start()
        # (provision_roles); over TCP only the superuser is trusted without one.
        self.role_passwords: dict[str, str] = {}
        # OS account the server runs as: initdb/postgres refuse to run as root.
        self._os_user: str | None = "postgres" if os.geteuid() == 0 else None

    # -- addresses ---------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise DevstackError("LocalPostgres has no port until start() is called")
        return self._port

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{dbname}"

    @property
    def dsn(self) -> str:
        """libpq URL for psycopg 3, e.g. ``postgresql://postgres@127.0.0.1:5999/cachebank``."""
        return self.dsn_for(self.dbname)

    def dsn_as(self, login: str) -> str:
        """URL of this database as one of the provisioned logins, password included."""
        password = self.role_passwords.get(login)
        if password is None:
            raise DevstackError(f"no provisioned PostgreSQL login {login!r}")
        return f"postgresql://{login}:{password}@{HOST}:{self.port}/{self.dbname}"

    @property
    def owner_dsn(self) -> str:
        """The migrator: owns the schema, runs the migrations and seeds data."""
        return self.dsn_as(MIGRATOR)

    def service_dsn(self, component: str) -> str:
        """What a component's processes connect as (devstack.db_roles)."""
        return self.dsn_as(login_of(component).login)

    @property
    def admin_dsn(self) -> str:
        """URL of the always-present ``postgres`` maintenance database."""
        return self.dsn_for("postgres")

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{self.dbname}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> LocalPostgres:
        """initdb (first time only), start the server, create db + extension."""
        if self.running:
            return self
        if self._port is None:
            self._port = free_ports(1)[0]
        sock = self.socket_dir / f".s.PGSQL.{self._port}"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            raise DevstackError(f"base_dir too long for a unix socket path: {sock}")
        try:
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self.start_server()
            self._create_database()
            self.provision_roles()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server; idempotent. The data dir is left in place."""
        self.stop_server(timeout)

    def stop_server(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT: abort transactions, checkpoint), SIGKILL on timeout.

        The data dir and port are kept, so ``start_server()`` brings back the same
        server at the same address (used by the health-check tests).
        """
        if self._proc is not None:
            self._proc.stop(timeout, sig=signal.SIGINT)

    def start_server(self) -> None:
        """(Re)start the postmaster on the same data dir and port; wait until ready."""
        if self.running:
            return
        bindir = self.bindir
        argv = [
            str(bindir / "postgres"),
            "-D", str(self.data_dir),
            "-h", HOST,
            "-p", str(self.port),
            "-k", str(self.socket_dir),
        ]  # fmt: skip
        for key, value in self._server_settings().items():
            argv += ["-c", f"{key}={value}"]
        self._proc = ManagedProcess(
            argv,
            log_path=self.log_path,
            name="postgres",
            cwd=self.base_dir,
            env=self._env(),
            user=self._os_user,
        )
        self._proc.start()
        self._wait_ready()

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_pg_bindir()
        return self._bindir

    def _server_settings(self) -> dict[str, str]:
        settings = {
            "max_connections": str(self.max_connections),
            "shared_buffers": self.shared_buffers,
            "shared_preload_libraries": "pg_stat_statements",
            # pg_stat_wal then says how long the commits' WAL flushes take (the bench reports
            # it: a hot account's transfers are serial up to the end of each flush).
            "track_wal_io_timing": "on",
            "listen_addresses": HOST,
            # Everything goes to stderr, i.e. our log file.
            "logging_collector": "off",
        }
        if not self.durable:
            # Crash safety is pointless for a test database thrown away afterwards,
            # and these make DDL/commit-heavy tests several times faster.
            settings.update(fsync="off", full_page_writes="off", synchronous_commit="off")
        settings.update(self.extra_settings)
        return settings

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # A deterministic locale for messages; the cluster itself is created as C/UTF8.
        env["LC_ALL"] = "C"
        return env

    def _ids(self) -> tuple[int, int] | None:
        if self._os_user is None:
            return None
        try:
            pw = pwd.getpwnam(self._os_user)
        except KeyError:
            raise DevstackError(
                f"running as root but there is no '{self._os_user}' system user; {_DEPS_HINT}"
            ) from None
        return pw.pw_uid, pw.pw_gid

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ids = self._ids()
        for d in (self.data_dir, self.socket_dir):
            d.mkdir(mode=0o700, exist_ok=True)
            if ids is not None:
                os.chown(d, *ids)
            # initdb/postgres insist on 0700 (or 0750) for PGDATA.
            os.chmod(d, 0o700)
        if ids is not None:
            self._make_traversable(ids[0])

    def _make_traversable(self, uid: int) -> None:
        # The postgres user must be able to reach base_dir. Temp dirs (pytest's
        # /tmp/pytest-of-root, tempfile.mkdtemp) are 0700 root: add only o+x
        # ("search", not "list") on each ancestor that lacks it.
        for d in (self.base_dir, *self.base_dir.parents):
            st = d.stat()
            if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
                os.chmod(d, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)

    def _initdb(self) -> None:
        argv = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.user,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        initdb_log = self.base_dir / "initdb.log"
        with open(initdb_log, "wb") as log:
            try:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    env=self._env(),
                    user=self._os_user,
                    group=self._os_user,
                    extra_groups=[] if self._os_user is not None else None,
                    timeout=120,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0:
            raise DevstackError(
                f"initdb failed (code {rc}); log {initdb_log}:\n{log_tail(initdb_log)}"
            )
        # Trust, but only over the unix socket and 127.0.0.1 (no ::1, no LAN).
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by devstack: 127.0.0.1 and the local socket only; over TCP only the\n"
            "# superuser (the harness' own tooling) is trusted, every bank login needs its\n"
            "# password (provision-roles.sql)\n"
            "local all all trust\n"
            f"host all {self.user} 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "local replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )
        ids = self._ids()
        if ids is not None:
            os.chown(hba, *ids)

    def provision_roles(self) -> None:
        """The migrator and one login per component, with fresh random passwords, by the same
        script compose runs (deploy/k8s/base/postgres/provision-roles.sql), as the superuser."""
        passwords = {MIGRATOR: secrets.token_hex(16), MONITOR: secrets.token_hex(16)}
        env = {**self._env(), "PGHOST": HOST, "PGPORT": str(self.port), "PGUSER": self.user,
               "PGDATABASE": self.dbname, MIGRATOR_PASSWORD_ENV: passwords[MIGRATOR],
               MONITOR_PASSWORD_ENV: passwords[MONITOR]}
        for service in SERVICE_LOGINS:
            passwords[service.login] = env[service.password_env] = secrets.token_hex(16)
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", f"dbname={self.dbname}",
             "-f", str(PROVISION_SQL)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
            check=False)
        if result.returncode != 0:
            raise DevstackError(f"provisioning the PostgreSQL roles failed:\n{result.stderr}")
        self.role_passwords = passwords

    def _wait_ready(self) -> None:
        # A TCP connect is not enough: during recovery the server accepts the
        # connection and then answers "the database system is starting up".
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = ""
        while True:
            if not self._proc.alive:
                raise DevstackError(self._proc.describe_failure("postgres exited during startup"))
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                raise DevstackError(
                    self._proc.describe_failure(
                        f"postgres not ready after {self.start_timeout:.0f}s ({last_error})"
                    )
                )
            time.sleep(0.05)

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
