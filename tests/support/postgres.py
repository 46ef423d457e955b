"""A real PostgreSQL server from Debian's packages, started in a temporary folder for the tests.

The server starts as the ``postgres`` user when the tests run as root (initdb refuses root), on a
free loopback port with password authentication; ``dagster_env`` gives the variables
deploy/dagster.yaml's storage section reads.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from podinsight_dagster.processes import free_port


def _pg_bin() -> Path:
    """TEST_PG_BIN, or the newest server Debian's postgresql package installed (/usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("TEST_PG_BIN"):
        return Path(os.environ["TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if
                   p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PG_USER, PG_PASSWORD, PG_DB = "dagster", "s3cret-pw", "dagster"


def pg_binaries_missing() -> str | None:
    missing = [n for n in ("initdb", "pg_ctl", "postgres", "psql") if not (PG_BIN / n).is_file()]
    if missing:
        return (f"PostgreSQL server binaries not found in {PG_BIN} ({', '.join(missing)}): "
                "install Debian's postgresql (make test does) or set TEST_PG_BIN")
    return None


class PostgresServer:
    """initdb + pg_ctl in a temporary folder; TCP on 127.0.0.1 (scram passwords), socket in the folder."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="podinsight-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run initdb as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        pwfile = self.dir / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([PG_BIN / "initdb", "-D", self.data, "-U", PG_USER, "--pwfile", pwfile, "-E", "UTF8",
                   "--auth-local=trust", "--auth-host=scram-sha-256"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-o", opts, "-w", "-t", "60",
                   "start"])
        self.started = True
        # the Dagster database, created over the socket (trust) as the superuser initdb made
        self.psql("postgres", f"CREATE DATABASE {PG_DB}")

    def _run(self, cmd) -> None:
        out = subprocess.run(self.as_user + [str(c) for c in cmd], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd[0]} failed: {out.stdout}{out.stderr}{self.log()}"

    def psql(self, db: str, sql: str) -> str:
        out = subprocess.run([str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", PG_USER, "-d", db,
                              "-At", "-c", sql], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def log(self) -> str:
        log = self.dir / "server.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def dagster_env(server: PostgresServer) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml's storage names, for ``server``."""
    return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(server.port), "DAGSTER_PG_DB": PG_DB,
            "DAGSTER_PG_USERNAME": PG_USER, "DAGSTER_PG_PASSWORD": PG_PASSWORD}
