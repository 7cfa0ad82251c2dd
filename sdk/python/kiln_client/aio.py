"""The asyncio client, on aio-pika (``pip install ./sdk/python[asyncio]``): the blocking
client's methods as coroutines, on one connection and channel with publisher confirms and
direct reply-to."""

import asyncio
import time
from typing import Any, AsyncIterator, Dict, Iterable, Mapping, Optional

try:
    import aio_pika
    import aio_pika.exceptions
    import aiormq.exceptions
except ImportError as error:  # pragma: no cover - a clear message instead of a bare ImportError
    raise ImportError("kiln_client.aio needs aio-pika: pip install './sdk/python[asyncio]'") from error

from ._wire import (
    CONTENT_TYPE, DIRECT_REPLY_TO, BrokerUnavailable, ConnectionLost, KilnError, Result, ResultTimeout, Unroutable,
    current_traceparent, encode_invocation, new_id, redacted,
)

__all__ = ["AsyncClient", "AsyncPending"]


class AsyncPending:
    """An invocation in flight; ``await pending.result(timeout)`` for its result."""

    def __init__(self, client: "AsyncClient", invocation_id: str, method: str, future: "asyncio.Future[Result]"):
        self._client = client
        self.id = invocation_id
        self.method = method
        self.submitted_at = time.monotonic()
        self._future = future

    def done(self) -> bool:
        """Whether its result has arrived."""
        return self._future.done()

    async def result(self, timeout: Optional[float] = None) -> Result:
        """The result when ``ok``; ``MethodError``, ``MethodTimeout`` or ``Rejected`` otherwise,
        ``ResultTimeout`` when none came within ``timeout`` seconds."""
        try:
            result = await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except asyncio.TimeoutError:
            self._client._forget(self.id)
            raise ResultTimeout("no result for %s within %s s" % (self.id, timeout), self.id) from None
        return result.raise_for_status()


