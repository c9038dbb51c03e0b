"""Drives spoold's Jobs gRPC API for scripts/bench-jobs.sh. Prints one JSON
line per command.

  spool_jobs.py --stubs DIR enqueue --server HOST:PORT --queue Q --count N
        [--batch 1000] [--in-flight 4] [--payload-bytes 16] [--numbered]
      EnqueueBatch requests of `batch` jobs, `in-flight` requests at a time,
      until N jobs are enqueued. With --numbered each payload is a small
      JSON document with a distinct order number, {"order":"Q-N",...}, for
      searches that find one job. Reports jobs/s (bounded by this Python
      client as much as by the server).

  spool_jobs.py --stubs DIR stats --server HOST:PORT --queue Q
      QueueStats of Q.

  spool_jobs.py --stubs DIR run-worker --server HOST:PORT --queue Q --count N
        [--timeout 600] [--log FILE] -- WORKER COMMAND...
      Starts the worker command, polls QueueStats every 10 ms until no job of
      Q is scheduled, available or running and at least N are finished, then
      stops the worker (SIGTERM, SIGKILL after 10 s). Reports the time from
      starting the worker to that point, jobs/s and ms per job.

DIR holds the Python modules generated from proto/spool/v1/jobs.proto
(python -m grpc_tools.protoc -I proto --python_out=DIR --grpc_python_out=DIR
proto/spool/v1/jobs.proto).
"""

import argparse
import json
import signal
import subprocess
import sys
import time


def load_stubs(directory):
    sys.path.insert(0, directory)
    from spool.v1 import jobs_pb2, jobs_pb2_grpc  # noqa: PLC0415

    return jobs_pb2, jobs_pb2_grpc


def channel(server):
    import grpc  # noqa: PLC0415

    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    return grpc.insecure_channel(server, options=options)


def stats_dict(pb, reply):
    return {
        "queue": reply.queue,
        "scheduled": reply.scheduled_count,
        "available": reply.available_count,
        "running": reply.running_count,
        "succeeded": reply.succeeded_count,
        "dead": reply.dead_count,
        "cancelled": reply.cancelled_count,
        "enqueued_per_second": reply.enqueued_per_second,
        "completed_per_second": reply.completed_per_second,
    }


def enqueue(args, pb, grpc_pb):
    stub = grpc_pb.JobsStub(channel(args.server))
    payload = b"p" * args.payload_bytes

    numbered = iter(range(args.count))

    def job_payload():
        if not args.numbered:
            return payload
        return json.dumps({"order": f"{args.queue}-{next(numbered)}", "note": "gift wrap please"}).encode()

    def request(size):
        return pb.EnqueueBatchRequest(jobs=[pb.EnqueueRequest(queue=args.queue, payload=job_payload()) for _ in range(size)])

    full = None if args.numbered else request(args.batch)
    started = time.perf_counter()
    sent = 0
    done = 0
    in_flight = []
    while done < args.count:
        while sent < args.count and len(in_flight) < args.in_flight:
            size = min(args.batch, args.count - sent)
            batch = full if full is not None and size == args.batch else request(size)
            in_flight.append((size, stub.EnqueueBatch.future(batch)))
            sent += size
        size, future = in_flight.pop(0)
        reply = future.result()
        if len(reply.results) != size:
            raise SystemExit(f"EnqueueBatch answered {len(reply.results)} results for {size} jobs")
        done += size
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "bench": "spool-enqueue-python", "jobs": done, "seconds": round(elapsed, 3),
        "jobs_per_s": round(done / elapsed) if elapsed > 0 else None,
        "batch": args.batch, "in_flight": args.in_flight, "payload_bytes": args.payload_bytes,
    }))
    return 0


def stats(args, pb, grpc_pb):
    stub = grpc_pb.JobsStub(channel(args.server))
    print(json.dumps(stats_dict(pb, stub.QueueStats(pb.QueueStatsRequest(queue=args.queue)))))
    return 0


def run_worker(args, pb, grpc_pb):
    import grpc  # noqa: PLC0415

    stub = grpc_pb.JobsStub(channel(args.server))
    command = args.worker
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("run-worker: give the worker command after --")

    def query():
        try:
            return stats_dict(pb, stub.QueueStats(pb.QueueStatsRequest(queue=args.queue)))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    before = query()
    finished_before = (before["succeeded"] + before["dead"] + before["cancelled"]) if before else 0
    worker = None

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        started = time.perf_counter()
        log = open(args.log, "ab") if args.log else None
        worker = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                  stdout=log or sys.stderr, stderr=log or sys.stderr)
        deadline = started + args.timeout
        last = None
        while time.perf_counter() < deadline:
            last = query()
            if last is not None:
                pending = last["scheduled"] + last["available"] + last["running"]
                finished = last["succeeded"] + last["dead"] + last["cancelled"] - finished_before
                if pending == 0 and finished >= args.count:
                    break
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with status {worker.returncode} before the jobs were done")
            time.sleep(0.01)
        else:
            raise SystemExit(f"not done within {args.timeout} s: {last}")
        elapsed = time.perf_counter() - started
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    print(json.dumps({
        "bench": "spool-worker", "jobs": args.count, "seconds": round(elapsed, 3),
        "jobs_per_s": round(args.count / elapsed, 1), "ms_per_job": round(elapsed * 1000 / args.count, 3),
        "succeeded": last["succeeded"], "dead": last["dead"], "command": command,
    }))
    return 0 if last["dead"] == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stubs", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enqueue")
    e.add_argument("--server", required=True)
    e.add_argument("--queue", required=True)
    e.add_argument("--count", type=int, required=True)
    e.add_argument("--batch", type=int, default=1000)
    e.add_argument("--in-flight", type=int, default=4)
    e.add_argument("--payload-bytes", type=int, default=16)
    e.add_argument("--numbered", action="store_true")
    e.set_defaults(run=enqueue)
    s = sub.add_parser("stats")
    s.add_argument("--server", required=True)
    s.add_argument("--queue", required=True)
    s.set_defaults(run=stats)
    w = sub.add_parser("run-worker")
    w.add_argument("--server", required=True)
    w.add_argument("--queue", required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--timeout", type=float, default=600)
    w.add_argument("--log", help="file for the worker's stdout and stderr (default: this stderr)")
    w.add_argument("worker", nargs=argparse.REMAINDER)
    w.set_defaults(run=run_worker)
    args = parser.parse_args()
    pb, grpc_pb = load_stubs(args.stubs)
    return args.run(args, pb, grpc_pb)


if __name__ == "__main__":
    sys.exit(main())
