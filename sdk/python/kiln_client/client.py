"""The blocking client, on pika: one connection and one channel, publisher confirms, results
through RabbitMQ's direct reply-to (no queue declared per call). Like pika's BlockingConnection
it is not thread-safe: use one client per thread."""

import os
import socket
import time
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional

import pika
import pika.exceptions

from ._wire import (
    CONTENT_TYPE, DIRECT_REPLY_TO, BrokerUnavailable, ConnectionLost, KilnError, Result, ResultTimeout, Unroutable,
    current_traceparent, encode_invocation, new_id, redacted, timeout_after,
)

__all__ = ["Client", "Pending"]


class Pending:
    """An invocation in flight; its result once it came back."""

    def __init__(self, client: "Client", invocation_id: str, method: str):
        self._client = client
        self.id = invocation_id
        self.method = method
        self.submitted_at = time.monotonic()

    def done(self) -> bool:
        """Whether its result has arrived (reads what the broker has sent so far)."""
        return self._client._poll(self.id)

    def result(self, timeout: Optional[float] = None) -> Result:
        """Waits up to ``timeout`` seconds (None: for ever) for the result and returns it when it
        is ``ok``; raises ``MethodError``, ``MethodTimeout`` or ``Rejected`` (carrying it)
        otherwise, and ``ResultTimeout`` when none came."""
        return self._client._wait(self.id, timeout_after(timeout), timeout).raise_for_status()

    def __repr__(self) -> str:
        return "<Pending %s %s>" % (self.method, self.id)

    def __del__(self) -> None:
        # Dropped unread: its result, when it comes, is not kept.
        self._client._forget(self.id)


