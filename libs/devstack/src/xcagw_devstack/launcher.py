"""The local stack launcher behind `make run` and tests-e2e: Redis, the NHS sandbox, every service.

Each component runs as its own process in its own session (process group), started in dependency
order and awaited on its real readiness signal (gRPC health SERVING or an HTTP 200), with logs
prefixed and interleaved on stdout and copied to one file per component.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess  # nosec B404
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from xcagw_common.healthcheck import probe
from xcagw_common.testing import free_port, redis_server_binary

REPO_ROOT = Path(__file__).resolve().parents[4]

# Start order matters: each component's dependencies come before it.
SERVICE_ORDER = (
    "redis",
    "sandbox",
    "token-service",
    "pds-adapter",
    "gpconnect-adapter",
    "ccda-converter",
    "soap-edge",
)
GRPC_SERVICES = ("token-service", "pds-adapter", "gpconnect-adapter", "ccda-converter")


def env_prefix(name: str) -> str:
    """`pds-adapter` -> `PDS_ADAPTER`: the env prefix every service's Settings uses."""
    return name.upper().replace("-", "_")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored; no shell expansion."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310 # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Component:
    """One process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None


@dataclass
class StackPorts:
    """Every port the stack listens on (assigned before anything starts)."""

    ports: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.ports[key]


class Stack:
    """Starts and stops the whole local system. Used by `make run` and by tests-e2e."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        env_file: Path | None = None,
        overrides: dict[str, str] | None = None,
        free_ports: bool = False,
        echo: bool = True,
        only: Iterable[str] | None = None,
        grace_seconds: float = 8.0,
    ) -> None:
        self.workdir = (workdir or REPO_ROOT / ".devstack").resolve()
        self.logs_dir = self.workdir / "logs"
        self.echo = echo
        self.grace_seconds = grace_seconds
        self.only = set(only) if only is not None else set(SERVICE_ORDER)
        base = read_env_file(env_file or REPO_ROOT / "dev.env")
        # The caller's environment beats dev.env, explicit overrides beat both.
        for key in list(base):
            if key in os.environ:
                base[key] = os.environ[key]
        base.update(overrides or {})
        self.settings = base
        self.free_ports = free_ports
        self.ports = self._assign_ports()
        self.env = self._service_env()
        self.components: dict[str, Component] = {}
        self._lock = threading.Lock()

    # ---- configuration -------------------------------------------------------------------
    def _pick(self, key: str, default: int) -> int:
        if self.free_ports:
            return free_port()
        wanted = int(self.settings.get(key) or default or 0)
        if wanted and port_is_free(wanted):
            return wanted
        chosen = free_port()
        if wanted:
            self._say("launcher", f"port {wanted} ({key}) is taken; using {chosen} instead")
        return chosen

    def _assign_ports(self) -> StackPorts:
        ports = StackPorts()
        ports.ports["redis"] = self._pick("REDIS_PORT", 0)
        ports.ports["sandbox"] = self._pick("SANDBOX_PORT", 0)
        for name in GRPC_SERVICES:
            prefix = env_prefix(name)
            ports.ports[name] = self._pick(f"{prefix}_PORT", 0)
            ports.ports[f"{name}-metrics"] = self._pick(f"{prefix}_METRICS_PORT", 0)
        ports.ports["token-service-jwks"] = self._pick("TOKEN_SERVICE_JWKS_HTTP_PORT", 0)
        ports.ports["soap-edge"] = self._pick("SOAP_EDGE_PORT", 0)
        ports.ports["soap-edge-management"] = self._pick("SOAP_EDGE_MANAGEMENT_PORT", 0)
        return ports

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sandbox']}"

    @property
    def soap_edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['soap-edge']}"

    @property
    def management_url(self) -> str:
        """soap-edge's health and metrics listener (not the partner port)."""
        return f"http://127.0.0.1:{self.ports['soap-edge-management']}"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['token-service-jwks']}/.well-known/jwks.json"

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def _service_env(self) -> dict[str, str]:
        """The environment every service gets: dev.env plus the addresses chosen here."""
        env = dict(os.environ)
        env.update(self.settings)
        env["PYTHONUNBUFFERED"] = "1"
        env["REDIS_URL"] = self.redis_url
        sandbox = self.sandbox_url
        env["SANDBOX_PORT"] = str(self.ports["sandbox"])
        env.setdefault("SANDBOX_PUBLIC_URL", "")
        env["SANDBOX_PUBLIC_URL"] = env["SANDBOX_PUBLIC_URL"] or sandbox
        env["SANDBOX_JWKS_URL"] = self.jwks_url
        for name in GRPC_SERVICES:
            prefix = env_prefix(name)
            env[f"{prefix}_ADDR"] = self.addr(name)
            env[f"{prefix}_PORT"] = str(self.ports[name])
            env[f"{prefix}_METRICS_PORT"] = str(self.ports[f"{name}-metrics"])
        env["SOAP_EDGE_PORT"] = str(self.ports["soap-edge"])
        env["SOAP_EDGE_MANAGEMENT_PORT"] = str(self.ports["soap-edge-management"])
        env["TOKEN_SERVICE_JWKS_HTTP_PORT"] = str(self.ports["token-service-jwks"])
        env["TOKEN_SERVICE_KEYS_DIR"] = str(self.workdir / "keys")
        # NHS-facing URLs point at the sandbox unless dev.env or the caller says otherwise.
        defaults = {
            "TOKEN_SERVICE_TOKEN_URL": f"{sandbox}/oauth2/token",
            "PDS_ADAPTER_BASE_URL": f"{sandbox}/personal-demographics/FHIR/R4",
            "GPCONNECT_ADAPTER_SDS_BASE_URL": f"{sandbox}/spine-directory/FHIR/R4",
            "CCDA_CONVERTER_TERMINOLOGY_URL": f"{sandbox}/terminology/FHIR/R4",
        }
        for key, value in defaults.items():
            if not self.settings.get(key):
                env[key] = value
        return env

    # ---- process management --------------------------------------------------------------
    def _say(self, name: str, line: str) -> None:
        if self.echo:
            with self._lock:
                sys.stdout.write(f"[{name}] {line}\n")
                sys.stdout.flush()

    def _bin(self, script: str) -> str:
        candidate = Path(sys.executable).parent / script
        return str(candidate) if candidate.exists() else script

    def _components(self) -> list[Component]:
        logs = self.logs_dir
        redis_dir = self.workdir / "redis"
        comps = [
            Component(
                "redis",
                [
                    redis_server_binary(),
                    "--port",
                    str(self.ports["redis"]),
                    "--bind",
                    "127.0.0.1",
                    # AOF with fsync every second: a restart loses nothing acknowledged
                    # more than a second before a crash.
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--dir",
                    str(redis_dir),
                ],  # fmt: skip
                {},
                lambda: _redis_ping(self.ports["redis"]),
                logs / "redis.log",
            ),
            Component(
                "sandbox",
                [sys.executable, "-m", "xcagw_devstack", "sandbox"],
                {},
                lambda: http_ok(f"{self.sandbox_url}/_health"),
                logs / "sandbox.log",
            ),
        ]
        for name in GRPC_SERVICES:
            comps.append(
                Component(
                    name,
                    [self._bin(name)],
                    {"OTEL_SERVICE_NAME": name},
                    (lambda p=self.ports[name]: probe(p, timeout=0.5)),  # type: ignore[misc]
                    logs / f"{name}.log",
                )
            )
        comps.append(
            Component(
                "soap-edge",
                [self._bin("soap-edge")],
                {"OTEL_SERVICE_NAME": "soap-edge"},
                lambda: http_ok(f"{self.management_url}/health/ready"),
                logs / "soap-edge.log",
            )
        )
        return [c for c in comps if c.name in self.only]

    def _pump(self, comp: Component, stream: IO[bytes]) -> None:
        with comp.log_path.open("ab") as log_file:
            for raw in iter(stream.readline, b""):
                log_file.write(raw)
                log_file.flush()
                self._say(comp.name, raw.decode("utf-8", "replace").rstrip())

    def spawn(self, comp: Component) -> None:
        """Start one component's process (in its own session) and its log pump."""
        comp.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **comp.env}
        comp.process = subprocess.Popen(  # nosec B603 # noqa: S603 - argv built from fixed names
            comp.argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if comp.process.stdout is not None:
            comp.pump = threading.Thread(
                target=self._pump, args=(comp, comp.process.stdout), daemon=True
            )
            comp.pump.start()

    def wait_ready(self, comp: Component, timeout: float = 60.0) -> None:
        """Block until the component's own readiness signal, or fail with its last log lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if comp.process is None or comp.process.poll() is not None:
                code = comp.process.returncode if comp.process else None
                raise RuntimeError(
                    f"{comp.name} exited with {code} before it was ready; "
                    f"last log lines:\n{self.tail(comp.name)}"
                )
            if comp.ready():
                self._say("launcher", f"{comp.name} is ready")
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"{comp.name} not ready after {timeout:.0f}s; last log lines:\n{self.tail(comp.name)}"
        )

    def start_component(self, comp: Component, timeout: float = 60.0) -> None:
        self.spawn(comp)
        self.wait_ready(comp, timeout)

    def start(self, timeout: float = 90.0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "redis").mkdir(exist_ok=True)
        (self.workdir / "keys").mkdir(exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        comps = self._components()
        # Dependency layers: each layer's processes start together (their imports overlap on
        # both cores) and are all awaited before the next layer starts.
        layers = [
            [c for c in comps if c.name in ("redis", "sandbox")],
            [c for c in comps if c.name in GRPC_SERVICES],
            [c for c in comps if c.name == "soap-edge"],
        ]
        try:
            for layer in layers:
                for comp in layer:
                    self.components[comp.name] = comp
                    self.spawn(comp)
                for comp in layer:
                    self.wait_ready(comp, timeout)
        except BaseException:
            self.stop()
            raise
        self._write_stack_file()
        return self

    def _write_stack_file(self) -> None:
        info = {
            "soap_edge_url": self.soap_edge_url,
            "soap_edge_management_url": self.management_url,
            "sandbox_url": self.sandbox_url,
            "redis_url": self.redis_url,
            "jwks_url": self.jwks_url,
            "grpc": {name: self.addr(name) for name in GRPC_SERVICES},
            "metrics": {
                **{
                    name: f"http://127.0.0.1:{self.ports[f'{name}-metrics']}/metrics"
                    for name in GRPC_SERVICES
                },
                "soap-edge": f"{self.management_url}/metrics",
            },
            "pids": {n: c.process.pid for n, c in self.components.items() if c.process},
        }
        (self.workdir / "stack.json").write_text(json.dumps(info, indent=2))

    def endpoints_text(self) -> str:
        lines = [
            "xcagw stack is ready:",
            f"  SOAP (partners)  {self.soap_edge_url}/xca  (/iti47 /iti55 /iti38 /iti39, ?wsdl)",
            f"  soap-edge health {self.management_url}/health/ready",
            f"  soap-edge metrics {self.management_url}/metrics",
        ]
        for name in GRPC_SERVICES:
            lines.append(
                f"  {name:<18} grpc {self.addr(name):<18} metrics "
                f"http://127.0.0.1:{self.ports[f'{name}-metrics']}/metrics"
            )
        lines += [
            f"  JWKS             {self.jwks_url}",
            f"  NHS sandbox      {self.sandbox_url}  (PDS, OAuth, SDS, GP Connect, terminology)",
            f"  Redis            {self.redis_url}",
            f"  logs             {self.logs_dir}",
        ]
        return "\n".join(lines)

    def tail(self, name: str, lines: int = 50) -> str:
        comp = self.components.get(name)
        if comp is None or not comp.log_path.exists():
            return ""
        return "\n".join(comp.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one component's process group (fault injection in tests)."""
        comp = self.components[name]
        if comp.process is not None and comp.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.process.pid, sig)
            comp.process.wait(timeout=30)

    def restart(self, name: str, timeout: float = 60.0) -> None:
        self.kill(name)
        self.start_component(self.components[name], timeout)

    def stop(self) -> None:
        """SIGTERM every process group in reverse order, SIGKILL after the grace period."""
        running = [(c, c.process) for c in reversed(list(self.components.values())) if c.process]
        for _comp, proc in running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for comp, proc in running:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self._say("launcher", f"{comp.name} ignored SIGTERM; killing")
            # Children a service forked (executors) share its group: make sure none survive.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for comp, _proc in running:
            if comp.pump is not None:
                comp.pump.join(timeout=2)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "stack.json").unlink()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def run_forever(stack: Stack) -> int:
    """`make run`: start everything, print the endpoints, stop all on Ctrl-C or SIGTERM."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start()
    except (RuntimeError, TimeoutError) as exc:
        stack._say("launcher", f"stack failed to start: {exc}")
        return 1
    stack._say("launcher", stack.endpoints_text())
    parent = os.getppid()
    try:
        while not stopping.is_set():
            if os.getppid() != parent:
                # Our parent (make) died without forwarding its signal: never leave orphans.
                stopping.set()
            for comp in stack.components.values():
                if comp.process is not None and comp.process.poll() is not None:
                    stack._say("launcher", f"{comp.name} exited ({comp.process.returncode})")
                    stopping.set()
            stopping.wait(0.5)
    finally:
        stack._say("launcher", "stopping the stack")
        stack.stop()
        stack._say("launcher", "all processes stopped")
    return 0
