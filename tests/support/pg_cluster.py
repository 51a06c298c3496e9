"""A throwaway PostgreSQL cluster that a test can stop and start under the shop.

It is made with the server's own programs (Debian's ``/usr/lib/postgresql/<version>/bin``,
else ``initdb`` on the ``PATH``) in a temporary directory, listens on 127.0.0.1 only, on a
free port that it keeps across restarts, trusts every local connection as ``postgres``, and
never waits for the disk (``fsync = off``: a stop, even an immediate one, loses nothing the
operating system was given). The server refuses to run as root, so under root every server
program runs as the ``postgres`` OS user, which owns the directory.

    with throwaway_cluster() as cluster:
        cluster.create_database("shop")
        url = cluster.url("shop")
        cluster.stop("immediate")  # as if the server crashed
        cluster.start()  # crash recovery, same port, same data

Where the programs (or, under root, the ``postgres`` user) are missing, the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import pytest

from tests.support.shop_process import free_port

StopMode = Literal["smart", "fast", "immediate"]
OWNER = "postgres"  # the OS user the server runs as under root, and the superuser's name
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP only: nothing is left in /var/run/postgresql
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "50",
}


def server_programs() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``psql``: the newest Debian version,
    else wherever ``initdb`` is on the ``PATH``; ``None`` if there is none."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_root() -> bool:
    return os.geteuid() == 0


class PostgresCluster:
    """One cluster: its directory holds ``data/`` and the server's log, ``postgres.log``."""

    def __init__(self, directory: Path, programs: Path, port: int) -> None:
        self.directory = directory
        self.programs = programs
        self.port = port
        self.data = directory / "data"
        self.log = directory / "postgres.log"

    @classmethod
    def create(cls, programs: Path, **settings: str) -> PostgresCluster:
        """``initdb`` in a new temporary directory, configured, not started. ``settings``
        are more lines of ``postgresql.conf`` (values as written there, quoted if text)."""
        directory = Path(tempfile.mkdtemp(prefix="elysium-pg-"))
        if _as_root():
            owner = pwd.getpwnam(OWNER)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        cluster = cls(directory, programs, free_port())
        try:
            cluster.run(
                "initdb",
                "--pgdata",
                str(cluster.data),
                "--username",
                OWNER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
            cluster.configure({**SETTINGS, "port": str(cluster.port), **settings})
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def run(self, program: str, *args: str, timeout: float = 120) -> str:
        """Run one of the server's programs as the cluster's owner; its output. A failure
        raises with what the program said."""
        command = [str(self.programs / program), *args]
        if _as_root():
            command = ["runuser", "-u", OWNER, "--", *command]
        finished = subprocess.run(  # noqa: S603
            command,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if finished.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({finished.returncode}):\n{finished.stdout}{finished.stderr}"
            )
        return finished.stdout

    def configure(self, settings: Mapping[str, str]) -> None:
        """Append settings to ``postgresql.conf`` (the last line of a name wins); they apply
        from the next start."""
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(lines)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> PostgresCluster:
        """Start the server and wait until it accepts connections (after any crash
        recovery)."""
        self.run("pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.log), "-w")
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """``fast`` ends every session (rolling back what they had begun) and shuts down
        cleanly; ``immediate`` kills the server as a crash would, and the next start
        recovers from the WAL."""
        self.run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", mode, "-w")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with ``psql`` (stopping at the first error); unaligned rows, ``|`` between
        columns, no headers."""
        finished = subprocess.run(  # noqa: S603
            [
                str(self.programs / "psql"),
                "--no-psqlrc",
                "--no-align",
                "--tuples-only",
                "--set",
                "ON_ERROR_STOP=1",
                "--dbname",
                self.url(database),
                "--command",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if finished.returncode != 0:
            raise RuntimeError(f"psql failed: {finished.stderr}")
        return finished.stdout

    def create_database(self, name: str) -> str:
        """A new database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server if it runs (immediately: nothing in it is kept) and remove the
        directory."""
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster(**settings: str) -> Iterator[PostgresCluster]:
    """A started cluster, destroyed afterwards; skips the test where it can't be made."""
    programs = server_programs()
    if programs is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    if _as_root():
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            pytest.skip(f"running as root, and there is no {OWNER!r} user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and runuser is missing to run PostgreSQL as postgres")
    cluster = PostgresCluster.create(programs, **settings)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()