class Client:
    """Calls Kiln methods over RabbitMQ.

    >>> with Client("amqp://guest:guest@127.0.0.1:5672/%2f") as kiln:
    ...     kiln.invoke("echo", {"text": "hi"}, timeout=30).output
    {'text': 'hi'}

    ``prefix`` names the topology (``kiln.invoke`` …) a worker declared; a broker without it is an
    error at once. ``confirm`` waits for the broker to take each invocation before ``submit``
    returns (on by default: a returned or refused invocation is an error, not a silent loss).
    """

    def __init__(self, url: str, *, prefix: str = "kiln", confirm: bool = True, connect_timeout: float = 10.0):
        self.url = url
        self.prefix = prefix
        self._exchange = prefix + ".invoke"
        #: How the broker's management lists this connection.
        self.connection_name = "kiln-client %s:%d %s" % (socket.gethostname(), os.getpid(), new_id()[:8])
        parameters = pika.URLParameters(url)
        parameters.client_properties = {"connection_name": self.connection_name, "product": "kiln_client (pika)"}
        parameters.connection_attempts = 1
        parameters.socket_timeout = connect_timeout
        parameters.stack_timeout = connect_timeout
        parameters.blocked_connection_timeout = 60
        try:
            self._connection = pika.BlockingConnection(parameters)
        except pika.exceptions.AMQPError as error:
            raise BrokerUnavailable("cannot connect to %s: %s" % (redacted(url), _describe(error))) from None
        except OSError as error:
            raise BrokerUnavailable("cannot connect to %s: %s" % (redacted(url), error)) from None
        try:
            self._channel = self._connection.channel()
            try:
                self._channel.exchange_declare(self._exchange, passive=True)
            except pika.exceptions.ChannelClosedByBroker as error:
                raise KilnError(
                    "the broker at %s has no exchange %s: no worker has declared Kiln's topology with prefix '%s' there "
                    "(start `kiln worker` with it, or load deploy/rabbitmq/definitions.json) [%s]"
                    % (redacted(url), self._exchange, prefix, _describe(error))) from None
            if confirm:
                self._channel.confirm_delivery()
            # Direct reply-to: consumed (without acks) before the first publish names it.
            self._channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, auto_ack=True)
        except BaseException:
            self._close_quietly()
            raise
        self._awaited: set = set()
        self._arrived: Dict[str, Result] = {}
        self._broken: Optional[ConnectionLost] = None

    # --- calling --------------------------------------------------------------------------

    def invoke(self, method: str, args: Any = None, *, timeout: Optional[float] = None,
               context: Optional[Mapping[str, Any]] = None, deadline_ms: Optional[int] = None,
               affinity: Optional[str] = None, resources: Optional[Mapping[str, int]] = None) -> Result:
        """Runs ``method`` with ``args`` and waits for its result (see ``Pending.result``)."""
        pending = self.submit(method, args, context=context, deadline_ms=deadline_ms, affinity=affinity, resources=resources)
        return pending.result(timeout)

    def submit(self, method: str, args: Any = None, *, context: Optional[Mapping[str, Any]] = None,
               deadline_ms: Optional[int] = None, affinity: Optional[str] = None,
               resources: Optional[Mapping[str, int]] = None) -> Pending:
        """Publishes an invocation and returns at once (after the broker's confirm)."""
        invocation_id = new_id()
        body = encode_invocation(invocation_id, method, args, context=context, deadline_ms=deadline_ms, affinity=affinity,
                                 resources=resources, traceparent=current_traceparent())
        self._awaited.add(invocation_id)
        try:
            self._publish(method, body, invocation_id, reply=True)
        except BaseException:
            self._awaited.discard(invocation_id)
            raise
        return Pending(self, invocation_id, method)

    def map(self, method: str, iterable: Iterable[Any], *, concurrency: int = 64,
            timeout: Optional[float] = None) -> Iterator[Any]:
        """Runs ``method`` once per item of ``iterable`` (each item its args), up to
        ``concurrency`` at a time, and yields the outputs in the items' order. ``timeout`` bounds
        each result, counted from its submit. A failed item raises its error when its turn comes."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        window = []
        items = iter(iterable)
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < concurrency:
                    try:
                        item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    window.append(self.submit(method, item))
                if not window:
                    return
                pending = window.pop(0)
                deadline = None if timeout is None else pending.submitted_at + timeout
                yield self._wait(pending.id, deadline, timeout).raise_for_status().output
        finally:
            for pending in window:  # an error or an abandoned loop: their results are not kept
                self._forget(pending.id)

    def send(self, method: str, args: Any = None, *, context: Optional[Mapping[str, Any]] = None,
             deadline_ms: Optional[int] = None, affinity: Optional[str] = None,
             resources: Optional[Mapping[str, int]] = None) -> str:
        """Publishes an invocation whose result nobody here waits for (it goes to
        ``kiln.results`` only); returns its id."""
        invocation_id = new_id()
        body = encode_invocation(invocation_id, method, args, context=context, deadline_ms=deadline_ms, affinity=affinity,
                                 resources=resources, traceparent=current_traceparent())
        self._publish(method, body, invocation_id, reply=False)
        return invocation_id

    # --- the connection ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; results not yet read are dropped."""
        self._close_quietly()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _publish(self, method: str, body: bytes, invocation_id: str, reply: bool) -> None:
        self._raise_if_broken()
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE, message_id=invocation_id, correlation_id=invocation_id,
            reply_to=DIRECT_REPLY_TO if reply else None, delivery_mode=2)
        try:
            self._channel.basic_publish(self._exchange, method, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise Unroutable("no queue takes method %s from %s: the broker returned it (is %s.invocations bound with '#'?)"
                             % (method, self._exchange, self.prefix)) from None
        except pika.exceptions.NackError:
            raise KilnError("the broker refused to take the invocation of %s (basic.nack)" % method) from None
        except (pika.exceptions.AMQPError, OSError) as error:
            raise self._lost(error) from None

    def _on_reply(self, channel: Any, deliver: Any, properties: Any, body: bytes) -> None:
        invocation_id = properties.correlation_id
        if invocation_id not in self._awaited:
            return  # a result nobody here waits for (timed out, or not ours)
        try:
            result = Result.from_body(body)
        except KilnError:
            return
        self._arrived[invocation_id] = result

    def _forget(self, invocation_id: str) -> None:
        self._awaited.discard(invocation_id)
        self._arrived.pop(invocation_id, None)

    def _poll(self, invocation_id: str) -> bool:
        if invocation_id not in self._arrived:
            self._pump(0)
        return invocation_id in self._arrived

    def _wait(self, invocation_id: str, deadline: Optional[float], timeout: Optional[float]) -> Result:
        while invocation_id not in self._arrived:
            if invocation_id not in self._awaited:
                raise KilnError("invocation %s is not awaited by this client (its result was already read)" % invocation_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._awaited.discard(invocation_id)
                raise ResultTimeout("no result for %s within %s s" % (invocation_id, timeout), invocation_id)
            self._pump(1.0 if remaining is None else min(remaining, 1.0))
        self._awaited.discard(invocation_id)
        return self._arrived.pop(invocation_id)

    def _pump(self, seconds: float) -> None:
        self._raise_if_broken()
        try:
            self._connection.process_data_events(time_limit=seconds)
        except (pika.exceptions.AMQPError, OSError) as error:
            raise self._lost(error) from None

    def _lost(self, error: BaseException) -> ConnectionLost:
        count = len(self._awaited)
        self._broken = ConnectionLost("the connection to %s was lost (%s); %d awaited result(s) will not come back here"
                                      % (redacted(self.url), _describe(error), count))
        self._awaited.clear()
        self._close_quietly()
        return self._broken

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _close_quietly(self) -> None:
        connection = getattr(self, "_connection", None)
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                pass


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 300 else text[:300] + "…"
