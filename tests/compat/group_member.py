"""One confluent-kafka group member, run as its own process by test_groups.py so a test can
SIGKILL it (no LeaveGroup). Appends one line per event to OUT_PATH, flushed at once:
`A p,p,…` (assigned), `R` (revoked), `M partition offset` (a record).

usage: group_member.py BOOTSTRAP TOPIC GROUP OUT_PATH SESSION_MS [INSTANCE_ID]
SIGTERM closes the consumer (final commit and LeaveGroup) and exits 0."""

import signal
import sys

from confluent_kafka import Consumer

POLL_TIMEOUT_S = 0.2
HEARTBEAT_MS = 500
AUTO_COMMIT_MS = 500


def main() -> None:
    bootstrap, topic, group, out_path, session_ms = sys.argv[1:6]
    conf = {
        "bootstrap.servers": bootstrap, "group.id": group,
        "session.timeout.ms": int(session_ms), "heartbeat.interval.ms": HEARTBEAT_MS,
        "auto.offset.reset": "earliest", "enable.auto.commit": True,
        "auto.commit.interval.ms": AUTO_COMMIT_MS, "partition.assignment.strategy": "range",
    }
    if len(sys.argv) > 6:
        conf["group.instance.id"] = sys.argv[6]
    out = open(out_path, "a", buffering=1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    consumer = Consumer(conf)

    def on_assign(c, partitions):
        out.write("A " + ",".join(str(p.partition) for p in partitions) + "\n")

    def on_revoke(c, partitions):
        out.write("R\n")

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stop:
        msg = consumer.poll(POLL_TIMEOUT_S)
        if msg is None or msg.error():
            continue
        out.write(f"M {msg.partition()} {msg.offset()}\n")
    consumer.close()


if __name__ == "__main__":
    main()
