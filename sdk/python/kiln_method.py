"""Kiln method runtime for Python: serve mode and exec mode in one file, standard library only.

A method is a function of ``(args, context)`` that returns the output; ``context`` is a dict
(``{"locals": {...}, "state": b"..."}``, both optional) that the function may change, and what
it leaves there goes back to the caller. Raising fails the call; in serve mode the runtime stays
up for the next one.

    import kiln_method

    def wordcount(args, context):
        locals_ = context.setdefault("locals", {})
        locals_["calls"] = locals_.get("calls", 0) + 1
        return {"words": len(args["text"].split())}

    if __name__ == "__main__":
        kiln_method.run(wordcount)

Or, without a ``__main__`` of its own, name the function in the manifest's entry: ``python3
/kiln/sdk/kiln_method.py /app/methods.py:wordcount`` (a file) or ``… methods:wordcount`` (a
module on ``sys.path``, which starts with the working folder). In serve mode the module is
imported before the runtime says it is ready, so with ``"warm": true`` a snapshot template holds
it imported and every restored VM answers its first call without importing anything.

The agent starts the program with ``KILN_MODE=serve`` for a manifest entry with
``"mode": "serve"``: the runtime first says ``{ready: true}``, then calls arrive on stdin as
frames (a 4-byte big-endian length, then a MessagePack map ``{id, args, context?,
deadline_ms}``) and each answer leaves on stdout as ``{id, output, context?}`` or ``{id, error}``. Without it (exec mode) the program reads one
``{args, context?}`` from stdin and writes ``{output, context?}`` to stdout. In both modes
``print`` goes to stderr: stdout carries the answers.

Python comes from the method's root file system (a Debian package list or an OCI image, see
README.md); the image puts this file at ``/kiln/sdk/kiln_method.py`` on every root file system.
MessagePack is written here in a few lines so that the helper needs nothing but the interpreter;
where the root has the ``msgpack`` package (Debian's ``python3-msgpack``), its C codec carries the
calls instead, which costs a fraction of the time (the more so in an emulated guest).
"""

import importlib
import importlib.util
import os
import struct
import sys
import traceback

__all__ = ["run", "pack", "unpack", "ProtocolError"]

try:
    import msgpack as _fast_codec
except ImportError:  # the pure codec below carries the calls
    _fast_codec = None


class ProtocolError(Exception):
    """The agent sent something that is not a frame or not a call."""


# --- MessagePack: the types the wire contract uses ------------------------------------------


