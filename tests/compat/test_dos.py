"""Denial of service by a few sockets, seen by real clients (confluent-kafka and kcat): frame
headers announcing large bodies that never come. A well-behaved client must still be served
within a bound far below the attack's own timeout (request_read_ms_max, 30 s). Connection floods
(per-address limits, which need a second source address) are tested in tests/dos.rs."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka.admin import AdminClient

# A real client must get Metadata within this under attack (the attacks last 30 s and more).
SERVED_WITHIN_S = 10.0
# Sockets announcing a 16 MiB frame (the default frame_bytes_max) and sending 2 bytes of it:
# together three times the default 64 MiB request budget.
HEADER_ATTACKERS = 12
FRAME_BYTES = 16 * 1024 * 1024
KCAT = shutil.which("kcat")


def attack_headers(bootstrap: str) -> list[socket.socket]:
    host, port = bootstrap.rsplit(":", 1)
    held = []
    for _ in range(HEADER_ATTACKERS):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(struct.pack(">i", FRAME_BYTES) + b"\x00\x12")
        held.append(s)
    time.sleep(0.5)
    return held


def test_frame_headers_do_not_stall_a_confluent_client(broker):
    held = attack_headers(broker.bootstrap)
    started = time.monotonic()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.list_topics(timeout=SERVED_WITHIN_S)
    assert time.monotonic() - started < SERVED_WITHIN_S
    for s in held:
        s.close()


@pytest.mark.skipif(KCAT is None, reason="kcat not installed: run scripts/setup.sh")
def test_frame_headers_do_not_stall_kcat(broker):
    held = attack_headers(broker.bootstrap)
    res = subprocess.run([KCAT, "-b", broker.bootstrap, "-L", "-m", str(int(SERVED_WITHIN_S))],
                         capture_output=True, timeout=SERVED_WITHIN_S + 5)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    for s in held:
        s.close()

