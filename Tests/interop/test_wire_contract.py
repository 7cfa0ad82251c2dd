"""The wire contract checked from outside: schemas/ against the golden vectors and against what
the Swift side encodes, with Python's msgpack and jsonschema, never Kiln's code."""
import json
import os
import pathlib
import subprocess
import sys

import jsonschema
import msgpack
import pytest

import tagged_json

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
VECTORS = SCHEMAS / "vectors"

SCHEMA_BY_PREFIX = {
    "invocation": "invocation.schema.json",
    "result": "result.schema.json",
    "telemetry": "telemetry-event.schema.json",
    "guest": "guest-frame.schema.json",
}


def validator_for(name):
    prefix = name.split("-", 1)[0]
    schema = json.loads((SCHEMAS / SCHEMA_BY_PREFIX[prefix]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def twins():
    return sorted(path.stem for path in VECTORS.glob("*.json"))


def test_every_schema_is_valid_2020_12():
    for file in SCHEMA_BY_PREFIX.values():
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / file).read_text()))


def test_committed_vectors_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(VECTORS / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", twins())
def test_vector_matches_its_twin_and_its_schema(name):
    decoded = tagged_json.unpack((VECTORS / f"{name}.msgpack").read_bytes())
    twin = json.loads((VECTORS / f"{name}.json").read_text())
    view = tagged_json.to_view(decoded)
    assert view == tagged_json.to_view(tagged_json.from_twin(twin))
    validator_for(name).validate(view)


EXPECTED_INVALID = json.loads((VECTORS / "invalid" / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED_INVALID))
def test_invalid_vector_is_rejected_by_the_independent_peers_too(name):
    data = (VECTORS / "invalid" / f"{name}.msgpack").read_bytes()
    try:
        decoded = tagged_json.unpack(data)
    except (ValueError, msgpack.exceptions.UnpackException, msgpack.exceptions.ExtraData, UnicodeDecodeError, RecursionError):
        return
    with pytest.raises(jsonschema.ValidationError):
        validator_for("result" if name.startswith("result-") else "invocation").validate(tagged_json.to_view(decoded))


def swift_outputs():
    directory = os.environ.get("KILN_INTEROP_OUT")
    if not directory:
        return []
    return sorted(pathlib.Path(directory).glob("*.msgpack"))


def test_the_swift_side_wrote_every_kind_of_message():
    directory = os.environ.get("KILN_INTEROP_OUT")
    if not directory:
        pytest.skip("KILN_INTEROP_OUT is not set: run through `make test`")
    names = [path.stem for path in swift_outputs()]
    for prefix in SCHEMA_BY_PREFIX:
        assert any(name.startswith(prefix + "-") for name in names), f"no {prefix} message from Swift in {directory}"


@pytest.mark.parametrize("path", swift_outputs(), ids=lambda path: path.stem)
def test_swift_encoded_message_is_valid(path):
    decoded = tagged_json.unpack(path.read_bytes())
    assert isinstance(decoded, dict) and all(isinstance(key, str) for key in decoded)
    assert decoded["v"] == 1
    validator_for(path.stem).validate(tagged_json.to_view(decoded))
    # Canonical re-encoding by an independent packer reads back the same.
    assert tagged_json.unpack(msgpack.packb(decoded, use_bin_type=True)) == decoded


def test_example_manifest_matches_its_schema():
    schema = json.loads((SCHEMAS / "method-manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    manifest = json.loads((ROOT / "examples" / "methods.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(manifest)


@pytest.mark.parametrize(
    "method",
    [
        {"entry": ["/x"], "mode": "reuse"},  # a lifecycle, not a mode
        {"entry": ["/x"], "warm": True},  # warm needs serve
        {"entry": ["/x"], "mode": "exec", "warm": True},
        {"entry": ["/x"], "lifecycle": "sometimes"},
    ],
)
def test_manifest_schema_refuses_mixed_up_modes(method):
    schema = json.loads((SCHEMAS / "method-manifest.schema.json").read_text())
    manifest = {"version": 1, "methods": {"a": method}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(manifest)
