"""scripts/cluster.sh starts three voters with issue 10's flags (one voters list, own ports,
racks r1-r3, data and logs under --dir), prints the bootstrap string, reports which nodes run,
and kills, restarts and stops exactly the nodes it is told to.

No cluster needed: a fake `bramble` (Python) records its arguments, accepts on its --listen port
until SIGTERM, and answers `cluster status`. The tests drive the script as a user would and check
the recorded command lines and the processes."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "scripts" / "cluster.sh"
# Bound on one cluster.sh run against the fake (it starts at once).
SCRIPT_TIMEOUT_S = 60
# Attempts at finding three consecutive free ports for each of Kafka and Raft.
PORT_BASE_ATTEMPTS = 50
# Bound on a killed process disappearing from /proc.
GONE_TIMEOUT_S = 5.0

FAKE = f"""#!{sys.executable}
import os, signal, socket, sys, time
args = sys.argv[1:]
if args[:2] == ["cluster", "status"] and "--json" in args:
    # cluster.sh waits until every node is a registered, unfenced broker.
    print('{{"nodes":[' + ",".join('{{"node_id":%d,"fenced":false}}' % i for i in (1, 2, 3)) + ']}}')
    sys.exit(0)
if args[:2] == ["cluster", "status"]:
    print("fake cluster status from", args[args.index("-b") + 1])
    sys.exit(0)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(repr(args) + "\\n")
host, port = args[args.index("--listen") + 1].rsplit(":", 1)
server = socket.create_server((host, int(port)))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    conn, _ = server.accept()
    conn.close()
"""


def consecutive_free_ports(n: int, avoid: set[int]) -> int:
    for _ in range(PORT_BASE_ATTEMPTS):
        base = random.randrange(20_000, 60_000)
        ports = range(base, base + n)
        if avoid & set(ports):
            continue
        socks = []
        try:
            for p in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three consecutive free ports")


@pytest.fixture
def env(tmp_path):
    fake = tmp_path / "bramble"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    kafka = consecutive_free_ports(3, set())
    raft = consecutive_free_ports(3, set(range(kafka, kafka + 3)))
    e = dict(os.environ)
    e.update(BRAMBLE_CLUSTER_KAFKA_PORT=str(kafka), BRAMBLE_CLUSTER_RAFT_PORT=str(raft),
             FAKE_LOG=str(tmp_path / "calls.log"))
    e.pop("BRAMBLE_CLUSTER_DIR", None)
    ctx = {"env": e, "fake": fake, "dir": tmp_path / "cluster", "kafka": kafka, "raft": raft,
           "log": tmp_path / "calls.log"}
    yield ctx
    # Whatever a failed test left running.
    for n in (1, 2, 3):
        pid = pid_of(ctx, n)
        if pid is not None and alive(pid):
            os.kill(pid, 9)


def run(ctx, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER_SH), *args, "--dir", str(ctx["dir"])], env=ctx["env"],
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)


def pid_of(ctx, n: int) -> int | None:
    path = ctx["dir"] / f"node-{n}.pid"
    return int(path.read_text()) if path.exists() else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def calls(ctx) -> list[list[str]]:
    import ast
    return [ast.literal_eval(line) for line in ctx["log"].read_text().splitlines()]


def test_start_passes_the_contract_flags_and_prints_bootstrap(env):
    res = run(env, "start", "--binary", str(env["fake"]))
    assert res.returncode == 0, res.stderr
    k, r, d = env["kafka"], env["raft"], env["dir"]
    bootstrap = ",".join(f"127.0.0.1:{k + i}" for i in range(3))
    assert f"bootstrap: {bootstrap}" in res.stdout, res.stdout
    assert f"fake cluster status from 127.0.0.1:{k}" in res.stdout, res.stdout
    voters = ",".join(f"{i + 1}@127.0.0.1:{r + i}" for i in range(3))
    assert calls(env) == [
        ["serve", "--node-id", str(n), "--data-dir", str(d / f"node-{n}"),
         "--listen", f"127.0.0.1:{k + n - 1}", "--advertise", f"127.0.0.1:{k + n - 1}",
         "--raft-listen", f"127.0.0.1:{r + n - 1}", "--voters", voters, "--rack", f"r{n}"]
        for n in (1, 2, 3)]
    for n in (1, 2, 3):
        assert alive(pid_of(env, n)), f"node {n}"
        assert (d / f"node-{n}.log").exists()
    assert run(env, "stop").returncode == 0


def test_status_kill_restart_stop(env):
    assert run(env, "start", "--binary", str(env["fake"])).returncode == 0
    status = run(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(": running") == 3, status.stdout

    victim = pid_of(env, 2)
    others = [pid_of(env, 1), pid_of(env, 3)]
    res = run(env, "kill", "2")
    assert res.returncode == 0, res.stderr
    assert wait_gone(victim), "node 2 was killed"
    assert all(alive(p) for p in others), "only node 2 was killed"
    status = run(env, "status")
    assert status.returncode == 1 and "node 2: stopped" in status.stdout, status.stdout

    # start again is idempotent: only the missing node starts.
    res = run(env, "start")
    assert res.returncode == 0, res.stderr
    assert "node 1 already running" in res.stdout and "node 3 already running" in res.stdout
    assert [pid_of(env, 1), pid_of(env, 3)] == others
    assert len(calls(env)) == 4

    before = pid_of(env, 3)
    res = run(env, "restart", "3")
    assert res.returncode == 0, res.stderr
    assert wait_gone(before) and alive(pid_of(env, 3)) and pid_of(env, 3) != before
    assert calls(env)[-1][:3] == ["serve", "--node-id", "3"], "the restart reuses the binary"

    pids = [pid_of(env, n) for n in (1, 2, 3)]
    res = run(env, "stop")
    assert res.returncode == 0, res.stderr
    assert all(wait_gone(p) for p in pids)
    status = run(env, "status")
    assert status.returncode == 1 and status.stdout.count(": stopped") == 3, status.stdout


def test_usage_and_bad_arguments(env):
    res = subprocess.run([str(CLUSTER_SH)], capture_output=True, text=True,
                         timeout=SCRIPT_TIMEOUT_S)
    assert res.returncode == 2 and "usage: scripts/cluster.sh" in res.stderr
    for args in (["kill"], ["kill", "4"], ["frobnicate"], ["start", "--bogus"]):
        res = run(env, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "usage:" in res.stderr, args
    res = run(env, "start", "--binary", str(env["dir"] / "missing"))
    assert res.returncode == 1 and "not an executable" in res.stderr
