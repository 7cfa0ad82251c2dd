#!/usr/bin/env python3
"""The producer side of `kiln-bench client`: against a running worker (the topology `prefix`),
times the same calls made with raw pika (direct reply-to, publisher confirms: what the client
does, written by hand) and with `kiln_client`, and prints one JSON object. The client's own cost
is also timed against a responder process that answers every invocation at once (no worker, no
VM: the two producers' difference is then not lost in the method's noise).

    client_bench.py URL PREFIX --method echo-serve --latency N --count M
    client_bench.py URL PREFIX --respond        (the responder)
"""
import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import msgpack
import pika

from kiln_client import Client

DIRECT = "amq.rabbitmq.reply-to"


class RawPika:
    """The wire contract by hand: what a producer without the client writes."""

    def __init__(self, url, prefix):
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.exchange = prefix + ".invoke"
        self.results = {}
        self.channel.basic_consume(DIRECT, self.on_reply, auto_ack=True)

    def on_reply(self, channel, deliver, properties, body):
        self.results[properties.correlation_id] = msgpack.unpackb(body, raw=False)

    def submit(self, method, args):
        job = str(uuid.uuid4())
        body = msgpack.packb({"v": 1, "id": job, "method": method, "args": args,
                              "submitted_at_us": int(time.time() * 1e6)}, use_bin_type=True)
        self.channel.basic_publish(self.exchange, method, body, pika.BasicProperties(
            content_type="application/msgpack", message_id=job, correlation_id=job, reply_to=DIRECT, delivery_mode=2),
            mandatory=True)
        return job

    def wait(self, job):
        while job not in self.results:
            self.connection.process_data_events(time_limit=1)
        result = self.results.pop(job)
        assert result["status"] == "ok", result
        return result["output"]


def respond(url, prefix):
    """Answers every invocation on PREFIX.invoke with an ok result echoing its args, at once."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(prefix + ".invoke", "topic", auto_delete=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, prefix + ".invoke", "#")

    def on_invocation(ch, deliver, properties, body):
        invocation = msgpack.unpackb(body, raw=False)
        result = {"v": 1, "id": invocation["id"], "method": invocation["method"], "status": "ok", "output": invocation.get("args"),
                  "attempt": 1, "timing_us": {"schedule": 0, "provision": 0, "exec": 0, "total": 0}, "worker": "responder",
                  "finished_at_us": int(time.time() * 1e6)}
        if properties.reply_to:
            ch.basic_publish("", properties.reply_to, msgpack.packb(result, use_bin_type=True),
                             pika.BasicProperties(content_type="application/msgpack", correlation_id=properties.correlation_id))

    channel.basic_consume(queue, on_invocation, auto_ack=True)
    print("ready", flush=True)
    channel.start_consuming()


def interleaved(raw, kiln, method, args, count):
    raw_rt, client_rt = [], []
    for _ in range(count):
        start = time.perf_counter()
        raw.wait(raw.submit(method, args))
        raw_rt.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        kiln.invoke(method, args, timeout=60)
        client_rt.append((time.perf_counter() - start) * 1e6)
    return raw_rt, client_rt


def median(samples):
    ordered = sorted(samples)
    return ordered[len(ordered) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--method", default="echo-serve")
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--respond", action="store_true", help="be the responder")
    options = parser.parse_args()
    if options.respond:
        respond(options.url, options.prefix)
        return
    args = {"text": "hello"}

    # The client's own cost: both producers against the instant responder.
    quiet = "kbench-responder-" + uuid.uuid4().hex[:6]
    responder = subprocess.Popen([sys.executable, os.path.abspath(__file__), options.url, quiet, "--respond"], stdout=subprocess.PIPE)
    try:
        assert responder.stdout.readline().strip() == b"ready"
        raw = RawPika(options.url, quiet)
        kiln = Client(options.url, prefix=quiet)
        interleaved(raw, kiln, "echo", args, 500)  # warm up
        bare_raw, bare_client = interleaved(raw, kiln, "echo", args, options.latency * 4)
        kiln.close()
        raw.connection.close()
    finally:
        responder.kill()
        responder.wait()

    raw = RawPika(options.url, options.prefix)
    kiln = Client(options.url, prefix=options.prefix)
    for _ in range(100):  # warm up both paths and the worker's pool
        raw.wait(raw.submit(options.method, args))
        kiln.invoke(options.method, args, timeout=60)

    # Interleaved, so that both meet the same host at the same time.
    raw_rt, client_rt = interleaved(raw, kiln, options.method, args, options.latency)

    # A raw burst: everything published, then every result collected.
    start = time.perf_counter()
    jobs = [raw.submit(options.method, {"i": index}) for index in range(options.count)]
    for job in jobs:
        raw.wait(job)
    raw_burst = options.count / (time.perf_counter() - start)

    start = time.perf_counter()
    outputs = list(kiln.map(options.method, ({"i": index} for index in range(options.count)), concurrency=options.concurrency, timeout=120))
    map_burst = options.count / (time.perf_counter() - start)
    assert outputs == [{"i": index} for index in range(options.count)]

    print(json.dumps({
        "raw_round_trip_us": raw_rt, "client_round_trip_us": client_rt,
        "raw_burst_per_s": raw_burst, "map_per_s": map_burst,
        "bare_raw_round_trip_us": bare_raw, "bare_client_round_trip_us": bare_client,
    }))
    kiln.close()
    raw.connection.close()


if __name__ == "__main__":
    main()