def pack(value):
    """MessagePack bytes for None, bool, int, float, str, bytes, list/tuple and dict."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack(value, out):
    if value is None:
        out.append(0xC0)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, int):
        if 0 <= value < 0x80:
            out.append(value)
        elif -32 <= value < 0:
            out.append(value & 0xFF)
        elif value >= 0:
            for limit, marker, fmt in ((0xFF, 0xCC, ">B"), (0xFFFF, 0xCD, ">H"), (0xFFFFFFFF, 0xCE, ">I"), (2**64 - 1, 0xCF, ">Q")):
                if value <= limit:
                    out.append(marker)
                    out += struct.pack(fmt, value)
                    return
            raise OverflowError("integer too large for MessagePack")
        else:
            for limit, marker, fmt in ((-(2**7), 0xD0, ">b"), (-(2**15), 0xD1, ">h"), (-(2**31), 0xD2, ">i"), (-(2**63), 0xD3, ">q")):
                if value >= limit:
                    out.append(marker)
                    out += struct.pack(fmt, value)
                    return
            raise OverflowError("integer too small for MessagePack")
    elif isinstance(value, float):
        out.append(0xCB)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _header(len(data), out, fix=(0xA0, 31), sizes=((0xFF, 0xD9), (0xFFFF, 0xDA), (0xFFFFFFFF, 0xDB)))
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _header(len(data), out, fix=None, sizes=((0xFF, 0xC4), (0xFFFF, 0xC5), (0xFFFFFFFF, 0xC6)))
        out += data
    elif isinstance(value, (list, tuple)):
        _header(len(value), out, fix=(0x90, 15), sizes=((0xFFFF, 0xDC), (0xFFFFFFFF, 0xDD)))
        for element in value:
            _pack(element, out)
    elif isinstance(value, dict):
        _header(len(value), out, fix=(0x80, 15), sizes=((0xFFFF, 0xDE), (0xFFFFFFFF, 0xDF)))
        for key, element in value.items():
            _pack(key, out)
            _pack(element, out)
    else:
        raise TypeError("cannot pack %s as MessagePack" % type(value).__name__)


def _header(length, out, fix, sizes):
    if fix is not None and length <= fix[1]:
        out.append(fix[0] | length)
        return
    for limit, marker in sizes:
        if length <= limit:
            out.append(marker)
            width = {0xFF: ">B", 0xFFFF: ">H", 0xFFFFFFFF: ">I"}[limit]
            out += struct.pack(width, length)
            return
    raise OverflowError("too long for MessagePack")


def unpack(data):
    """The one value in ``data``; ext values become ``(type, bytes)`` tuples."""
    value, end = _unpack(memoryview(data), 0, 0)
    if end != len(data):
        raise ProtocolError("%d trailing bytes" % (len(data) - end))
    return value


_FIXED = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}


def _unpack(view, at, depth):
    if depth > 64:
        raise ProtocolError("nested too deep")
    if at >= len(view):
        raise ProtocolError("truncated")
    marker = view[at]
    at += 1
    if marker <= 0x7F:
        return marker, at
    if marker >= 0xE0:
        return marker - 0x100, at
    if 0x80 <= marker <= 0x8F:
        return _map(view, at, marker & 0x0F, depth)
    if 0x90 <= marker <= 0x9F:
        return _array(view, at, marker & 0x0F, depth)
    if 0xA0 <= marker <= 0xBF:
        return _bytes(view, at, marker & 0x1F, text=True)
    if marker == 0xC0:
        return None, at
    if marker in (0xC2, 0xC3):
        return marker == 0xC3, at
    if marker in _FIXED:
        fmt = _FIXED[marker]
        size = struct.calcsize(fmt)
        _need(view, at, size)
        return struct.unpack(fmt, view[at:at + size])[0], at + size
    lengths = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4, 0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4, 0xC7: 1, 0xC8: 2, 0xC9: 4}
    if marker in lengths:
        width = lengths[marker]
        _need(view, at, width)
        length = int.from_bytes(view[at:at + width], "big")
        at += width
        if marker in (0xC4, 0xC5, 0xC6):
            return _bytes(view, at, length, text=False)
        if marker in (0xD9, 0xDA, 0xDB):
            return _bytes(view, at, length, text=True)
        if marker in (0xDC, 0xDD):
            return _array(view, at, length, depth)
        if marker in (0xDE, 0xDF):
            return _map(view, at, length, depth)
        _need(view, at, 1 + length)
        return (struct.unpack(">b", view[at:at + 1])[0], bytes(view[at + 1:at + 1 + length])), at + 1 + length
    if 0xD4 <= marker <= 0xD8:
        length = 1 << (marker - 0xD4)
        _need(view, at, 1 + length)
        return (struct.unpack(">b", view[at:at + 1])[0], bytes(view[at + 1:at + 1 + length])), at + 1 + length
    raise ProtocolError("invalid byte 0x%02x" % marker)


def _need(view, at, count):
    if len(view) - at < count:
        raise ProtocolError("truncated")


def _bytes(view, at, length, text):
    _need(view, at, length)
    chunk = bytes(view[at:at + length])
    return (chunk.decode("utf-8") if text else chunk), at + length


def _array(view, at, count, depth):
    if count > len(view) - at:
        raise ProtocolError("array longer than its frame")
    items = []
    for _ in range(count):
        item, at = _unpack(view, at, depth + 1)
        items.append(item)
    return items, at


def _map(view, at, count, depth):
    if 2 * count > len(view) - at:
        raise ProtocolError("map longer than its frame")
    result = {}
    for _ in range(count):
        key, at = _unpack(view, at, depth + 1)
        value, at = _unpack(view, at, depth + 1)
        result[key if not isinstance(key, list) else tuple(key)] = value
    return result, at


# --- The runtime ----------------------------------------------------------------------------

MAX_FRAME = 16 << 20


def _encode(value):
    """MessagePack for an answer: the C codec when there is one."""
    if _fast_codec is not None:
        return _fast_codec.packb(value, use_bin_type=True)
    return pack(value)


def _decode(data):
    """A call from MessagePack: the C codec when there is one; broken input is a ProtocolError."""
    if _fast_codec is None:
        return unpack(data)
    try:
        return _fast_codec.unpackb(data, raw=False, strict_map_key=False)
    except Exception as error:
        raise ProtocolError("not MessagePack: %s" % error) from None


def _read_exactly(stream, count):
    data = bytearray()
    while len(data) < count:
        chunk = stream.read(count - len(data))
        if not chunk:
            return None if not data else bytes(data)
        data += chunk
    return bytes(data)


def _call(handler, args, context):
    context = dict(context) if isinstance(context, dict) else {}
    had_context = bool(context)
    output = handler(args, context)
    return output, (context if (had_context or context) else None)


def serve(handler, stdin=None, stdout=None):
    """Answers calls from ``stdin`` on ``stdout`` until stdin closes."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    ready = pack({"ready": True})
    stdout.write(struct.pack(">I", len(ready)) + ready)
    stdout.flush()
    while True:
        prefix = _read_exactly(stdin, 4)
        if prefix is None:
            return
        if len(prefix) < 4:
            raise ProtocolError("EOF inside a length prefix")
        (length,) = struct.unpack(">I", prefix)
        if length > MAX_FRAME:
            raise ProtocolError("frame of %d bytes" % length)
        body = _read_exactly(stdin, length)
        if body is None or len(body) < length:
            raise ProtocolError("EOF inside a frame")
        call = _decode(body)
        if not isinstance(call, dict) or not isinstance(call.get("id"), str):
            raise ProtocolError("a frame that is not a call {id, args, context?, deadline_ms}")
        try:
            output, context = _call(handler, call.get("args"), call.get("context"))
            answer = {"id": call["id"], "output": output}
            if context is not None:
                answer["context"] = context
            body = _encode(answer)
        except Exception as error:  # the call fails, the runtime stays up
            traceback.print_exc(file=sys.stderr)
            body = _encode({"id": call["id"], "error": "%s: %s" % (type(error).__name__, error)})
        stdout.write(struct.pack(">I", len(body)) + body)
        stdout.flush()


