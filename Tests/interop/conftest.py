import os
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "schemas" / "vectors"))
sys.path.insert(0, str(ROOT / "sdk" / "python"))

URL = os.environ.get("KILN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KILN = os.environ.get("KILN_BINARY", str(ROOT / ".build" / "debug" / "kiln"))


def start_worker(prefix, folder, host):
    """Starts a `kiln worker` (process backend) on topology `prefix`, its configuration, history
    and log (worker.log) in `folder`, and returns once it has served a `noop`."""
    from kiln_client import Client, KilnError

    config = pathlib.Path(folder, "worker.yaml")
    config.write_text(
        'amqp: {url: "%s", prefix: %s}\nvm: {backend: process, image_cache: "%s"}\nhistory: {path: "%s/history.sqlite"}\n'
        "metrics: {listen: \"\"}\nworker: {host: %s}\n" % (URL, prefix, ROOT / ".local" / "images", folder, host))
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KILN_")}
    environment["KILN_CONFIG"] = str(config)
    with open(pathlib.Path(folder, "worker.log"), "w") as log:
        process = subprocess.Popen([KILN, "worker"], env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise AssertionError(pathlib.Path(folder, "worker.log").read_text()[-2000:])
        try:
            with Client(URL, prefix=prefix) as kiln:
                kiln.invoke("noop", timeout=30)
            return process
        except KilnError:
            if time.monotonic() > deadline:
                stop(process)
                raise AssertionError("the worker did not serve within 120 s")
            time.sleep(0.2)


def stop(process):
    """Ends a process this test started: SIGTERM, then SIGKILL after a minute."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
