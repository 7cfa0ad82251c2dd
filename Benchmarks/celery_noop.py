"""The Celery application of `kiln-bench e2e`: one task that does nothing, as Kiln's `noop`.

The broker comes from KILN_BENCH_CELERY_BROKER; results go back over the broker (rpc://), as
Kiln's do over reply_to. Everything else is Celery's default: prefork pool, early acks,
prefetch multiplier 4, a classic queue. With KILN_BENCH_CELERY_QUORUM=1 the task queue is a
quorum queue, as Kiln's is, and publishes wait for the broker's confirm, as Kiln's producers'
do (Celery 5.5 then leaves out the global QoS quorum queues do not support).
"""
import os

from celery import Celery
from kombu import Queue

app = Celery("kiln_bench", broker=os.environ["KILN_BENCH_CELERY_BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ.get("KILN_BENCH_CELERY_QUEUE", "kiln-bench-celery")
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("KILN_BENCH_CELERY_QUORUM") == "1":
    app.conf.task_queues = [Queue(app.conf.task_default_queue, queue_arguments={"x-queue-type": "quorum"})]
    app.conf.broker_transport_options = {"confirm_publish": True}


@app.task(name="noop")
def noop(**kwargs):
    """Does nothing, like Kiln's `noop` method."""
    return None