class AsyncClient:
    """Calls Kiln methods over RabbitMQ from asyncio.

    >>> async with await AsyncClient.connect("amqp://guest:guest@127.0.0.1:5672/%2f") as kiln:
    ...     (await kiln.invoke("echo", {"text": "hi"}, timeout=30)).output
    {'text': 'hi'}
    """

    def __init__(self) -> None:
        raise TypeError("use `await AsyncClient.connect(url)`")

    @classmethod
    async def connect(cls, url: str, *, prefix: str = "kiln", confirm: bool = True, connect_timeout: float = 10.0) -> "AsyncClient":
        """A client connected to ``url``, checked to have ``prefix``'s topology."""
        self = cls.__new__(cls)
        self.url, self.prefix = url, prefix
        self._futures: Dict[str, "asyncio.Future[Result]"] = {}
        self._broken: Optional[ConnectionLost] = None
        try:
            self._connection = await aio_pika.connect(url, timeout=connect_timeout)
        except (aio_pika.exceptions.AMQPException, OSError, asyncio.TimeoutError) as error:
            raise BrokerUnavailable("cannot connect to %s: %s" % (redacted(url), error or type(error).__name__)) from None
        try:
            self._channel = await self._connection.channel(publisher_confirms=confirm, on_return_raises=True)
            try:
                self._exchange = await self._channel.get_exchange(prefix + ".invoke", ensure=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise KilnError(
                    "the broker at %s has no exchange %s.invoke: no worker has declared Kiln's topology with prefix '%s' there "
                    "(start `kiln worker` with it, or load deploy/rabbitmq/definitions.json)" % (redacted(url), prefix, prefix)) from None
            replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            await replies.consume(self._on_reply, no_ack=True)
            self._connection.close_callbacks.add(self._on_close)
        except BaseException:
            await self._connection.close()
            raise
        return self

    async def invoke(self, method: str, args: Any = None, *, timeout: Optional[float] = None,
                     context: Optional[Mapping[str, Any]] = None, deadline_ms: Optional[int] = None,
                     affinity: Optional[str] = None, resources: Optional[Mapping[str, int]] = None) -> Result:
        """Runs ``method`` with ``args`` and waits for its result."""
        pending = await self.submit(method, args, context=context, deadline_ms=deadline_ms, affinity=affinity, resources=resources)
        return await pending.result(timeout)

    async def submit(self, method: str, args: Any = None, *, context: Optional[Mapping[str, Any]] = None,
                     deadline_ms: Optional[int] = None, affinity: Optional[str] = None,
                     resources: Optional[Mapping[str, int]] = None) -> AsyncPending:
        """Publishes an invocation (after the broker's confirm) and returns at once."""
        invocation_id = new_id()
        body = encode_invocation(invocation_id, method, args, context=context, deadline_ms=deadline_ms, affinity=affinity,
                                 resources=resources, traceparent=current_traceparent())
        future: "asyncio.Future[Result]" = asyncio.get_running_loop().create_future()
        self._futures[invocation_id] = future
        try:
            await self._publish(method, body, invocation_id, reply=True)
        except BaseException:
            self._futures.pop(invocation_id, None)
            raise
        return AsyncPending(self, invocation_id, method, future)

    async def map(self, method: str, iterable: Iterable[Any], *, concurrency: int = 64,
                  timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """Runs ``method`` once per item, up to ``concurrency`` at a time; yields the outputs in
        the items' order. ``timeout`` bounds each result, counted from its submit."""
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
                    window.append(await self.submit(method, item))
                if not window:
                    return
                pending = window.pop(0)
                remaining = None if timeout is None else max(0.0, pending.submitted_at + timeout - time.monotonic())
                yield (await pending.result(remaining)).output
        finally:
            for pending in window:
                self._forget(pending.id)

    async def send(self, method: str, args: Any = None, *, context: Optional[Mapping[str, Any]] = None,
                   deadline_ms: Optional[int] = None, affinity: Optional[str] = None,
                   resources: Optional[Mapping[str, int]] = None) -> str:
        """Publishes an invocation whose result goes to ``kiln.results`` only; returns its id."""
        invocation_id = new_id()
        body = encode_invocation(invocation_id, method, args, context=context, deadline_ms=deadline_ms, affinity=affinity,
                                 resources=resources, traceparent=current_traceparent())
        await self._publish(method, body, invocation_id, reply=False)
        return invocation_id

    async def close(self) -> None:
        """Closes the connection; results still awaited fail with ``ConnectionLost``."""
        if not self._connection.is_closed:
            await self._connection.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _publish(self, method: str, body: bytes, invocation_id: str, reply: bool) -> None:
        if self._broken is not None:
            raise self._broken
        message = aio_pika.Message(body, content_type=CONTENT_TYPE, message_id=invocation_id, correlation_id=invocation_id,
                                   reply_to=DIRECT_REPLY_TO if reply else None, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await self._exchange.publish(message, routing_key=method, mandatory=True)
        except aio_pika.exceptions.DeliveryError as error:
            if error.message is not None:
                raise Unroutable("no queue takes method %s from %s.invoke: the broker returned it" % (method, self.prefix)) from None
            raise KilnError("the broker refused to take the invocation of %s" % method) from None
        except (aio_pika.exceptions.AMQPException, OSError) as error:
            raise self._lost(error) from None

    async def _on_reply(self, message: "aio_pika.abc.AbstractIncomingMessage") -> None:
        future = self._futures.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # a result nobody here waits for
        try:
            future.set_result(Result.from_body(message.body))
        except KilnError as error:
            future.set_exception(error)

    def _on_close(self, sender: Any, error: Optional[BaseException] = None) -> None:
        if error is not None or self._futures:
            self._lost(error or ConnectionError("closed"))

    def _lost(self, error: BaseException) -> ConnectionLost:
        self._broken = ConnectionLost("the connection to %s was lost (%s); %d awaited result(s) will not come back here"
                                      % (redacted(self.url), error, len(self._futures)))
        for future in self._futures.values():
            if not future.done():
                future.set_exception(self._broken)
        self._futures.clear()
        return self._broken

    def _forget(self, invocation_id: str) -> None:
        future = self._futures.pop(invocation_id, None)
        if future is not None and not future.done():
            future.cancel()
