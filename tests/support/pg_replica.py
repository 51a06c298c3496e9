"""A throwaway PostgreSQL primary with a streaming replica, for the read-replica tests.

Built on ``tests.support.pg_cluster``: the primary is a throwaway cluster that accepts
replication connections from 127.0.0.1; the replica is ``pg_basebackup -R`` of it, started
as a hot standby on its own free port (under root, both run as the ``postgres`` OS user).

    with primary_and_replica() as (primary, replica):
        replica.pause_replay()  # the replica keeps what it has until resume_replay()
        replica.catch_up(primary)  # wait until it has replayed all the primary wrote
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg_cluster import OWNER, PostgresCluster, throwaway_cluster
from tests.support.shop_process import free_port

# How long a test waits for the replica to replay what the primary wrote.
CATCH_UP_SECONDS = 20


class Replica(PostgresCluster):
    """A hot standby of a ``PostgresCluster``, made with ``pg_basebackup -R``."""

    @classmethod
    def of(cls, primary: PostgresCluster) -> Replica:
        """Copy the running ``primary`` into a new temporary directory; not started."""
        if shutil.which(str(primary.programs / "pg_basebackup")) is None:
            pytest.skip("pg_basebackup is not installed")
        directory = Path(tempfile.mkdtemp(prefix="elysium-pg-replica-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OWNER)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        replica = cls(directory, primary.programs, free_port())
        try:
            replica.run(
                "pg_basebackup",
                "--pgdata",
                str(replica.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(primary.port),
                "--username",
                OWNER,
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
                "--no-sync",
            )
            replica.configure({"port": str(replica.port), "hot_standby": "on"})
        except BaseException:
            replica.destroy()
            raise
        return replica

    def query(self, sql: str) -> str:
        return self.psql(sql).strip()

    def pause_replay(self) -> None:
        """Stop applying the primary's changes (they are still received), and wait until
        replay has really stopped."""
        self.psql("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while self.query("SELECT pg_get_wal_replay_pause_state()") != "paused":
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not pause its replay")
            time.sleep(0.05)

    def resume_replay(self) -> None:
        self.psql("SELECT pg_wal_replay_resume()")

    def catch_up(self, primary: PostgresCluster) -> None:
        """Wait until this replica has replayed everything the primary has written so far."""
        target = primary.psql("SELECT pg_current_wal_lsn()").strip()
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while self.query(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") != "t":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica did not replay up to {target}")
            time.sleep(0.05)


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[PostgresCluster, Replica]]:
    """A started primary and a started replica streaming from it; both destroyed afterwards.
    Skips the test where the server's programs are missing."""
    with throwaway_cluster(wal_level="replica", max_wal_senders="4") as primary:
        # initdb lets 127.0.0.1 replicate already; say so in case a packager's template doesn't.
        with (primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.psql("SELECT pg_reload_conf()")
        replica = Replica.of(primary)
        try:
            yield primary, replica.start()
        finally:
            replica.destroy()
