"""``manage.py supervise_worker``: run ``manage.py procrastinate worker`` and start it again whenever it exits.

Why: the worker exits for good when PostgreSQL goes away (seen with a 10 s stop), and documents uploaded after
that waited forever. ``make run`` starts the worker through this command; in production a process manager
(systemd ``Restart=always``, Kubernetes) does the same job. Restarts back off (up to 30 s) while the worker keeps
dying at once, so a database that stays down is not hammered; SIGTERM/SIGINT stop the worker and the supervisor.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand

MAX_DELAY_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0  # a worker that ran this long before exiting restarts after the short delay again


class Command(BaseCommand):
    help = "Run the ingestion worker (procrastinate) and restart it whenever it exits."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--restart-delay", type=float, default=2.0, help="seconds before a restart (doubled "
                            "while the worker keeps exiting at once, up to 30)")
        parser.add_argument("worker_args", nargs="*", help="passed to `procrastinate worker`")

    def handle(self, *args, restart_delay: float, worker_args: list[str], **options) -> None:
        stopping = threading.Event()
        child: subprocess.Popen | None = None

        def stop(signum, frame) -> None:
            stopping.set()
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "procrastinate", "worker", *worker_args]
        quick_exits = 0  # in a row: the restart delay doubles with each
        while not stopping.is_set():
            started = time.monotonic()
            child = subprocess.Popen(command)
            self.stderr.write(f"supervise_worker: started the worker (pid {child.pid})")
            status = child.wait()
            if stopping.is_set():
                break
            ran = time.monotonic() - started
            quick_exits = 0 if ran >= HEALTHY_RUN_SECONDS else quick_exits + 1
            delay = min(restart_delay * 2 ** max(0, quick_exits - 1), MAX_DELAY_SECONDS)
            self.stderr.write(
                f"supervise_worker: the worker (pid {child.pid}) exited with status {status} after {ran:.0f} s; "
                f"starting it again in {delay:.1f} s"
            )
            stopping.wait(delay)
