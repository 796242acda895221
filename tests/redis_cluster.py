"""A throwaway three-master Redis Cluster on loopback, for running the suite on a cluster.

    python -m tests.redis_cluster start [--base-port 7101]   # prints redis+cluster://...
    python -m tests.redis_cluster stop [--base-port 7101]

Nodes listen on the base port and the two after it, keep nothing on disk and live in a
temporary directory that `stop` removes. `start` first shuts down a leftover cluster on
those ports, so both commands can be run any number of times.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
NODES = 3
DIR_PREFIX = "quotas-redis-cluster-"
TIMEOUT = 30.0


def ports(base: int) -> list[int]:
    return [base + i for i in range(NODES)]


def url(base: int) -> str:
    return f"redis+cluster://{HOST}:{base}/0"


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),  # a closed port answers at once, not after backoffs
    )


def _alive(port: int) -> bool:
    try:
        return bool(_client(port).ping())
    except redis.RedisError:
        return False


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"redis_cluster: timed out waiting for {what}")
        time.sleep(0.1)


def stop(base: int) -> None:
    """Shut down every node on the cluster's ports and remove their directories."""
    for port in ports(base):
        if not _alive(port):
            continue
        client = _client(port)
        folder = Path(str(client.config_get("dir").get("dir", "")))
        with contextlib.suppress(redis.RedisError):  # the connection drops as it exits
            client.shutdown(nosave=True)
        _wait(lambda port=port: not _alive(port), f"port {port} to close")
        if folder.name.startswith(DIR_PREFIX) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _cluster_ok(port: int) -> bool:
    try:
        info = _client(port).execute_command("CLUSTER INFO")
    except redis.RedisError:
        return False
    if isinstance(info, bytes | str):  # redis-py parses it into a dict, older ones did not
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    fields = {str(k): str(v) for k, v in info.items()}
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(NODES)


def start(base: int) -> str:
    """Start the nodes, join them into one cluster, wait until it serves; return its URL."""
    stop(base)
    folder = tempfile.mkdtemp(prefix=DIR_PREFIX)
    for port in ports(base):
        subprocess.run(
            [
                "redis-server",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "yes",
                "--bind", HOST,
                "--dir", folder,
                "--logfile", f"redis-{port}.log",
            ],
            check=True,
        )  # fmt: skip
    for port in ports(base):
        _wait(lambda port=port: _alive(port), f"redis-server on port {port}")
    subprocess.run(
        [
            "redis-cli",
            "--cluster", "create",
            *(f"{HOST}:{port}" for port in ports(base)),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for port in ports(base):
        _wait(lambda port=port: _cluster_ok(port), f"cluster_state:ok on port {port}")
    return url(base)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.redis_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--base-port", type=int, default=7101)
    options = parser.parse_args(argv)
    if options.action == "start":
        print(start(options.base_port))
    else:
        stop(options.base_port)


if __name__ == "__main__":
    main(sys.argv[1:])
