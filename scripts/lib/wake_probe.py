#!/usr/bin/env python3
"""How late a thread wakes up on this machine: the floor under any latency.

Sleeps 1 ms at a time for the given number of seconds and measures how much
later than asked each wake-up came. Every hop of a request between threads
(a task woken on another core, a blocking-pool thread, a parked consumer) is
such a wake-up, so its tail bounds what end-to-end latency can reach on the
same machine. Prints one JSON line: sample count and percentiles in ms.

    python3 scripts/lib/wake_probe.py SECONDS
"""

import json
import sys
import time


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    asked = 0.001
    late = []
    end = time.monotonic() + seconds
    while True:
        before = time.monotonic()
        if before >= end:
            break
        time.sleep(asked)
        late.append((time.monotonic() - before - asked) * 1000)
    late.sort()

    def at(q: float) -> float:
        return round(late[min(len(late) - 1, int(len(late) * q))], 3)

    print(json.dumps({"samples": len(late), "sleep_ms": asked * 1000, "p50_ms": at(0.5),
                      "p99_ms": at(0.99), "p99_9_ms": at(0.999), "max_ms": round(late[-1], 3)}))


if __name__ == "__main__":
    main()
