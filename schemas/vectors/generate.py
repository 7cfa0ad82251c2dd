#!/usr/bin/env python3
"""Writes the golden vectors: NAME.msgpack from each NAME.json twin, and the malformed inputs
under invalid/. Uses the msgpack library, never Kiln's code.

    python3 schemas/vectors/generate.py          # rewrite the vectors
    python3 schemas/vectors/generate.py --check  # exit 1 if any committed vector differs
"""
import json
import pathlib
import struct
import sys

import tagged_json

HERE = pathlib.Path(__file__).resolve().parent

# Malformed bodies and the WireError case each must produce (see Sources/KilnWire/WireError.swift).
INVALID = {
    "truncated-map": (bytes.fromhex("82a17601a6"), "truncated"),
    "reserved-byte-c1": (bytes.fromhex("82a17601c1a6"), "invalidByte"),
    "wrong-type-method": (tagged_json.pack({"v": 1, "id": "x", "method": 42}), "typeMismatch"),
    "oversized-array32": (b"\xdd\xff\xff\xff\xff" + b"\x00" * 8, "limitExceeded"),
    "lying-array32": (b"\xdd\x00\x00\x10\x00" + b"\x00" * 8, "truncated"),
    "oversized-str32": (b"\xdb\x7f\xff\xff\xff" + b"a" * 16, "limitExceeded"),
    "oversized-map32": (b"\xdf\xff\xff\xff\xff", "limitExceeded"),
    "depth-bomb": (b"\x91" * 10_000 + b"\xc0", "limitExceeded"),
    "trailing-bytes": (tagged_json.pack({"v": 1, "method": "echo"}) + b"\xc0", "trailingBytes"),
    "invalid-utf8-method": (b"\x82\xa1v\x01\xa6method\xa2\xc3\x28", "invalidUTF8"),
    "unsupported-version": (tagged_json.pack({"v": 2, "id": "x", "method": "echo"}), "unsupportedVersion"),
    "missing-method": (tagged_json.pack({"v": 1, "id": "x"}), "missingKey"),
    "empty-body": (b"", "truncated"),
    "result-unknown-status": (
        tagged_json.pack({"v": 1, "id": "x", "method": "m", "status": "done", "attempt": 1,
                          "timing_us": {"schedule": 0, "provision": 0, "exec": 0, "total": 0},
                          "worker": "w", "finished_at_us": 0}),
        "invalidValue",
    ),
}


def outputs():
    for twin in sorted(HERE.glob("*.json")):
        document = json.loads(twin.read_text())
        yield twin.with_suffix(".msgpack"), tagged_json.pack(tagged_json.from_twin(document))
    expected = {}
    for name, (body, error) in sorted(INVALID.items()):
        yield HERE / "invalid" / f"{name}.msgpack", body
        expected[name] = error
    yield HERE / "invalid" / "expected.json", (json.dumps(expected, indent=2) + "\n").encode()


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for path, data in outputs():
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
    if stale:
        print("stale vectors (run schemas/vectors/generate.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
