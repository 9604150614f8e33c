"""Idempotent producer through dropped connections (issue 3, acceptance 6, second half).

What the broker promises: when a connection dies with produce requests in flight, librdkafka
(enable.idempotence) resends them with the same producer id, epoch and sequences on a new
connection; batches the broker already wrote are answered with their original offsets, not
written again. So after any number of cuts every record is stored exactly once, in order.

The test puts a small TCP proxy between client and broker — the broker advertises the proxy's
address, so every client connection runs through it. Again and again while a producer streams,
the proxy swallows the broker's answers for a moment (requests still reach the broker and are
written) and then cuts every connection, so the client must resend batches the broker already
has. The broker's log must show it recognised such resends."""

from __future__ import annotations

import socket
import threading
import time

from confluent_kafka import Producer

from conftest import HOST, free_port
from helpers import consume_all, create_topic

RECORDS = 6000
PARTITIONS = 3
# The producer streams records in chunks with short pauses (about 2 s in all); every
# CUT_INTERVAL_S meanwhile the proxy swallows answers and then cuts every connection.
STREAM_CHUNK_RECORDS = 20
STREAM_PAUSE_S = 0.02
# Between cuts librdkafka must reconnect and resume sending; cutting more often than it can
# recover would only stall it. Each cut waits until more records were delivered since the last.
CUT_INTERVAL_S = 0.4
CUTS_MAX = 20
# How long the producer may take to deliver everything, retries included.
DELIVERY_TIMEOUT_S = 120
PROXY_BUFFER_BYTES = 65536
# How long answers are swallowed before a cut: requests sent meanwhile are written by the broker
# but never acknowledged to the client.
BLACKHOLE_S = 0.05


class CuttingProxy:
    """Forwards 127.0.0.1:listen_port to the broker; `cut()` closes every live connection."""

    def __init__(self, listen_port: int, upstream: tuple[str, int]):
        self.upstream = upstream
        self.server = socket.create_server((HOST, listen_port))
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.cuts_with_traffic = 0
        self.closed = False
        self.blackhole = threading.Event()
        self.swallowed_bytes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b, answers in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, answers), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(PROXY_BUFFER_BYTES):
                if answers and self.blackhole.is_set():
                    self.swallowed_bytes += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.blackhole.set()
        time.sleep(BLACKHOLE_S)
        with self.lock:
            pairs, self.pairs = self.pairs, []
        if pairs:
            self.cuts_with_traffic += 1
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.blackhole.clear()

    def close(self) -> None:
        self.closed = True
        self.server.close()
        self.cut()


def test_idempotent_producer_survives_dropped_connections(broker_factory, monkeypatch):
    """Cuts every client connection again and again during a 6,000-record idempotent stream
    over 3 partitions: every delivery succeeds, the broker recognised resent batches, and the log
    holds each record exactly once, in produce order per partition, at dense offsets."""
    proxy_port = free_port()
    # The broker logs each recognised resend at debug level.
    monkeypatch.setenv("RUST_LOG", "info,bramble::log=debug,bramble::api=debug")
    broker = broker_factory({"advertise": f"{HOST}:{proxy_port}"})
    proxy = CuttingProxy(proxy_port, (HOST, broker.port))
    try:
        bootstrap = f"{HOST}:{proxy_port}"
        topic = "idem-cut"
        create_topic(bootstrap, topic, PARTITIONS)
        delivered: dict[bytes, tuple[int, int]] = {}
        errors: list[str] = []

        def on_delivery(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                delivered[msg.value()] = (msg.partition(), msg.offset())

        producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 2, "message.timeout.ms": DELIVERY_TIMEOUT_S * 1000,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        })
        sent = [(i % PARTITIONS, b"cut-%05d" % i) for i in range(RECORDS)]

        def stream():
            """Produces steadily (not all at once), so requests are in flight at every cut."""
            for i, (partition, value) in enumerate(sent):
                producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
                producer.poll(0)
                if i % STREAM_CHUNK_RECORDS == 0:
                    time.sleep(STREAM_PAUSE_S)

        streamer = threading.Thread(target=stream, name="idem-cut-producer")
        streamer.start()
        cuts = 0
        delivered_at_cut = 0
        while streamer.is_alive() and cuts < CUTS_MAX:
            time.sleep(CUT_INTERVAL_S)
            if len(delivered) > delivered_at_cut:
                delivered_at_cut = len(delivered)
                proxy.cut()
                cuts += 1
        streamer.join(DELIVERY_TIMEOUT_S)
        assert not streamer.is_alive()
        assert producer.flush(DELIVERY_TIMEOUT_S) == 0, "records neither delivered nor failed"
        assert not errors, errors[:5]
        assert len(delivered) == RECORDS
        assert proxy.cuts_with_traffic >= 3, proxy.cuts_with_traffic

        got = consume_all(bootstrap, topic, PARTITIONS, RECORDS)
        values = [m.value for m in got]
        assert len(values) == len(set(values)), "a record was stored twice"
        assert len(values) == RECORDS, f"{RECORDS - len(values)} records missing"
        for p in range(PARTITIONS):
            in_log = [m for m in got if m.partition == p]
            assert [m.offset for m in in_log] == list(range(len(in_log))), f"partition {p} not dense"
            assert [m.value for m in in_log] == [v for q, v in sent if q == p], f"partition {p} out of order"
            for m in in_log:
                assert delivered[m.value] == (p, m.offset), "delivery report and log disagree"
        resends = broker.log_tail(100_000).count("duplicate batch answered")
        assert resends > 0, f"no batch was resent after a cut ({proxy.swallowed_bytes} answer bytes swallowed); the test proved little"
    finally:
        proxy.close()
