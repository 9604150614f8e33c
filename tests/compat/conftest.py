"""Fixtures that run the real `bramble` binary for the real-client compatibility suite.

A `Broker` is one `bramble serve` process on 127.0.0.1 with a data dir under pytest's tmp_path.
It keeps its port and data dir across stop/start, so tests can restart it (SIGTERM) or crash it
(SIGKILL) and start it again on the same log. The binary comes from $BRAMBLE_BIN (default
target/debug/bramble); scripts/test.sh builds it first.

On a failing test the tail of the broker's log (stderr, all runs appended) is printed, so the
report shows what the broker said.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BRAMBLE_BIN = Path(os.environ.get("BRAMBLE_BIN", REPO_ROOT / "target" / "debug" / "bramble"))

HOST = "127.0.0.1"
NODE_ID = 1
# How long a fresh process may take to accept TCP connections (debug build, 2-core CI box).
STARTUP_TIMEOUT_S = 30.0
# How long SIGTERM may take to end the process cleanly.
SHUTDOWN_TIMEOUT_S = 20.0
# How long a SIGKILLed process may take to be reaped.
KILL_TIMEOUT_S = 10.0
# Interval between readiness probes.
READY_POLL_INTERVAL_S = 0.05
# Timeout of one readiness probe connect().
READY_CONNECT_TIMEOUT_S = 0.5
# A port picked by binding :0 may be taken by someone else before the broker binds it.
PORT_PICK_ATTEMPTS = 3
# Lines of broker log shown for a failing test.
LOG_TAIL_LINES = 80
# Power-cut mode (src/io/power_cut.rs): this variable set to 1 makes SIGUSR2 cut the node's files
# back to their last sync; the node then exits with POWER_CUT_EXIT_CODE at once.
POWER_CUT_ENV = "BRAMBLE_TEST_POWER_CUT"
POWER_CUT_EXIT_CODE = 86
# How long a node may take to cut and exit after SIGUSR2.
POWER_CUT_TIMEOUT_S = 10.0


class BrokerError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported TOML value {value!r}")


class Broker:
    """One `bramble serve` process with a fixed port and data dir across restarts.

    A subclass may run another binary under a wrapper (test_qemu_aarch64.py: the aarch64 build
    under qemu-user) by overriding the class attributes below."""

    # The binary, the command it runs under (e.g. ["qemu-aarch64", "-L", sysroot]), and how long
    # start-up and SIGTERM may take for it.
    binary: Path = BRAMBLE_BIN
    command_prefix: list[str] = []
    # The address the broker listens on and the tests reach it at (tests/compat/netns.py gives
    # each node of a namespace cluster its own).
    host: str = HOST
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S

    def __init__(self, workdir: Path, config: dict | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.config = dict(config or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Extra environment of the process (e.g. {POWER_CUT_ENV: "1"}), kept across restarts.
        self.env: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        assert self.port is not None, "broker never started"
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        cmd = [
            *self.command_prefix, str(self.binary), "serve",
            "--listen", self.bootstrap,
            "--data-dir", str(self.data_dir),
            "--node-id", str(NODE_ID),
        ]
        if self.config:
            config_path = self.workdir / "bramble.toml"
            config_path.write_text(
                "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.config.items()))
            cmd += ["--config", str(config_path)]
        return cmd

    def start(self) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not self.binary.exists():
            raise BrokerError(f"{self.binary} does not exist: run `cargo build` first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Only the first start may move to another port; restarts must reuse the same one.
        attempts = PORT_PICK_ATTEMPTS if self.port is None else 1
        last_error = None
        for _ in range(attempts):
            if self.starts == 0:
                self._pick_port()
            try:
                self._spawn_and_wait()
                self.starts += 1
                return self
            except BrokerError as e:
                last_error = e
                if "in use" not in self.log_tail(20).lower():
                    break
        raise last_error

    def _pick_port(self) -> None:
        """Chooses the port of the first start (a cluster node keeps the one its cluster gave it,
        since the other nodes' settings name it)."""
        self.port = free_port()

    def _spawn_and_wait(self) -> None:
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env["NO_COLOR"] = "1"
        env.update(self.env)
        # A test run inside a systemd service must not make its brokers notify that manager.
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(self._command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.workdir)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BrokerError(
                    f"bramble exited with {code} during startup\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), READY_CONNECT_TIMEOUT_S):
                    return
            except OSError:
                time.sleep(READY_POLL_INTERVAL_S)
        self.proc.kill()
        self.proc.wait(KILL_TIMEOUT_S)
        raise BrokerError(
            f"bramble did not accept on {self.bootstrap} within {self.startup_timeout_s}s\n"
            f"{self.log_tail()}")

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (a clean shutdown is 0)."""
        self._record_memory()
        assert self.is_running(), "broker is not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.shutdown_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(KILL_TIMEOUT_S)
            raise BrokerError(
                f"bramble ignored SIGTERM for {self.shutdown_timeout_s}s\n{self.log_tail()}")

    def _record_memory(self) -> None:
        """Appends the broker's current and peak RSS to $BRAMBLE_RSS_LOG, when set (for the
        figures in closing notes: `BRAMBLE_RSS_LOG=/tmp/rss.log scripts/test.sh`)."""
        log = os.environ.get("BRAMBLE_RSS_LOG")
        if not log or self.proc is None or self.proc.poll() is not None:
            return
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        with open(log, "a") as f:
            f.write(f"{self.port} VmRSS={fields.get('VmRSS', '?').strip()} VmHWM={fields.get('VmHWM', '?').strip()}\n")

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        assert self.is_running(), "broker is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(KILL_TIMEOUT_S)

    def power_cut(self) -> int:
        """SIGUSR2 to a node in power-cut mode: its files fall back to their last sync and it
        exits at once. Returns the exit code (POWER_CUT_EXIT_CODE when the cut ran)."""
        assert self.is_running(), "broker is not running"
        assert self.env.get(POWER_CUT_ENV) == "1", "node not started in power-cut mode"
        self.proc.send_signal(signal.SIGUSR2)
        try:
            return self.proc.wait(POWER_CUT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(KILL_TIMEOUT_S)
            raise BrokerError(
                f"bramble did not exit within {POWER_CUT_TIMEOUT_S}s of SIGUSR2\n{self.log_tail()}")

    def restart(self) -> "Broker":
        code = self.stop()
        assert code == 0, f"SIGTERM exit code {code}\n{self.log_tail()}"
        return self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        all_lines = text.splitlines()
        # A panic message is easily pushed out of the tail by its backtrace: repeat it first.
        panics = [f"PANIC: {line} {all_lines[i + 1] if i + 1 < len(all_lines) else ''}"
                  for i, line in enumerate(all_lines)
                  if "panicked at" in line or "memory allocation of" in line]
        return "\n".join(panics + all_lines[-lines:])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


class BrokerFactory:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.brokers: list[Broker] = []

    def __call__(self, config: dict | None = None, start: bool = True) -> Broker:
        workdir = self.tmp_path / f"broker{len(self.brokers)}"
        workdir.mkdir()
        broker = Broker(workdir, config)
        self.brokers.append(broker)
        return broker.start() if start else broker


def finish_broker(broker: Broker, test_failed: bool) -> list[str]:
    """Teardown of one broker: prints its log tail if the test failed, SIGTERMs it if running;
    returns what went wrong (no clean exit 0, or it had died on its own)."""
    if test_failed:
        print(f"----- broker log tail ({broker.log_path}) -----\n{broker.log_tail()}")
    if broker.is_running():
        try:
            code = broker.stop()
        except BrokerError as e:
            return [str(e)]
        if code != 0:
            return [f"bramble exited {code} on SIGTERM\n{broker.log_tail()}"]
    elif broker.proc is not None:
        # A power cut's exit code is expected only of a node started in power-cut mode.
        expected = (0, -signal.SIGKILL) + \
            ((POWER_CUT_EXIT_CODE,) if broker.env.get(POWER_CUT_ENV) == "1" else ())
        if broker.proc.returncode not in expected:
            return [f"bramble died on its own with {broker.proc.returncode}\n"
                    f"{broker.log_tail()}"]
    return []


@pytest.fixture
def broker_factory(request, tmp_path):
    """Makes brokers (optionally with a TOML config); each is SIGTERMed at teardown and must
    exit 0."""
    factory = BrokerFactory(tmp_path)
    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = [p for broker in factory.brokers for p in finish_broker(broker, failed)]
    assert not problems, "\n".join(problems)


@pytest.fixture
def cluster_factory(request, tmp_path):
    """Makes clusters of `bramble serve` processes (tests/compat/cluster.py); at teardown every
    node prints its log tail if the test failed, and each running node is SIGTERMed and must exit
    0."""
    from cluster import ClusterFactory  # cluster.py imports this module: import it late

    factory = ClusterFactory(tmp_path)
    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = [p for cluster in factory.clusters for node in cluster.nodes.values()
                for p in finish_broker(node, failed)]
    assert not problems, "\n".join(problems)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A running broker with default settings."""
    return broker_factory()


def pytest_report_header(config):
    lines = [f"bramble binary: {BRAMBLE_BIN}"]
    if os.environ.get("BRAMBLE_AARCH64_BIN"):
        lines.append(f"aarch64 binary (under qemu-user): {os.environ['BRAMBLE_AARCH64_BIN']}")
    return lines
