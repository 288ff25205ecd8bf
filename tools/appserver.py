"""Start `python app.py` on a free loopback port and wait until it answers, and read its memory: for the tests,
the benchmark and the load test (one copy of this logic)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunningApp:
    url: str
    process: subprocess.Popen
    log_path: Path | None  # the server's stdout and stderr, or None when discarded
    seconds_to_ready: float


def status_mb(pid: int, field: str) -> float:
    """A memory figure of a running process from /proc/PID/status, in MB: "VmRSS" now, "VmHWM" its peak."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(row for row in status.splitlines() if row.startswith(f"{field}:")).split()[1]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(env: dict | None = None, log_path: Path | None = None, timeout: float = 120.0):
    """Yield a RunningApp serving on loopback; stop it on exit. `env` is added to this process's environment."""
    port = free_port()
    full_env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full_env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        url = _wait_until_up(process, f"http://127.0.0.1:{port}/", timeout, log_path)
        yield RunningApp(url, process, log_path, time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        if log_path:
            log.close()


def _wait_until_up(process: subprocess.Popen, url: str, timeout: float, log_path: Path | None) -> str:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            tail = Path(log_path).read_text()[-2000:] if log_path else "(output discarded)"
            raise RuntimeError(f"app.py exited with code {process.returncode}: {tail}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"app.py did not answer on {url} within {timeout:.0f} s")
