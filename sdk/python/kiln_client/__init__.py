"""Call Kiln methods from Python without writing AMQP.

``Client`` (blocking, on pika) and ``AsyncClient`` (asyncio, on aio-pika, in ``kiln_client.aio``)
publish invocations to ``<prefix>.invoke`` and read results through RabbitMQ's direct reply-to:
``invoke`` waits for one result, ``submit`` returns a pending one, ``map`` runs many and yields
their outputs in order, ``send`` fires and forgets. A result that is not ``ok`` raises
``MethodError``, ``MethodTimeout`` or ``Rejected``, each carrying the ``Result``.
"""

from ._wire import (
    BrokerUnavailable, ConnectionLost, InvalidInvocation, KilnError, MethodError, MethodTimeout, Rejected, Result,
    ResultTimeout, Unroutable,
)
from .client import Client, Pending

__all__ = [
    "Client", "Pending", "AsyncClient", "AsyncPending", "Result", "KilnError", "BrokerUnavailable", "ConnectionLost",
    "Unroutable", "InvalidInvocation", "ResultTimeout", "MethodError", "MethodTimeout", "Rejected",
]


def __getattr__(name):
    # The asyncio client needs aio-pika: imported when asked for, not with the package.
    if name in ("AsyncClient", "AsyncPending"):
        from . import aio
        return getattr(aio, name)
    raise AttributeError("module 'kiln_client' has no attribute %r" % name)
