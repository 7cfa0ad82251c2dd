#!/usr/bin/env python3
"""The Celery side of `kiln-bench e2e` and `kiln-bench python`: a prefork Celery worker on the
same broker runs a task (the no-op, or one of the example Python methods); this script times
sequential round trips and the throughput of a burst, as Kiln's side does, and prints one JSON
object. With --start-only it times the worker's start to its first task instead.

    celery_bench.py URL --latency N --count M --concurrency C [--app celery_python --task py_thumbnail --args FILE]

The worker is started here, in its own process group, and stopped by that group's id (its
prefork children with it), whatever happens.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def start_worker(url, queue, concurrency, log, app="celery_noop"):
    environment = dict(os.environ, KILN_BENCH_CELERY_BROKER=url, KILN_BENCH_CELERY_QUEUE=queue)
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool=prefork",
               f"--concurrency={concurrency}", "--loglevel=warning", "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-n", f"kiln-bench-{queue}@%h"]
    return subprocess.Popen(command, cwd=HERE, env=environment, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_worker(worker):
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count())
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--app", default="celery_noop", help="the module of the Celery app")
    parser.add_argument("--task", default="noop")
    parser.add_argument("--args", help="a file holding the task's argument as MessagePack (default: none)")
    parser.add_argument("--start-only", action="store_true", help="time the worker's start to its first task's result")
    parser.add_argument("--quorum", action="store_true", help="a quorum queue with confirmed publishes (celery_noop only)")
    options = parser.parse_args()

    queue = f"kiln-bench-celery-{uuid.uuid4().hex[:8]}"
    os.environ["KILN_BENCH_CELERY_BROKER"] = options.url
    os.environ["KILN_BENCH_CELERY_QUEUE"] = queue
    if options.quorum:
        os.environ["KILN_BENCH_CELERY_QUORUM"] = "1"
    sys.path.insert(0, HERE)
    from celery.result import ResultSet
    module = __import__(options.app)
    app = module.app
    task = app.tasks[options.task]
    arguments = ()
    if options.args:
        import msgpack
        with open(options.args, "rb") as file:
            arguments = (msgpack.unpackb(file.read()),)

    def submit():
        return task.apply_async(arguments)

    with open(options.log, "w") as log:
        started = time.perf_counter()
        worker = start_worker(options.url, queue, options.concurrency, log, options.app)
        try:
            if options.start_only:
                submit().get(timeout=120)
                print(json.dumps({"start_us": (time.perf_counter() - started) * 1e6, "celery": __import__("celery").__version__}))
                return
            # Ready when a task comes back; the first also warms the result consumer.
            submit().get(timeout=120)
            for _ in range(50):
                submit().get(timeout=10)

            latencies = []
            for _ in range(options.latency):
                start = time.perf_counter()
                submit().get(timeout=10)
                latencies.append((time.perf_counter() - start) * 1e6)

            # Collected as Celery collects many results best: joined natively on the result
            # consumer (one AsyncResult.get() after another drains at about a third of the rate).
            start = time.perf_counter()
            pending = ResultSet([submit() for _ in range(options.count)])
            pending.join_native(timeout=120)
            elapsed = time.perf_counter() - start
        finally:
            stop_worker(worker)
            with app.connection_for_write() as connection:
                connection.default_channel.queue_delete(queue)
    print(json.dumps({"latency_us": latencies, "throughput": options.count / elapsed,
                      "celery": __import__("celery").__version__, "concurrency": options.concurrency,
                      "queue_type": "quorum" if options.quorum else "classic"}))


if __name__ == "__main__":
    main()
