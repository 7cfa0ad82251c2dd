#!/usr/bin/env python3
"""An independent AMQP peer for Kiln's interop tests: pika and msgpack, no Kiln code.

    pika_peer.py publish URL EXCHANGE ROUTING_KEY COUNT   # COUNT invocations, confirmed
    pika_peer.py consume URL QUEUE COUNT                  # prints what it read as one JSON object
"""
import json
import pathlib
import sys

import jsonschema
import msgpack
import pika

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"
sys.path.insert(0, str(SCHEMAS / "vectors"))
import tagged_json  # noqa: E402  (the JSON view of MessagePack, shared with the vector tests)


def connect(url):
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": "kiln-interop pika peer"}
    return pika.BlockingConnection(parameters)


def publish(url, exchange, routing_key, count):
    connection = connect(url)
    channel = connection.channel()
    channel.confirm_delivery()
    for index in range(count):
        invocation = {"v": 1, "id": f"pika-{index}", "method": routing_key, "args": {"n": index, "blob": bytes([index % 256]) * 3}}
        channel.basic_publish(
            exchange, routing_key, msgpack.packb(invocation, use_bin_type=True),
            pika.BasicProperties(content_type="application/msgpack", delivery_mode=2, message_id=f"pika-{index}"),
            mandatory=True,
        )
    connection.close()


def consume(url, queue, count):
    schema = json.loads((SCHEMAS / "invocation.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    connection = connect(url)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=50)
    seen = {"ids": [], "content_types": [], "args": []}
    for method, properties, body in channel.consume(queue, inactivity_timeout=10):
        if method is None:
            break
        view = tagged_json.to_view(tagged_json.unpack(body))
        validator.validate(view)
        seen["ids"].append(view["id"])
        seen["content_types"].append(properties.content_type)
        seen["args"].append(view.get("args"))
        channel.basic_ack(method.delivery_tag)
        if len(seen["ids"]) == count:
            break
    channel.cancel()
    connection.close()
    print("RESULT " + json.dumps(seen))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "publish":
        publish(arguments[0], arguments[1], arguments[2], int(arguments[3]))
    elif command == "consume":
        consume(arguments[0], arguments[1], int(arguments[2]))
    else:
        sys.exit(f"unknown command {command}")
