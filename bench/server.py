"""A private redis-server on loopback for the run, so nobody else's keys or flushes meet ours."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis(timeout: float = 15.0) -> Iterator[str]:
    """Start `redis-server` (no persistence) on a free 127.0.0.1 port; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH: install it, or pass --redis-url.")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="quotas-bench-redis-") as tmp:
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        command += ["--appendonly", "no", "--dir", tmp, "--loglevel", "warning"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url, socket_timeout=1.0)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("The private redis-server did not start.") from None
                    time.sleep(0.1)
            client.close()
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
