"""The Python producer client (sdk/python/kiln_client, installed into the test venv as a user
installs it) against a real `kiln worker` (the process backend, for speed) on the broker
`make test` starts: results, errors, many in flight, fire and forget, and the faults a producer
meets (no broker, no topology, an unroutable method, a connection lost while results are due)."""

import asyncio
import subprocess
import tempfile
import time
import uuid

import msgpack
import pika
import pytest

import kiln_client
from kiln_client import (
    BrokerUnavailable, Client, ConnectionLost, InvalidInvocation, KilnError, MethodError, MethodTimeout, Rejected,
    ResultTimeout, Unroutable,
)

from conftest import ROOT, URL, start_worker, stop


@pytest.fixture(scope="module")
def worker():
    """A worker on a topology prefix of its own; yields the prefix."""
    prefix = "pyclient-" + uuid.uuid4().hex[:6]
    process = start_worker(prefix, tempfile.mkdtemp(prefix="kiln-pyclient-"), host="pyclient-host")
    try:
        yield prefix
    finally:
        stop(process)


@pytest.fixture
def kiln(worker):
    with Client(URL, prefix=worker) as client:
        yield client


def test_invoke_returns_the_result(kiln):
    result = kiln.invoke("echo", {"text": "hi", "n": 3, "raw": b"\x00\x01"}, timeout=60)
    assert result.status == "ok"
    assert result.output == {"text": "hi", "n": 3, "raw": b"\x00\x01"}
    assert result.method == "echo" and result.attempt == 1 and result.id
    assert result.vm["backend"] == "process"
    assert result.timing["total"] >= result.timing["exec"] > 0
    assert result.worker.startswith("pyclient-host-") and result.host == "pyclient-host"


def test_context_goes_in_and_comes_back(kiln):
    result = kiln.invoke("wordcount", {"text": "one two"}, context={"locals": {"seen": 1}}, timeout=60)
    assert result.output["words"] == 2
    assert result.context == {"locals": {"seen": 1}}


def test_errors_carry_their_result(kiln):
    with pytest.raises(MethodError) as failed:
        kiln.invoke("fail", {"message": "on purpose"}, timeout=60)
    assert failed.value.kind == "exit" and failed.value.exit_code == 3
    assert "on purpose" in failed.value.stderr
    assert failed.value.result.status == "error"

    with pytest.raises(MethodTimeout) as slow:
        kiln.invoke("sleep", {"ms": 10_000}, deadline_ms=300, timeout=60)
    assert slow.value.result.status == "timeout" and slow.value.kind == "deadline"

    with pytest.raises(Rejected) as unknown:
        kiln.invoke("ecoh", timeout=60)
    assert unknown.value.kind == "unknown_method"
    assert "did you mean echo?" in str(unknown.value)


def test_a_result_that_does_not_come_in_time_and_comes_later_is_ignored(kiln):
    with pytest.raises(ResultTimeout) as late:
        kiln.invoke("sleep", {"ms": 1_500}, timeout=0.2)
    assert late.value.id
    # The late result arrives while the next call waits: it is dropped, this one answered.
    assert kiln.invoke("sleep", {"ms": 2_500}, timeout=60).output == {"slept_ms": 2_500}
    assert not kiln._arrived and not kiln._awaited


def test_many_in_flight_and_map_in_order(kiln):
    pending = [kiln.submit("echo-serve", {"i": index}) for index in range(50)]
    assert len({p.id for p in pending}) == 50
    assert [p.result(timeout=60).output for p in reversed(pending)] == [{"i": index} for index in reversed(range(50))]
    outputs = list(kiln.map("echo-serve", ({"i": index} for index in range(300)), concurrency=32, timeout=60))
    assert outputs == [{"i": index} for index in range(300)]


def test_map_raises_the_failure_of_an_item_in_its_turn(kiln):
    items = [{"words": 3} if index == 3 else {"text": "a b"} for index in range(6)]
    outputs = kiln.map("wordcount", items, concurrency=4, timeout=60)
    assert [next(outputs)["words"] for _ in range(3)] == [2, 2, 2]
    with pytest.raises(MethodError) as failed:
        next(outputs)  # wordcount needs text
    assert failed.value.kind == "method_error"
    outputs.close()
    assert not kiln._awaited, "the abandoned items are not kept"


