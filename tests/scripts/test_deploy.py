"""scripts/deploy.sh restarts nodes strictly one at a time, runs nothing under --dry-run, and
stops at the first failed node.

No Pi and no network: fake `ssh` and `scp` first in PATH append each call (as `printf %q` would
print it, the same form as deploy.sh's `+ ...` lines) to a log, and can be told to fail calls
whose command line contains a given string. The tests compare the printed plan, the recorded
calls and their order per host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "scripts" / "deploy.sh"
# Bound on one deploy.sh run against the fakes (they answer at once).
DEPLOY_TIMEOUT_S = 60

HOSTS = ["host1", "host2", "host3"]

# Records its call, then fails if FAKE_FAIL_MATCH occurs in its arguments.
FAKE = """#!/usr/bin/env bash
{ printf '%q' "$(basename "$0")"; printf ' %q' "$@"; printf '\\n'; } >>"$FAKE_LOG"
if [ -n "${FAKE_FAIL_MATCH:-}" ] && [[ "$*" == *"$FAKE_FAIL_MATCH"* ]]; then exit 1; fi
exit 0
"""

# The steps of one host, in order: a recognisable piece of each command line.
STEPS = [
    ("scp", ".bramble-deploy.bin"),
    ("scp", ".bramble-deploy.toml"),
    ("ssh", "/usr/bin/bramble.new"),
    ("ssh", "systemctl\\ restart\\ bramble"),
    ("ssh", "systemctl\\ is-active"),
    ("ssh", "bramble\\ status"),
]


@pytest.fixture
def env(tmp_path):
    fake_dir = tmp_path / "fakebin"
    fake_dir.mkdir()
    for name in ("ssh", "scp"):
        path = fake_dir / name
        path.write_text(FAKE)
        path.chmod(0o755)
    binary = tmp_path / "bramble"
    binary.write_bytes(b"\x7fELF not really")
    config = tmp_path / "bramble.toml"
    config.write_text('listen = "0.0.0.0:9092"\n')
    log = tmp_path / "calls.log"
    e = dict(os.environ)
    e["PATH"] = f"{fake_dir}:{e['PATH']}"
    e["FAKE_LOG"] = str(log)
    e.pop("FAKE_FAIL_MATCH", None)
    return {"env": e, "bin": binary, "config": config, "log": log}


def deploy(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DEPLOY), "--bin", str(env["bin"]), "--config", str(env["config"]), "--user", "pi",
         *args],
        env=env["env"], capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S)


def calls(env) -> list[str]:
    log = env["log"]
    return log.read_text().splitlines() if log.exists() else []


def assert_rolling_order(commands: list[str], hosts: list[str]) -> None:
    """`commands` is exactly STEPS for hosts[0], then STEPS for hosts[1], ..."""
    assert len(commands) == len(STEPS) * len(hosts), "\n".join(commands)
    for h, host in enumerate(hosts):
        for s, (program, piece) in enumerate(STEPS):
            cmd = commands[h * len(STEPS) + s]
            assert cmd.startswith(program + " "), (host, s, cmd)
            assert f"pi@{host}" in cmd, (host, s, cmd)
            assert piece in cmd, (host, s, cmd)


def test_dry_run_prints_plan_in_rolling_order_and_runs_nothing(env):
    """--dry-run exits 0, prints every host's copy, install, restart and both waits before the
    next host's, and the fake ssh/scp are never called."""
    res = deploy(env, "--dry-run", *HOSTS)
    assert res.returncode == 0, res.stderr
    assert calls(env) == [], "dry run executed commands"
    planned = [line[2:] for line in res.stdout.splitlines() if line.startswith("+ ")]
    assert_rolling_order(planned, HOSTS)
    assert "nothing was executed" in res.stdout


def test_run_executes_the_printed_plan_in_order(env):
    """A real run (against the fakes) executes exactly the commands the dry run printed, in the
    same order: host1 completely (ready checks included) before host2 is touched."""
    plan = deploy(env, "--dry-run", *HOSTS)
    planned = [line[2:] for line in plan.stdout.splitlines() if line.startswith("+ ")]
    res = deploy(env, *HOSTS)
    assert res.returncode == 0, res.stderr
    assert calls(env) == planned
    assert_rolling_order(calls(env), HOSTS)


def test_stops_at_first_node_that_does_not_come_back(env):
    """host2 never becomes active: deploy.sh fails naming it, host3 is never contacted, and
    host1 was fully done before."""
    env["env"]["FAKE_FAIL_MATCH"] = "pi@host2 systemctl is-active"
    # Fails within one poll: the fake answers at once, the wait bound is 0 s.
    res = deploy(env, "--wait-s", "0", *HOSTS)
    assert res.returncode != 0
    assert "FAILED on host2" in res.stderr and "not touched: host3" in res.stderr, res.stderr
    recorded = calls(env)
    assert not any("host3" in c for c in recorded), recorded
    assert_rolling_order(recorded[:len(STEPS)], ["host1"])
    assert recorded[-1].startswith("ssh ") and "pi@host2" in recorded[-1]
    assert "is-active" in recorded[-1]


def test_missing_binary_fails_before_any_command(env):
    """A --bin that does not exist is refused up front, dry run or not."""
    env["bin"] = env["bin"].with_name("missing")
    for args in (["--dry-run"], []):
        res = deploy(env, *args, *HOSTS)
        assert res.returncode != 0 and "not found" in res.stderr, res.stderr
    assert calls(env) == []


def test_config_dir_gives_each_node_its_own_config(env, tmp_path):
    """--config-dir DIR copies DIR/HOST.toml to each host (node ids and advertised names differ
    per node), and a host without its file stops the deploy before any command runs."""
    configs = tmp_path / "nodes"
    configs.mkdir()
    for i, host in enumerate(HOSTS, start=1):
        (configs / f"{host}.toml").write_text(f'node_id = {i}\nadvertise = "{host}:9092"\n')
    res = subprocess.run(
        [str(DEPLOY), "--bin", str(env["bin"]), "--config-dir", str(configs), "--user", "pi",
         *HOSTS], env=env["env"], capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S)
    assert res.returncode == 0, res.stderr
    recorded = calls(env)
    assert_rolling_order(recorded, HOSTS)
    copied = [c for c in recorded if c.startswith("scp ") and ".bramble-deploy.toml" in c]
    assert len(copied) == len(HOSTS)
    for host, cmd in zip(HOSTS, copied):
        assert f"{configs}/{host}.toml" in cmd and f"pi@{host}:" in cmd, cmd

    env["log"].unlink()
    (configs / "host3.toml").unlink()
    res = subprocess.run(
        [str(DEPLOY), "--bin", str(env["bin"]), "--config-dir", str(configs), *HOSTS],
        env=env["env"], capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S)
    assert res.returncode != 0
    assert "host3.toml not found" in res.stderr, res.stderr
    assert calls(env) == [], "commands ran before every config was checked"
