"""A throwaway PostgreSQL cluster for the benchmarks (Debian's binaries, run as the postgres user)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.botproc import free_port


def available() -> bool:
    """Debian's PostgreSQL binaries, and root to run them as the postgres user (initdb refuses root)."""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) and os.geteuid() == 0 and shutil.which("runuser") is not None


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway cluster on a free loopback port (Debian's binaries; initdb refuses to run as root)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins or shutil.which("runuser") is None:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
    pgbin = bins[-1]
    data = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, f"{pgbin}/initdb", "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_pg, f"{pgbin}/pg_ctl", "-D", str(data / "db"), "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=on", "-w", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_pg, f"{pgbin}/pg_ctl", "-D", str(data / "db"), "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)
