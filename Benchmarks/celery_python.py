"""The Celery application of `kiln-bench python`: the same Python functions Kiln's `py-echo` and
`py-thumbnail` run (examples/python/methods.py, imported as is), as Celery tasks. Arguments and
results travel as MessagePack, so that bytes (an image) cross as Kiln's do.

The broker comes from KILN_BENCH_CELERY_BROKER; results go back over the broker (rpc://).
"""
import os
import sys

from celery import Celery

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "python"))
import methods  # noqa: E402  (the example methods, unchanged)

app = Celery("kiln_bench_python", broker=os.environ["KILN_BENCH_CELERY_BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ.get("KILN_BENCH_CELERY_QUEUE", "kiln-bench-celery-python")
app.conf.task_serializer = "msgpack"
app.conf.result_serializer = "msgpack"
app.conf.accept_content = ["msgpack"]
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(name="py_echo")
def py_echo(args):
    return methods.echo(args, {})


@app.task(name="py_thumbnail")
def py_thumbnail(args):
    return methods.thumbnail(args, {})
