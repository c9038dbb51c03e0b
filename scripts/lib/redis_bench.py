"""Redis Streams measurements for scripts/bench-e2e.sh, the same shapes as
`spool bench consume` and `spool bench latency`. Prints one JSON line.

  redis_bench.py consume --port P --stream S --count N [--batch 1000]
                         [--preload --record-bytes 100]
      Reads N entries of stream S through a consumer group created at 0,
      XREADGROUP GROUP g c COUNT batch STREAMS S >, and acknowledges each
      batch with XACK sent in the same pipeline as the next XREADGROUP (one
      round trip per batch: with --batch 1, XREADGROUP COUNT 1 + XACK per
      entry). Reports entries/s, requests (round trips) and their
      percentiles, and the pending count left. --preload first deletes S
      and XADDs N entries of --record-bytes (pipelined, 1000 at a time,
      untimed).

  redis_bench.py latency --port P --stream S --rate R --seconds T [--record-bytes 100]
      A producer process XADDs R entries/s at a steady pace, each carrying
      its scheduled send time (CLOCK_MONOTONIC, shared by processes on one
      machine); entries that fall due together while the producer is busy go
      in one pipeline, as a batching client would send them. A consumer
      process reads them with XREADGROUP BLOCK + XACK as above and records
      now - scheduled send time, so a producer that falls behind shows up in
      the latency (no coordinated omission), as in `spool bench latency`.

Needs the `redis` package (and `hiredis` for speed).
"""

import argparse
import json
import math
import multiprocessing
import sys
import time

import redis


def connect(port):
    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    # Raw replies: skip redis-py's conversion of every entry to a dict.
    client.set_response_callback("XREADGROUP", lambda response, **options: response)
    return client


def create_group(client, stream, group, start):
    try:
        client.execute_command("XGROUP", "CREATE", stream, group, start, "MKSTREAM")
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def read_loop(client, stream, group, batch, count, block_ms, deadline, on_entries, round_trips_us=None):
    """XREADGROUP + XACK of the previous batch in one pipeline, until `count`
    entries or the deadline. Returns the number of entries read; appends the
    microseconds of each round trip to `round_trips_us` if given."""
    got = 0
    previous = []
    while got < count and time.monotonic() < deadline:
        sent = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        if previous:
            pipe.execute_command("XACK", stream, group, *previous)
        read = ["XREADGROUP", "GROUP", group, "c1", "COUNT", batch]
        if block_ms is not None:
            read += ["BLOCK", block_ms]
        pipe.execute_command(*read, "STREAMS", stream, ">")
        reply = pipe.execute()[-1]
        if round_trips_us is not None:
            round_trips_us.append((time.perf_counter() - sent) * 1e6)
        if not reply:
            previous = []
            if block_ms is None:
                break
            continue
        entries = reply[0][1]
        on_entries(entries)
        previous = [entry[0] for entry in entries]
        got += len(entries)
    if previous:
        client.execute_command("XACK", stream, group, *previous)
    return got


def preload(client, stream, count, record_bytes):
    client.delete(stream)
    value = b"v" * record_bytes
    for first in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(first, min(count, first + 1000)):
            pipe.execute_command("XADD", stream, "*", "f", value)
        pipe.execute()


def consume(args):
    client = connect(args.port)
    if args.preload:
        preload(client, args.stream, args.count, args.record_bytes)
    create_group(client, args.stream, "bench", "0")
    round_trips_us = []
    started = time.perf_counter()
    got = read_loop(client, args.stream, "bench", args.batch, args.count, None,
                    time.monotonic() + 3600, lambda entries: None, round_trips_us)
    elapsed = time.perf_counter() - started
    pending = client.xpending(args.stream, "bench")["pending"]
    round_trips_us.sort()
    us = lambda q: round(percentile(round_trips_us, q)) if round_trips_us else None  # noqa: E731
    print(json.dumps({
        "bench": "redis-consume", "records": got, "seconds": round(elapsed, 3),
        "records_per_s": round(got / elapsed) if elapsed > 0 else None,
        "requests": len(round_trips_us),
        "requests_per_s": round(len(round_trips_us) / elapsed) if elapsed > 0 else None,
        "round_trip_us": {"measures": "pipeline of XACK (previous batch) + XREADGROUP",
                          "samples": len(round_trips_us), "p50": us(0.5), "p99": us(0.99),
                          "p99_9": us(0.999), "max": us(1.0)},
        "batch": args.batch, "pending_after": pending,
        "client": f"redis-py {redis.__version__}",
    }))
    return 0 if got == args.count else 1


