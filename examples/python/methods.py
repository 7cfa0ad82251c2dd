"""The example Python methods (examples/methods.json): run in a VM on a Debian root file system
with python3 and Pillow, in serve mode, started warm so that a restored VM has them imported."""

import io
import os

from PIL import Image


def echo(args, context):
    """``py-echo``: returns its args. With ``{"crash": true}`` the interpreter aborts mid-call,
    as the Swift ``echo-serve`` does (the tests of a runtime crash use it)."""
    if isinstance(args, dict) and args.get("crash") is True:
        os.abort()
    return args


def thumbnail(args, context):
    """``py-thumbnail``: ``{image: bin, size?: int}`` (PNG or JPEG) → a PNG thumbnail as bin, at
    most ``size`` pixels (default 64) on its longer side, with its width and height."""
    data = args.get("image") if isinstance(args, dict) else None
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("args.image must be the bytes of a PNG or JPEG image")
    size = args.get("size", 64)
    if not isinstance(size, int) or not 1 <= size <= 1024:
        raise ValueError("args.size must be 1 to 1024")
    with Image.open(io.BytesIO(data)) as picture:
        picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return {"image": out.getvalue(), "width": picture.width, "height": picture.height}
