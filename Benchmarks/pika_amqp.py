#!/usr/bin/env python3
"""The pika side of `kiln-bench amqp`: the same publish and consume rows, with pika at its best
(SelectConnection, the asynchronous adapter, so that confirms and deliveries are pipelined).

    pika_amqp.py publish URL QUEUE COUNT WINDOW    # prints msgs/s
    pika_amqp.py consume URL QUEUE COUNT PREFETCH  # prints msgs/s
    pika_amqp.py latency URL QUEUE COUNT 0         # prints the median µs from publish to delivery
"""
import sys
import time

import pika

BODY = b"x" * 100


def run(url, on_channel):
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": "kiln-bench pika"}
    result = {}

    def on_open(connection):
        connection.channel(on_open_callback=lambda channel: on_channel(connection, channel, result))

    connection = pika.SelectConnection(parameters, on_open_callback=on_open)
    connection.ioloop.start()
    return result["rate"]


def publish(url, queue, count, window):
    def on_channel(connection, channel, result):
        state = {"sent": 0, "confirmed": 0, "start": 0.0}

        def send():
            while state["sent"] - state["confirmed"] < window and state["sent"] < count:
                channel.basic_publish("", queue, BODY)
                state["sent"] += 1

        def on_confirm(frame):
            method = frame.method
            if method.multiple:
                state["confirmed"] = method.delivery_tag
            else:
                state["confirmed"] += 1
            if state["confirmed"] >= count:
                result["rate"] = count / (time.perf_counter() - state["start"])
                connection.close()
                connection.ioloop.stop()
            else:
                send()

        def on_select(_):
            state["start"] = time.perf_counter()
            send()

        channel.add_on_return_callback(lambda *args: None)
        channel.confirm_delivery(on_confirm, callback=on_select)

    return run(url, on_channel)


def consume(url, queue, count, prefetch):
    def on_channel(connection, channel, result):
        state = {"received": 0, "start": 0.0}

        def on_message(channel, method, properties, body):
            channel.basic_ack(method.delivery_tag)
            state["received"] += 1
            if state["received"] == 1:
                state["start"] = time.perf_counter()
            if state["received"] >= count:
                result["rate"] = (count - 1) / (time.perf_counter() - state["start"])
                connection.close()
                connection.ioloop.stop()

        channel.basic_qos(prefetch_count=prefetch, callback=lambda _: channel.basic_consume(queue, on_message))

    return run(url, on_channel)


def latency(url, queue, count, _):
    """Publishes one message at a time on one connection and times its delivery on another."""
    publisher = pika.BlockingConnection(pika.URLParameters(url))
    receiver = pika.BlockingConnection(pika.URLParameters(url))
    channel = publisher.channel()
    deliveries = receiver.channel()
    deliveries.basic_qos(prefetch_count=10)
    messages = deliveries.consume(queue)
    samples = []
    for round in range(count + 50):
        start = time.perf_counter()
        channel.basic_publish("", queue, BODY)
        method, _, _ = next(messages)
        elapsed = (time.perf_counter() - start) * 1e6
        deliveries.basic_ack(method.delivery_tag)
        if round >= 50:
            samples.append(elapsed)
    deliveries.cancel()
    publisher.close()
    receiver.close()
    samples.sort()
    return samples[len(samples) // 2]


if __name__ == "__main__":
    command, url, queue, count, parameter = sys.argv[1:6]
    run_command = {"publish": publish, "consume": consume, "latency": latency}[command]
    print(f"{run_command(url, queue, int(count), int(parameter)):.1f}")
