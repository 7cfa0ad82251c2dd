"""The JSON view of MessagePack documents, shared by the vector generator and the interop tests.

JSON has no bytes, no ext and one number type, so the twins use tags:
  {"$bin": "<base64>"}                      a MessagePack bin
  {"$ext": {"type": N, "data": "<base64>"}} a MessagePack ext
  {"$f32": 1.5}                             a float32 (only in twins; the view shows a plain number)
The schemas validate the view: bin and ext stay tagged, float32 is a plain number.
"""
import base64
import struct

import msgpack


class Float32:
    """A number that must be packed as a MessagePack float32."""

    def __init__(self, value):
        self.value = value


def from_twin(node):
    """Tagged JSON -> Python objects ready for msgpack.packb (bytes, ExtType, Float32)."""
    if isinstance(node, dict):
        if set(node) == {"$bin"}:
            return base64.b64decode(node["$bin"])
        if set(node) == {"$ext"}:
            return msgpack.ExtType(node["$ext"]["type"], base64.b64decode(node["$ext"]["data"]))
        if set(node) == {"$f32"}:
            return Float32(float(node["$f32"]))
        return {key: from_twin(value) for key, value in node.items()}
    if isinstance(node, list):
        return [from_twin(value) for value in node]
    return node


def pack(document):
    """Packs with the msgpack library; Float32 leaves become float32.

    msgpack-python packs every float as float64, so each Float32 is packed as a unique ext
    placeholder first and then swapped for its float32 encoding: MessagePack containers count
    elements, not bytes, so a leaf may change length.
    """
    swaps = []

    def default(value):
        if isinstance(value, Float32):
            marker = msgpack.ExtType(127, b"KF" + len(swaps).to_bytes(2, "big"))
            swaps.append((msgpack.packb(marker), b"\xca" + struct.pack(">f", value.value)))
            return marker
        raise TypeError(f"cannot pack {type(value)}")

    packed = msgpack.packb(document, default=default, use_bin_type=True)
    for placeholder, encoded in swaps:
        assert packed.count(placeholder) == 1
        packed = packed.replace(placeholder, encoded)
    return packed


def unpack(data):
    """Unpacks with the msgpack library, strictly: str must be UTF-8, map keys any type."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def to_view(node):
    """Python objects from unpack() (or from_twin()) -> the JSON view the schemas validate."""
    if isinstance(node, (bytes, bytearray)):
        return {"$bin": base64.b64encode(bytes(node)).decode()}
    if isinstance(node, msgpack.ExtType):
        return {"$ext": {"type": node.code, "data": base64.b64encode(node.data).decode()}}
    if isinstance(node, Float32):
        return node.value
    if isinstance(node, dict):
        return {str(key): to_view(value) for key, value in node.items()}
    if isinstance(node, list):
        return [to_view(value) for value in node]
    return node
