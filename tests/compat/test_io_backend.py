"""The disk writer backend in use is visible to clients, and the std fallback is really taken.

scripts/test.sh runs the core produce/fetch tests a second time with the io_uring probe forced to
fail (BRAMBLE_IO_URING_PROBE_FAIL=ENOSYS, as under qemu-user); this test proves that run was on
the plain backend, and that a normal run names one of the two backends."""

from __future__ import annotations

import os

from confluent_kafka.admin import AdminClient, ConfigResource

# Bound on one admin call.
ADMIN_TIMEOUT_S = 30


def test_backend_in_describe_configs(broker):
    """DescribeConfigs of the broker reports bramble.io.backend: std when the probe is forced to
    fail, otherwise uring or std."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(ADMIN_TIMEOUT_S)
    backend = configs["bramble.io.backend"].value
    if os.environ.get("BRAMBLE_IO_URING_PROBE_FAIL"):
        assert backend == "std", backend
        assert "falling back to the std backend" in broker.log_tail(200)
    else:
        assert backend in ("uring", "std"), backend