def answer_once(handler, stdin=None, stdout=None):
    """Exec mode: one ``{args, context?}`` on stdin, one ``{output, context?}`` on stdout."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    data = stdin.read()
    request = _decode(data) if data else {}
    if not isinstance(request, dict):
        raise ProtocolError("stdin is not the map {args, context?}")
    output, context = _call(handler, request.get("args"), request.get("context"))
    answer = {"output": output}
    if context is not None:
        answer["context"] = context
    stdout.write(_encode(answer))
    stdout.flush()


def run(handler):
    """Runs ``handler`` in the mode the agent started the program in, then exits."""
    # Answers go to a private copy of stdout; stray prints go to stderr.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if os.environ.get("KILN_MODE") == "serve":
        try:
            serve(handler, sys.stdin.buffer, answers)
        except ProtocolError as error:
            print("kiln_method: %s" % error, file=sys.stderr)
            sys.exit(65)
        sys.exit(0)
    try:
        answer_once(handler, sys.stdin.buffer, answers)
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        print("kiln_method: %s" % error, file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def load_handler(target):
    """The function ``target`` names: ``/path/to/file.py:function`` or ``package.module:function``."""
    location, separator, name = target.rpartition(":")
    if not separator or not location or not name:
        raise SystemExit("kiln_method: %r is not MODULE:FUNCTION or /path/file.py:FUNCTION" % target)
    if location.endswith(".py") or "/" in location:
        module_name = os.path.splitext(os.path.basename(location))[0]
        spec = importlib.util.spec_from_file_location(module_name, location)
        if spec is None or spec.loader is None:
            raise SystemExit("kiln_method: cannot load %s" % location)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        # Its own folder first, for the modules beside it.
        sys.path.insert(0, os.path.dirname(os.path.abspath(location)))
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(location)
    handler = getattr(module, name, None)
    if not callable(handler):
        raise SystemExit("kiln_method: %s has no function %s" % (location, name))
    return handler


if __name__ == "__main__":
    # `python kiln_method.py MODULE:FUNCTION` runs that function; without it, an echo method,
    # for trying the helper out.
    run(load_handler(sys.argv[1]) if len(sys.argv) > 1 else (lambda args, context: args))