def test_send_fires_and_forgets(worker):
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    tap = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(tap, worker + ".results", "echo.#")
    with Client(URL, prefix=worker) as kiln:
        sent = kiln.send("echo", {"fired": True})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(tap, auto_ack=True)
        if body and msgpack.unpackb(body, raw=False)["id"] == sent:
            break
        connection.process_data_events(0.1)
    else:
        pytest.fail("the sent invocation's result never reached %s.results" % worker)
    connection.close()


def test_args_that_messagepack_cannot_carry_fail_before_publishing(kiln):
    with pytest.raises(InvalidInvocation, match="cannot be sent as MessagePack"):
        kiln.submit("echo", {"a set": {1, 2}})
    with pytest.raises(InvalidInvocation, match="method must be a name"):
        kiln.submit("x" * 65)
    with pytest.raises(InvalidInvocation, match="deadline_ms"):
        kiln.submit("echo", deadline_ms=0)


def test_a_broker_that_is_down_is_a_clear_error_naming_it():
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as down:
        Client("amqp://guest:secret@127.0.0.1:1/%2f", connect_timeout=5)
    assert "127.0.0.1:1" in str(down.value) and "secret" not in str(down.value)
    assert time.monotonic() - started < 60, "no hang"


def test_a_missing_topology_and_an_unroutable_method_are_errors(worker):
    with pytest.raises(KilnError, match="has no exchange nowhere-[0-9a-f]+.invoke"):
        Client(URL, prefix="nowhere-" + uuid.uuid4().hex[:6])
    # An exchange no queue is bound to: the broker returns the invocation.
    prefix = "unbound-" + uuid.uuid4().hex[:6]
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(prefix + ".invoke", "topic", auto_delete=True)
    try:
        with Client(URL, prefix=prefix) as kiln:
            with pytest.raises(Unroutable, match="no queue takes method echo"):
                kiln.submit("echo")
    finally:
        channel.exchange_delete(prefix + ".invoke")
        connection.close()


def test_a_connection_lost_while_results_are_due_fails_them_clearly(worker):
    kiln = Client(URL, prefix=worker)
    pending = kiln.submit("sleep", {"ms": 3_000})
    # The broker closes the client's connection, as a broker restart would.
    script = ROOT / "deploy" / "local" / "rabbitmq.sh"
    listing = subprocess.run([str(script), "ctl", "list_connections", "pid", "client_properties", "--no-table-headers", "--quiet"],
                             capture_output=True, text=True, check=True).stdout
    ours = [line.split("\t")[0] for line in listing.splitlines() if kiln.connection_name in line]
    assert ours, listing
    subprocess.run([str(script), "ctl", "close_connection", ours[0], "closed by the test"], check=True, capture_output=True)
    with pytest.raises(ConnectionLost, match="1 awaited result"):
        pending.result(timeout=60)
    with pytest.raises(ConnectionLost):
        kiln.submit("echo")
    kiln.close()


def test_the_asyncio_client(worker):
    async def main():
        async with await kiln_client.AsyncClient.connect(URL, prefix=worker) as kiln:
            result = await kiln.invoke("echo", {"text": "async"}, timeout=60)
            assert result.output == {"text": "async"}
            outputs = [output async for output in kiln.map("echo-serve", ({"i": i} for i in range(100)), concurrency=16, timeout=60)]
            assert outputs == [{"i": i} for i in range(100)]
            pending = await kiln.submit("sleep", {"ms": 1})
            assert (await pending.result(60)).status == "ok" and pending.done()
            with pytest.raises(MethodError):
                await kiln.invoke("fail", {"message": "x"}, timeout=60)
            with pytest.raises(ResultTimeout):
                await kiln.invoke("sleep", {"ms": 1_500}, timeout=0.1)
            assert await kiln.send("echo", {"fired": True})
        with pytest.raises(BrokerUnavailable):
            await kiln_client.AsyncClient.connect("amqp://guest:guest@127.0.0.1:1/%2f", connect_timeout=5)

    asyncio.run(main())
