"""Request logging (issue 9, item 16): with `RUST_LOG=bramble=debug` the broker writes one line
per request — API, version, client id, correlation id, size, duration and the response's error
codes — so an operator can see what a client (here kcat) did. At the default level it writes
none."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from helpers import create_topic, produce_confluent

KCAT_TIMEOUT_S = 60
KCAT = shutil.which("kcat")
# Kafka's OFFSET_OUT_OF_RANGE.
OFFSET_OUT_OF_RANGE = 1

pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed: run scripts/setup.sh")


def kcat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KCAT, *args], capture_output=True, timeout=KCAT_TIMEOUT_S)


def request_lines(broker) -> list[str]:
    return [line for line in broker.log_path.read_text(errors="replace").splitlines()
            if "bramble::api::request_log" in line]


def test_debug_logs_one_line_per_request_with_error_codes(broker_factory, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "bramble=debug")
    broker = broker_factory()
    create_topic(broker.bootstrap, "logged", 1)
    run = produce_confluent(broker.bootstrap, "logged", [{"value": b"x"}])
    assert not run.errors
    # Past the end: kcat's first Fetch answers OFFSET_OUT_OF_RANGE (kcat then resets and exits).
    kcat("-b", broker.bootstrap, "-C", "-t", "logged", "-p", "0", "-o", "5", "-e", "-q")
    lines = request_lines(broker)
    kcat_fetches = [line for line in lines if "api=Fetch" in line and 'client_id="rdkafka"' in line]
    assert any(f"errors={OFFSET_OUT_OF_RANGE} OFFSET_OUT_OF_RANGE" in line for line in kcat_fetches), (
        "\n".join(lines[-20:]))
    produced = [line for line in lines if "api=Produce" in line]
    assert produced and all("errors=none" in line for line in produced)
    fields = re.compile(r"api=\w+ version=\d+ client_id=\"[^\"]*\" correlation_id=\d+ "
                        r"request_bytes=\d+ duration_us=\d+ errors=")
    assert all(fields.search(line) for line in lines), lines[0]


def test_no_request_lines_at_info(broker):
    create_topic(broker.bootstrap, "quiet", 1)
    kcat("-b", broker.bootstrap, "-L")
    assert request_lines(broker) == []
