"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temp dir, ``pg_ctl`` on a free port.

The server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``;
``.ci/run`` installs it). PostgreSQL refuses to run as root, so when the tests run as root the
cluster is created and run as the ``postgres`` OS user, in a temp dir that user owns. It listens
on 127.0.0.1 only (port picked free), keeps its unix sockets in its own dir, and runs with
``fsync=off``: the tests stop the *server* (``immediate`` included), never the machine, so what
the OS has is never lost, and commits stay synchronous (an acknowledged commit survives an
immediate stop).

Every connection needs a password (scram-sha-256), so URLs in tests carry one, as a desk's
would: that is what the password-masking tests look for.

    cluster = PgCluster.find_and_start()     # or None (then say why: PgCluster.missing_reason())
    url = cluster.create_database("t1")      # postgresql://quant:<password>@127.0.0.1:<port>/t1
    cluster.restart(mode="immediate")
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "quant"
SERVER_OPTIONS = ("-c fsync=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB "
                  "-c log_min_messages=warning")


def server_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, else a ``initdb`` on PATH."""
    candidates = sorted((Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "initdb").is_file()),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing_reason() -> str | None:
    """Why no cluster can be started here (None when one can)."""
    if server_bin_dir() is None:
        return (f"PostgreSQL server binaries not found (no {BIN_GLOB}/initdb, no initdb on PATH); "
                "install Debian's postgresql package (.ci/run does)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' OS user to run the server as"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One temporary cluster (see the module docstring). Not thread-safe; one per test session."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="quant-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sockets"
        self.log_file = self.root / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.socket_dir.mkdir()
        if self._user is not None:
            os.chown(self.socket_dir, pwd.getpwnam(self._user).pw_uid, pwd.getpwnam(self._user).pw_gid)
        self.databases = 0

    @classmethod
    def find_and_start(cls) -> PgCluster:
        """Initialise and start a cluster; raises RuntimeError (with the reason) when that is impossible."""
        reason, bin_dir = missing_reason(), server_bin_dir()
        if reason is not None or bin_dir is None:  # no reason means the binaries were found
            raise RuntimeError(reason or "PostgreSQL server binaries not found")
        cluster = cls(bin_dir)
        try:
            cluster._initdb()
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # ------------------------------------------------------------------ server control
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], user=self._user, group=self._user,
                                extra_groups=[] if self._user else None, cwd=self.root, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()} {log}")
        return result

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
        finally:
            pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 {SERVER_OPTIONS}"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-o", options)

    def stop(self, mode: str = "fast", *, remove: bool = True) -> None:
        """Stop the server (``mode``: smart, fast or immediate); ``remove`` deletes the cluster too."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data_dir), "-m", mode)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate``: like a crash, no checkpoint) and start again on the same port."""
        self.stop(mode, remove=False)
        self.start()

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    # ------------------------------------------------------------------ databases
    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL (with the password)."""
        import psycopg  # dev-only dependency of the kit; the application imports it in storage/ only

        self.databases += 1
        name = f"{prefix}_{self.databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, database: str, statement: str) -> list[tuple]:
        """Run one statement as the superuser in ``database``; its rows (empty for a command)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []
