"""`kiln dashboard` in a real browser: a real worker (process backend) serves traffic, the
dashboard reads its telemetry from the broker `make test` starts, and headless Chromium
(Debian's `chromium`, driven over the DevTools protocol on a pipe) loads the page. The test reads
what the page shows through the DOM: the worker and its host, a pool's numbers, an invocation's
candidates with the chosen VM, a method's predicted-against-measured points, the VMs created;
and it saves a screenshot ($KILN_INTEROP_OUT/dashboard.png)."""

import base64
import fcntl
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pika
import pytest

from conftest import KILN, URL, start_worker, stop
from kiln_client import Client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium spoken to over --remote-debugging-pipe: commands on its fd 3, answers
    and events on its fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, folder):
        # Above fd 4, so that placing them on 3 and 4 in the child never overwrites one with the
        # other (and dup2 to another number clears close-on-exec).
        to_browser_read, self._to_browser = (self._above_four(fd) for fd in os.pipe())
        self._from_browser, from_browser_write = (self._above_four(fd) for fd in os.pipe())

        def wire_pipes():
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-pipe", "--user-data-dir=" + str(pathlib.Path(folder, "chromium")), "about:blank"],
            # The pipes land on fds 3 and 4 after the fork; Python's own descriptors are not
            # inheritable, so nothing else leaks with close_fds off.
            close_fds=False, preexec_fn=wire_pipes, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(pathlib.Path(folder, "chromium.log"), "w"))
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.session = None

    @staticmethod
    def _above_four(fd):
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
        os.close(fd)
        return moved

    def call(self, method, params=None, session=True, timeout=60):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                assert left > 0, "Chromium did not answer %s" % method
                if not select.select([self._from_browser], [], [], left)[0]:
                    continue
                chunk = os.read(self._from_browser, 1 << 20)
                assert chunk, "Chromium closed the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer["error"]
                return answer["result"]

    def open(self, url, width=1400, height=2400):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression, timeout=60):
        """Polls `expression` in the page until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, "the page never showed: " + expression
            time.sleep(0.2)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        pathlib.Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        os.close(self._to_browser)
        os.close(self._from_browser)
        stop(self.process)


@pytest.fixture(scope="module")
def fleet():
    """A worker and a dashboard on a topology prefix of their own; yields (prefix, dashboard URL)."""
    prefix = "pydash-" + uuid.uuid4().hex[:6]
    folder = tempfile.mkdtemp(prefix="kiln-pydash-")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KILN_")}
    environment.update(KILN_AMQP_URL=URL, KILN_AMQP_PREFIX=prefix, KILN_LOG_LEVEL="info")
    log_path = pathlib.Path(folder, "dashboard.log")
    # The telemetry exchange exists before anyone runs, as definitions.json makes it in
    # production: the dashboard reads from its start, and sees the worker's first VMs made.
    with pika.BlockingConnection(pika.URLParameters(URL)) as connection:
        connection.channel().exchange_declare(prefix + ".telemetry", exchange_type="topic", durable=True)
    with open(log_path, "w") as log:
        dashboard = subprocess.Popen([KILN, "dashboard", "--listen", "127.0.0.1:0"], env=environment, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    worker = None
    try:
        def logged(pattern):
            deadline = time.monotonic() + 60
            while True:
                assert dashboard.poll() is None, log_path.read_text()[-2000:]
                found = re.search(pattern, log_path.read_text())
                if found:
                    return found
                assert time.monotonic() < deadline, log_path.read_text()[-2000:]
                time.sleep(0.1)

        base = "http://127.0.0.1:%s/" % logged(r"dashboard listening on http://127\.0\.0\.1:(\d+)/").group(1)
        logged(r"dashboard reading")
        worker = start_worker(prefix, folder, host="dash-host")
        yield prefix, base
    finally:
        if worker:
            stop(worker)
        stop(dashboard)


def test_the_page_shows_the_fleet_and_why_each_invocation_went_where_it_did(fleet, tmp_path):
    prefix, base = fleet
    with Client(URL, prefix=prefix) as kiln:
        results = [kiln.invoke("echo-serve", {"n": n}, timeout=60) for n in range(12)]
        results.append(kiln.invoke("echo", {"x": 1}, timeout=60))
    assert all(result.status == "ok" for result in results)
    last = results[-2]  # the last echo-serve

    # The JSON the page reads has them all (the dashboard's own view, before any browser).
    deadline = time.monotonic() + 30
    while True:
        state = json.load(urllib.request.urlopen(base + "api/state", timeout=10))
        if any(inv["id"] == results[-1].id for inv in state["invocations"]):
            break
        assert time.monotonic() < deadline, "the dashboard never saw %s" % results[-1].id
        time.sleep(0.2)

    if CHROMIUM is None:
        pytest.fail("chromium is not installed (deploy/local/install-deps.sh installs it)")
    browser = Browser(tmp_path)
    try:
        browser.open(base)
        # The worker, by its host.
        workers = browser.wait_for("""(() => { const rows = [...document.querySelectorAll('#workers tr.worker')];
            return rows.length ? rows.map(r => [...r.cells].map(c => c.textContent)) : null })()""")
        assert any(row[1] == "dash-host" and row[2] == "process" for row in workers), workers
        # A pool's numbers: the small profile's card on that worker, each count a number.
        pool = browser.wait_for("""(() => { const card = [...document.querySelectorAll('.card.pool')]
            .find(c => c.dataset.pool.endsWith('/small')); return card && card.querySelector('.counts').textContent })()""")
        counts = dict(re.findall(r"(idle|busy|target|waiting) (\d+)", pool))
        assert set(counts) == {"idle", "busy", "target", "waiting"}, pool
        assert int(counts["idle"]) + int(counts["busy"]) >= 1, pool
        # An invocation's placement: every candidate scored, the VM it ran on chosen.
        placement = browser.wait_for("""(() => { const details = document.querySelector('details.invocation[data-id="%s"]');
            return details && [...details.querySelectorAll('tr.candidate')].map(r => ({
                place: r.querySelector('.place').textContent, chosen: r.classList.contains('chosen'),
                predicted: r.querySelector('.predicted').textContent, factor: r.querySelector('.resource-factor').textContent,
                score: r.querySelector('.score').textContent })) })()""" % last.id)
        chosen = [candidate for candidate in placement if candidate["chosen"]]
        assert len(chosen) == 1, placement
        assert chosen[0]["place"] == last.vm["id"], (placement, last.vm)
        assert all(float(candidate["predicted"]) >= 0 and float(candidate["score"]) > 0 for candidate in placement), placement
        assert any(candidate["place"] == "new" for candidate in placement), "a new VM is always a candidate: %s" % placement
        # Predicted against measured for echo-serve: a point per run (twelve here, and the
        # worker's own noop never counts as echo-serve).
        runs = browser.wait_for("""(() => { const card = document.querySelector('.card.scatter[data-method="echo-serve"]');
            return card && card.querySelector('.counts span').textContent })()""")
        assert int(runs.split()[0]) >= 12, runs
        # The VMs the pool created, with their reason.
        created = browser.wait_for("""(() => { const rows = [...document.querySelectorAll('#vm-events tr.vm-event')]
            .filter(r => r.querySelector('.kind').textContent === 'created'); return rows.length ? rows.map(r => r.querySelector('.reason').textContent) : null })()""")
        assert all(reason for reason in created), created
        # Live: three more windows arrive over the same stream (not by reconnecting), each a
        # later one.
        first = int(browser.evaluate("document.body.dataset.renderedAt"))
        seen = int(browser.evaluate("document.body.dataset.events"))
        browser.wait_for("Number(document.body.dataset.events) >= %d" % (seen + 3))
        assert browser.evaluate("document.body.dataset.streams") == "1"
        assert int(browser.evaluate("document.body.dataset.renderedAt")) > first
        out = pathlib.Path(os.environ.get("KILN_INTEROP_OUT", str(tmp_path)))
        out.mkdir(parents=True, exist_ok=True)
        browser.screenshot(out / "dashboard.png")
        assert (out / "dashboard.png").stat().st_size > 10_000
    finally:
        browser.close()
