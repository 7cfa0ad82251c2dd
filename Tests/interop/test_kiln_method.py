"""The Python serve-mode helper (sdk/python/kiln_method.py), on the host: a plain Python process
speaking the framing, checked with the independent msgpack library."""

import os
import pathlib
import struct
import subprocess
import sys

import msgpack
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELPER = ROOT / "sdk" / "python"
sys.path.insert(0, str(HELPER))

import kiln_method  # noqa: E402

METHOD = """
import sys
sys.path.insert(0, %(helper)r)
import kiln_method
%(codec)s

def wordcount(args, context):
    if args.get("fail"):
        raise ValueError("refused on purpose")
    if args.get("crash"):
        import os
        os._exit(9)
    print("noise on stdout must not break the frames")
    locals_ = context.setdefault("locals", {})
    locals_["calls"] = locals_.get("calls", 0) + 1
    return {"words": len(args["text"].split()), "pid": __import__("os").getpid()}

kiln_method.run(wordcount)
"""


def start(mode, codec="c"):
    """The helper serving `wordcount`, its calls carried by msgpack's C codec ("c", as on a root
    with python3-msgpack) or by the helper's own ("pure", as on one without)."""
    env = dict(os.environ)
    env.pop("KILN_MODE", None)
    if mode:
        env["KILN_MODE"] = mode
    source = METHOD % {"helper": str(HELPER), "codec": "kiln_method._fast_codec = None" if codec == "pure" else ""}
    return subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def frame(process):
    prefix = process.stdout.read(4)
    assert len(prefix) == 4, process.stderr.read().decode()
    (length,) = struct.unpack(">I", prefix)
    return msgpack.unpackb(process.stdout.read(length), raw=False)


def call(process, body):
    process.stdin.write(struct.pack(">I", len(body)) + body)
    process.stdin.flush()
    return frame(process)


@pytest.mark.parametrize("value", [
    None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -32, -33, -128, -129, -(2**31), -(2**63),
    1.5, -0.0, "", "é" * 40, "x" * 300, "y" * 70000, b"", b"\x00" * 300, b"\x01" * 70000, [], [1, [2, [3]]], list(range(20)),
    {}, {"a": 1, "b": {"c": [None]}}, {str(i): i for i in range(20)},
])
def test_codec_agrees_with_msgpack(value):
    assert msgpack.unpackb(kiln_method.pack(value), raw=False, strict_map_key=False) == value
    assert kiln_method.unpack(msgpack.packb(value, use_bin_type=True)) == value


def test_codec_refuses_broken_input():
    for broken in [b"", b"\xc1", b"\x92\x01", b"\xda\x00\x05ab", b"\x01\x02"]:
        with pytest.raises(kiln_method.ProtocolError):
            kiln_method.unpack(broken)


@pytest.mark.parametrize("codec", ["c", "pure"])
def test_serve_mode_answers_calls_on_one_process(codec):
    process = start("serve", codec)
    try:
        assert frame(process) == {"ready": True}
        pids = set()
        for index in range(200):
            context = {"locals": {"calls": index}} if index % 2 else None
            request = {"id": "c-%d" % index, "args": {"text": "one two %d" % index}, "deadline_ms": 1000}
            if context:
                request["context"] = context
            answer = call(process, msgpack.packb(request, use_bin_type=True))
            assert answer["id"] == "c-%d" % index
            assert answer["output"]["words"] == 3
            assert answer["context"]["locals"]["calls"] == (index + 1 if context else 1)
            pids.add(answer["output"]["pid"])
        assert pids == {process.pid}
        failed = call(process, msgpack.packb({"id": "f", "args": {"fail": True}, "deadline_ms": 1}))
        assert failed == {"id": "f", "error": "ValueError: refused on purpose"}
        after = call(process, msgpack.packb({"id": "a", "args": {"text": "still here"}, "deadline_ms": 1}))
        assert after["output"]["words"] == 2
        process.stdin.close()
        assert process.wait(10) == 0
        assert b"noise on stdout" in process.stderr.read()
    finally:
        process.kill()


def test_serve_mode_exits_on_a_frame_that_is_not_a_call():
    process = start("serve")
    try:
        assert frame(process) == {"ready": True}
        body = msgpack.packb({"args": 1})
        process.stdin.write(struct.pack(">I", len(body)) + body)
        process.stdin.close()
        assert process.wait(10) == 65
        assert process.stdout.read() == b""  # no answer to a frame that is not a call
    finally:
        process.kill()


def test_exec_mode_answers_once():
    process = start(None)
    output, errors = process.communicate(msgpack.packb({"args": {"text": "a b c"}, "context": {"locals": {"calls": 4}}}), timeout=10)
    assert process.returncode == 0, errors
    answer = msgpack.unpackb(output, raw=False)
    assert answer["output"]["words"] == 3
    assert answer["context"] == {"locals": {"calls": 5}}
    failing = start(None)
    _, errors = failing.communicate(msgpack.packb({"args": {"fail": True}}), timeout=10)
    assert failing.returncode == 1 and b"refused on purpose" in errors
