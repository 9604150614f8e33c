"""The checks of one nemesis trial (issue 12), on what tests/compat/workload.py recorded and the
final read of every partition. Each check returns violations as lines; none means it passed.

- `check_acked`: every acknowledged record is in the final log exactly once, at its acknowledged
  offset (or, acknowledged without an offset, once in its partition); no value twice anywhere;
  no value the producers never sent; each producer's records in each partition in send order.
- `check_reads`: every record a group member read during the trial is in the final log at the
  same offset with the same value (a read above the high watermark that later vanished fails).
- `check_offsets`: the group's committed offsets never move backwards per partition. An
  observation (a successful commit, or an OffsetFetch answer) holds at some moment inside its
  call; if one call ended before another began, the later one must not show a smaller offset
  (NO_OFFSET, no commit at all, counts as smaller than any).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from workload import FinalLog, OffsetSeen, ProducerRun, Read

VALUE_RE = re.compile(r"^t(\d+)-p(\d+)-(\d+)$")


def check_acked(producers: list[ProducerRun], log: FinalLog, trial: int) -> list[str]:
    violations = []
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)  # value -> [(partition, offset)]
    for p, records in log.records.items():
        for offset, value in records.items():
            where[value].append((p, offset))
    for value, places in where.items():
        if len(places) > 1:
            violations.append(f"DUPLICATE: value {value} appears {len(places)} times: "
                              f"{sorted(places)}")
        m = VALUE_RE.match(value)
        if not m or int(m.group(1)) != trial or int(m.group(2)) >= len(producers) \
                or value not in producers[int(m.group(2))].sent_set():
            violations.append(f"UNKNOWN: value {value!r} at {places} was never sent in this trial")
    for prod in producers:
        for d in sorted(prod.deliveries.values(), key=lambda d: d.seq):
            if d.error is not None:
                continue
            value = prod.value(d.seq)
            places = where.get(value, [])
            if not places:
                violations.append(f"LOST: acked {value} (partition {d.partition}, offset "
                                  f"{d.offset}) is not in the final log")
            elif d.offset is not None and (d.partition, d.offset) not in places:
                violations.append(f"MOVED: acked {value} at {d.partition}@{d.offset} is at "
                                  f"{sorted(places)}")
            elif d.offset is None and all(p != d.partition for p, _ in places):
                violations.append(f"MOVED: acked {value} (partition {d.partition}, no offset) "
                                  f"is at {sorted(places)}")
        violations += _check_order(prod, where)
    return violations


def _check_order(prod: ProducerRun, where: dict[str, list[tuple[int, int]]]) -> list[str]:
    """One producer's records in each partition are at increasing offsets in send order."""
    violations = []
    last: dict[int, tuple[int, str]] = {}  # partition -> (offset, value) of the latest seq
    for value in prod.sent:
        for p, offset in where.get(value, []):
            if p in last and offset <= last[p][0]:
                violations.append(f"ORDER: {value} at {p}@{offset} is not after "
                                  f"{last[p][1]} at {p}@{last[p][0]}")
            last[p] = (offset, value)
    return violations


def check_reads(reads: list[Read], log: FinalLog) -> list[str]:
    violations = []
    for r in reads:
        final = log.records.get(r.partition, {}).get(r.offset)
        if final != r.value:
            violations.append(f"READ VANISHED: member {r.member} read {r.value} at "
                              f"{r.partition}@{r.offset}; the final log has {final!r} there "
                              f"(high watermark {log.ends.get(r.partition)})")
    return violations


def check_offsets(seen: list[OffsetSeen], t0: float) -> list[str]:
    violations = []
    by_partition: dict[int, list[OffsetSeen]] = defaultdict(list)
    for s in seen:
        by_partition[s.partition].append(s)
    for p, obs in sorted(by_partition.items()):
        ended = sorted(obs, key=lambda s: s.end)
        best: OffsetSeen | None = None  # the largest offset among calls ended so far
        i = 0
        for s in sorted(obs, key=lambda s: s.start):
            while i < len(ended) and ended[i].end < s.start:
                if best is None or ended[i].offset > best.offset:
                    best = ended[i]
                i += 1
            if best is not None and s.offset < best.offset:
                then = "COMMIT" if s.how == "commit" else "FETCH"
                violations.append(
                    f"OFFSET BACKWARDS ({then}): partition {p}: {best.how} by {best.who} showed "
                    f"{best.offset} (ended at +{best.end - t0:.3f}s), then {s.how} by {s.who} "
                    f"showed {s.offset} (started at +{s.start - t0:.3f}s)")
    return violations


def delivery_counts(producers: list[ProducerRun]) -> Counter:
    """acked, acked without an offset, failed, undelivered."""
    c: Counter = Counter()
    for prod in producers:
        for d in prod.deliveries.values():
            c["acked" if d.error is None else "failed"] += 1
            if d.error is None and d.offset is None:
                c["acked_without_offset"] += 1
        c["undelivered"] += prod.undelivered
    return c


def failed_errors(producers: list[ProducerRun]) -> Counter:
    return Counter(d.error for prod in producers for d in prod.deliveries.values()
                   if d.error is not None)

