"""The wire contract v1 as the clients speak it (schemas/invocation.schema.json and
schemas/result.schema.json): invocations written as MessagePack maps, results read into `Result`,
and the errors a result that is not ``ok`` becomes. Nothing here does I/O."""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import msgpack

__all__ = [
    "KilnError", "BrokerUnavailable", "ConnectionLost", "Unroutable", "InvalidInvocation",
    "ResultTimeout", "MethodError", "MethodTimeout", "Rejected", "Result",
]

#: The AMQP content type of every body.
CONTENT_TYPE = "application/msgpack"
#: RabbitMQ's direct reply-to pseudo-queue: results come back without a queue per call.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: The longest method name and id a worker takes (a manifest's names; an AMQP short string).
MAX_METHOD_BYTES = 64
MAX_ID_BYTES = 255


class KilnError(Exception):
    """Anything that went wrong calling Kiln."""


class BrokerUnavailable(KilnError):
    """The broker could not be reached or refused the connection; the message names the URL
    (without its password)."""


class ConnectionLost(KilnError):
    """The connection to the broker ended while results were awaited. The invocations already
    published still run (at least once) and their results still go to ``kiln.results``, but
    their replies to this client are lost with the connection."""


class Unroutable(KilnError):
    """The broker returned the invocation: no queue takes this method (is a worker's topology
    declared with this prefix?)."""


class InvalidInvocation(KilnError, ValueError):
    """The invocation cannot be sent (a name out of range, args MessagePack cannot carry);
    nothing was published."""


class ResultTimeout(KilnError, TimeoutError):
    """No result arrived in time. The invocation may still run; its result then goes to
    ``kiln.results`` (and is ignored here)."""

    def __init__(self, message: str, invocation_id: str):
        super().__init__(message)
        self.id = invocation_id


@dataclass(frozen=True)
class Result:
    """A result as a worker published it (schemas/result.schema.json)."""

    id: str
    method: str
    status: str
    output: Any = None
    context: Optional[Dict[str, Any]] = None
    error: Optional[Dict[str, Any]] = None
    attempt: int = 1
    vm: Optional[Dict[str, Any]] = None
    timing: Dict[str, int] = field(default_factory=dict)
    predicted_us: Optional[int] = None
    worker: str = ""
    finished_at_us: int = 0
    #: The worker's host id (``worker.host``); empty from workers before fleets.
    host: str = ""
    #: What it consumed (``cpu_us``, ``host_cpu_us``, ``peak_memory_kb``, ``bytes_in``, ``bytes_out``, each
    #: optional); empty from workers before usage accounting.
    usage: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: bytes) -> "Result":
        """Reads a result body; a body that is not one is a ``KilnError``."""
        try:
            value = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as error:
            raise KilnError("a result that is not MessagePack: %s" % error) from None
        if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not isinstance(value.get("status"), str):
            raise KilnError("a result without an id and a status")
        return cls(
            id=value["id"], method=str(value.get("method", "")), status=value["status"], output=value.get("output"),
            context=value.get("context"), error=value.get("error"), attempt=int(value.get("attempt") or 1),
            vm=value.get("vm"), timing=dict(value.get("timing_us") or {}), predicted_us=value.get("predicted_us"),
            worker=str(value.get("worker", "")), finished_at_us=int(value.get("finished_at_us") or 0),
            host=str(value.get("host", "")),
            usage=dict(value.get("usage") or {}) if isinstance(value.get("usage"), dict) else {},
        )

    def raise_for_status(self) -> "Result":
        """Itself when ``ok``; else the matching error (``MethodError``, ``MethodTimeout``,
        ``Rejected``), which carries it."""
        if self.status == "ok":
            return self
        if self.status == "timeout":
            raise MethodTimeout(self)
        if self.status == "rejected":
            raise Rejected(self)
        raise MethodError(self)


class _ResultError(KilnError):
    """A result that is not ``ok``: the error carries it (``.result``) and its error's fields."""

    def __init__(self, result: Result):
        error = result.error or {}
        self.result = result
        self.kind: str = str(error.get("kind", ""))
        self.exit_code: Optional[int] = error.get("exit_code")
        self.stderr: Optional[str] = error.get("stderr")
        super().__init__("%s %s: %s: %s" % (result.method, result.status, self.kind, error.get("message", "")))


class MethodError(_ResultError):
    """The method failed (status ``error``): ``kind`` (``exit``, ``method_error``, ``crash``,
    ``out_of_memory``, …), ``exit_code`` and ``stderr`` say how."""


class MethodTimeout(_ResultError):
    """The method ran past its deadline (status ``timeout``)."""


class Rejected(_ResultError):
    """The worker did not run it (status ``rejected``): an unknown method, no profile large
    enough, a deadline out of range."""


def new_id() -> str:
    return str(uuid.uuid4())


def encode_invocation(
    invocation_id: str, method: str, args: Any, *, context: Optional[Mapping[str, Any]] = None,
    deadline_ms: Optional[int] = None, affinity: Optional[str] = None, resources: Optional[Mapping[str, int]] = None,
    traceparent: Optional[str] = None,
) -> bytes:
    """The MessagePack body of an invocation; ``InvalidInvocation`` when it cannot be sent."""
    if not isinstance(method, str) or not 1 <= len(method.encode()) <= MAX_METHOD_BYTES:
        raise InvalidInvocation("method must be a name of 1 to %d bytes, not %r" % (MAX_METHOD_BYTES, method))
    if not 1 <= len(invocation_id.encode()) <= MAX_ID_BYTES:
        raise InvalidInvocation("an invocation id must be 1 to %d bytes" % MAX_ID_BYTES)
    body: Dict[str, Any] = {"v": 1, "id": invocation_id, "method": method, "args": args,
                            "submitted_at_us": int(time.time() * 1_000_000)}
    if context is not None:
        body["context"] = dict(context)
    if deadline_ms is not None:
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int) or deadline_ms < 1:
            raise InvalidInvocation("deadline_ms must be a positive whole number of milliseconds, not %r" % (deadline_ms,))
        body["deadline_ms"] = deadline_ms
    if affinity is not None:
        body["affinity"] = {"key": str(affinity)}
    if resources is not None:
        body["resources"] = {key: int(value) for key, value in dict(resources).items()}
    if traceparent:
        body["trace"] = {"traceparent": traceparent}
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidInvocation("args cannot be sent as MessagePack: %s" % error) from None


try:  # looked up once: a failed import costs ~90 µs, every time it is tried
    from opentelemetry import trace as _trace  # type: ignore
except ImportError:
    _trace = None


def current_traceparent() -> Optional[str]:
    """The W3C traceparent of the caller's OpenTelemetry span, when OpenTelemetry is installed
    and a span is active."""
    if _trace is None:
        return None
    span = _trace.get_current_span().get_span_context()
    if not span.is_valid:
        return None
    return "00-%032x-%016x-%02x" % (span.trace_id, span.span_id, int(span.trace_flags))


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return "%s://%s@%s" % (scheme, user, host)


def timeout_after(timeout: Optional[float]) -> Optional[float]:
    """The monotonic deadline of ``timeout`` seconds from now (None: none)."""
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    return time.monotonic() + timeout

