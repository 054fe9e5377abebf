"""A local PostgreSQL cluster for the scale-out stack: ``python -m infra.stack.postgres start|stop|url --dir DIR``.

``start`` creates the cluster in ``DIR`` on first use (``initdb``), starts it listening on 127.0.0.1 only (no
Unix socket) on ``--port``, the previous port or a free one, creates the databases ``dagster`` and ``mlflow``
and prints the URL of ``--db`` (default ``postgres``) in SQLAlchemy form, ``postgresql+psycopg2://``, which
Dagster and MLflow take (``--libpq``: the plain ``postgresql://`` form); ``url`` prints it for a started
cluster, ``stop`` stops the server. The folder is the cluster: keep it for a persistent one, delete it after
``stop`` for a throwaway one (``--throwaway`` also turns durability off: fsync, synchronous commit, full
page writes).

Layout of ``DIR``: ``data/`` (the cluster), ``password`` (the superuser's generated password, mode 0600: the
only copy besides the cluster's own hash), ``port``, ``postgres.log``. Connections need that password
(``scram-sha-256``); URLs carry it, so hand them on through the environment (``DAGSTER_PG_URL``,
``MLFLOW_BACKEND_STORE_URI``), never through a file the project writes.

``initdb`` refuses to run as root: as root, the folder is given to the ``postgres`` user and ``initdb`` /
``pg_ctl`` run as that user (``runuser``), so ``DIR`` must be reachable by it (not under a private folder).
Binaries: ``$PG_BIN``, else ``/usr/lib/postgresql/<newest>/bin``, else ``PATH`` (``make postgres`` installs the
Debian package ``postgresql`` when they are missing).
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fgclip_core.redact import redact_uri

DATABASES = ("dagster", "mlflow")
SUPERUSER = "postgres"
HOST = "127.0.0.1"
RUN_AS = "postgres"  # the system user that owns the cluster when we are root
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed; dagster-postgres brings psycopg2.
DRIVER = "psycopg2"


class PostgresError(RuntimeError):
    """A cluster that cannot be created, started or reached; the message names the folder and the reason."""


def pg_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` live, or None when PostgreSQL's server binaries are not installed."""
    env = os.environ.get("PG_BIN", "").strip()
    candidates = [Path(env)] if env else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates += [p / "bin" for p in versions]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres binds: TIME_WAIT does not count
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Cluster:
    """A cluster folder (see the module docstring for its layout)."""

    dir: Path

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "postgres.log"

    def port(self) -> int:
        try:
            return int((self.dir / "port").read_text().strip())
        except (OSError, ValueError):
            raise PostgresError(f"{self.dir}: no port recorded (start the cluster first)") from None

    def password(self) -> str:
        try:
            return (self.dir / "password").read_text().strip()
        except OSError:
            raise PostgresError(f"{self.dir}: no cluster here (python -m infra.stack.postgres start)") from None

    def url(self, db: str = SUPERUSER, driver: str | None = DRIVER) -> str:
        """SQLAlchemy URL (Dagster, MLflow) with ``driver``; ``driver=None``: the plain libpq form (psycopg2)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{SUPERUSER}:{self.password()}@{HOST}:{self.port()}/{db}"

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file() and _ctl(self, "status", check=False).returncode == 0


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", RUN_AS, "--", *cmd]


def _run(cluster: Cluster, cmd: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(_as_owner(cmd), cwd=cluster.dir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PostgresError(f"{cluster.dir}: {Path(cmd[0]).name} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


def _bin(name: str) -> str:
    found = pg_bin_dir()
    if found is None:
        raise PostgresError("PostgreSQL server binaries not found (set PG_BIN, or `make postgres` installs them)")
    return str(found / name)


def _ctl(cluster: Cluster, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run(cluster, [_bin("pg_ctl"), "-D", str(cluster.data), *args], check=check, timeout=timeout)


def _give_to_owner(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS)
        os.chown(path, user.pw_uid, user.pw_gid)


def init_cluster(cluster: Cluster, *, throwaway: bool = False) -> None:
    """``initdb`` with a generated superuser password, listening on loopback TCP only."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresError(f"running as root needs a '{RUN_AS}' user to own the cluster (initdb refuses root)") \
                from None
    cluster.dir.mkdir(parents=True, exist_ok=True)
    if cluster.data.exists() and any(cluster.data.iterdir()):
        raise PostgresError(f"{cluster.data}: not empty and not a cluster; remove it or pick another --dir")
    _give_to_owner(cluster.dir)
    if os.geteuid() == 0 and subprocess.run(["runuser", "-u", RUN_AS, "--", "test", "-w", str(cluster.dir)],
                                            capture_output=True).returncode != 0:
        raise PostgresError(f"{cluster.dir}: the '{RUN_AS}' user cannot reach this folder (a parent is private); "
                            "pick one it can reach, e.g. under /tmp or a shared folder")
    pw_file = cluster.dir / "password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    _give_to_owner(pw_file)
    args = [_bin("initdb"), "-D", str(cluster.data), "-U", SUPERUSER, f"--pwfile={pw_file}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]
    if throwaway:
        args.append("--no-sync")
    _run(cluster, args, timeout=120)
    settings = [f"listen_addresses = '{HOST}'", "unix_socket_directories = ''"]
    if throwaway:
        settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    with (cluster.data / "postgresql.conf").open("a") as f:
        f.write("\n# infra/stack/postgres.py\n" + "\n".join(settings) + "\n")


def _choose_port(cluster: Cluster, port: int | None) -> int:
    if port is not None:
        if not _port_free(port):
            raise PostgresError(f"port {port} on {HOST} is taken; pick another --port")
        return port
    try:
        previous = cluster.port()
    except PostgresError:
        previous = None
    return previous if previous is not None and _port_free(previous) else free_port()


def ensure_databases(cluster: Cluster, names: tuple[str, ...] = DATABASES, timeout_s: float = 15) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = psycopg2.connect(cluster.url(driver=None), connect_timeout=3)
            break
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise PostgresError(f"{cluster.dir}: server not answering on {HOST}:{cluster.port()}: "
                                    f"{str(e).strip().splitlines()[0]}") from None
            time.sleep(0.2)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            have = {row[0] for row in cur.fetchall()}
            for name in names:
                if name not in have:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def start(directory: str | Path, *, port: int | None = None, throwaway: bool = False) -> Cluster:
    """Create (first time), start and prepare the cluster in ``directory``; returns it (``.url(db)``)."""
    cluster = Cluster(Path(directory).resolve())
    if not cluster.initialised():
        init_cluster(cluster, throwaway=throwaway)
    if cluster.running():
        if port is not None and port != cluster.port():
            raise PostgresError(f"{cluster.dir}: already running on port {cluster.port()}; stop it to change --port")
    else:
        chosen = _choose_port(cluster, port)
        if not cluster.log.exists():
            cluster.log.touch()
            _give_to_owner(cluster.log)
        _ctl(cluster, "-l", str(cluster.log), "-w", "-t", "60", "-o", f"-p {chosen}", "start", timeout=90)
        (cluster.dir / "port").write_text(f"{chosen}\n")
    ensure_databases(cluster)
    return cluster


def stop(directory: str | Path) -> bool:
    """Stop the server of ``directory`` (fast shutdown); False when it was not running."""
    cluster = Cluster(Path(directory).resolve())
    if not cluster.initialised() or not cluster.running():
        return False
    _ctl(cluster, "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.stack.postgres", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["start", "stop", "url"])
    p.add_argument("--dir", required=True, help="the cluster folder (created on first start)")
    p.add_argument("--port", type=int, help="start: port on 127.0.0.1 (default: the previous one if free, else a free one)")
    p.add_argument("--db", default=SUPERUSER, help="url/start: which database's URL to print (dagster, mlflow, postgres)")
    p.add_argument("--libpq", action="store_true", help="print postgresql:// (psql, psycopg2) instead of "
                   f"postgresql+{DRIVER}:// (SQLAlchemy: Dagster, MLflow)")
    p.add_argument("--throwaway", action="store_true", help="start: no durability (for tests; delete DIR after stop)")
    args = p.parse_args(argv)
    try:
        if args.command == "start":
            cluster = start(args.dir, port=args.port, throwaway=args.throwaway)
            # masked: a start goes to terminals and logs; `url` prints the full one for $(...) capture
            print(redact_uri(cluster.url(args.db, driver=None if args.libpq else DRIVER)))
        elif args.command == "stop":
            print(f"{Path(args.dir).resolve()}: " + ("stopped" if stop(args.dir) else "not running"), file=sys.stderr)
        else:
            print(Cluster(Path(args.dir).resolve()).url(args.db, driver=None if args.libpq else DRIVER))
    except (PostgresError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