def produce_paced(port, stream, rate, total, record_bytes, origin_ns):
    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    interval_ns = 1_000_000_000 / rate
    padding = b"x" * max(0, record_bytes - 20)
    sent = 0
    while sent < total:
        now = time.monotonic_ns()
        due = min(total, int((now - origin_ns) // interval_ns) + 1) if now >= origin_ns else 0
        if due <= sent:
            next_ns = origin_ns + int(sent * interval_ns)
            time.sleep(max(0, next_ns - time.monotonic_ns()) / 1e9)
            continue
        upto = min(due, sent + 1000)
        if upto - sent == 1:
            scheduled = origin_ns + int(sent * interval_ns)
            client.execute_command("XADD", stream, "*", "f", b"%020d" % scheduled + padding)
        else:
            pipe = client.pipeline(transaction=False)
            for index in range(sent, upto):
                scheduled = origin_ns + int(index * interval_ns)
                pipe.execute_command("XADD", stream, "*", "f", b"%020d" % scheduled + padding)
            pipe.execute()
        sent = upto


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def latency(args):
    client = connect(args.port)
    client.delete(args.stream)
    create_group(client, args.stream, "bench", "$")
    total = max(1, int(args.rate * args.seconds))
    origin_ns = time.monotonic_ns() + 200_000_000
    producer = multiprocessing.Process(
        target=produce_paced,
        args=(args.port, args.stream, args.rate, total, args.record_bytes, origin_ns))
    producer.start()
    latencies_us = []

    def on_entries(entries):
        now = time.monotonic_ns()
        for entry in entries:
            value = entry[1][1]
            latencies_us.append((now - int(value[:20])) / 1000)

    deadline = time.monotonic() + args.seconds + 10.5
    got = read_loop(client, args.stream, "bench", 1000, total, 100, deadline, on_entries)
    elapsed = (time.monotonic_ns() - origin_ns) / 1e9
    producer.join(10)
    if producer.is_alive():
        producer.terminate()
    latencies_us.sort()
    ms = lambda q: round(percentile(latencies_us, q) / 1000, 3) if latencies_us else None  # noqa: E731
    print(json.dumps({
        "bench": "redis-latency", "records": got, "expected": total, "seconds": round(elapsed, 3),
        "target_rate": args.rate, "record_bytes": args.record_bytes,
        "latency_ms": {"measures": "end to end, scheduled send to consumer (XADD -> XREADGROUP BLOCK)",
                       "samples": len(latencies_us), "p50": ms(0.5), "p99": ms(0.99),
                       "p99_9": ms(0.999), "max": ms(1.0)},
        "client": f"redis-py {redis.__version__}",
    }))
    return 0 if got == total else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--stream", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--batch", type=int, default=1000)
    c.add_argument("--preload", action="store_true")
    c.add_argument("--record-bytes", type=int, default=100)
    c.set_defaults(run=consume)
    lat = sub.add_parser("latency")
    lat.add_argument("--port", type=int, required=True)
    lat.add_argument("--stream", required=True)
    lat.add_argument("--rate", type=int, default=10000)
    lat.add_argument("--seconds", type=float, default=10)
    lat.add_argument("--record-bytes", type=int, default=100)
    lat.set_defaults(run=latency)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
