"""Plain-data frames between the grader and the worker: what may cross, and how it is laid out.

Nothing of the student's making is ever unpickled: a message is a JSON document plus numpy arrays
stored as ``.npy`` bytes and read back with ``np.load(..., allow_pickle=False)``.

Frame layout (all integers big-endian)::

    b"GCK1"  | u64 payload length | payload
    payload  = u32 JSON length | JSON (UTF-8) | blob*        blob = u64 length | .npy bytes

Values
------
JSON's own ``null``, booleans, integers, finite floats, strings and lists stand for themselves.
Everything else is a JSON object with a ``"$"`` tag, so that no plain object is ever ambiguous:

=========== =====================================================
``tuple``   ``{"$": "tuple", "items": [...]}``
``dict``    ``{"$": "dict", "items": [[key, value], ...]}``
``float``   ``{"$": "float", "value": "nan" | "inf" | "-inf"}``
``ndarray`` ``{"$": "ndarray", "blob": index}`` (no object dtype)
``npscalar````{"$": "npscalar", "blob": index}`` (a 0-d array)
``model``   ``{"$": "model", "arch": ..., "weights": ..., "head": ...}``
``layer``   ``{"$": "layer", "name": ...}``
=========== =====================================================
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
    "MAGIC",
    "MAX_FRAME_BYTES",
    "FrameReader",
    "LayerRef",
    "ModelSpec",
    "ProtocolError",
    "decode",
    "encode",
    "map_leaves",
    "pack_frame",
    "read_frame",
    "record_of",
    "require",
    "text_of",
    "unpack_payload",
    "write_frame",
]

MAGIC = b"GCK1"
_OUTER = struct.Struct(">4sQ")
_JSON_LEN = struct.Struct(">I")
_BLOB_LEN = struct.Struct(">Q")
MAX_FRAME_BYTES = 256 * 2**20
"""Default largest frame accepted (a Grad-CAM result is well under 1 MB)."""
MAX_DEPTH = 64
"""Deepest nesting of lists, tuples and dicts accepted on either side."""


class ProtocolError(ValueError):
    """A frame or a value that is not valid plain data."""


@dataclass(frozen=True)
class ModelSpec:
    """A model for the worker to build afresh for one call (see :mod:`gradcam_kit.worker.models`).

    Parameters
    ----------
    arch : {"densenet121", "resnet18", "efficientnet_lite0"}
        The architecture.
    weights : str, optional
        ``"imagenet"``, ``"random"`` or a state-dict path, as in ``tp2_utils.load_model``; ``None``
        means the session's weights policy (``$GRADCAM_WEIGHTS`` of the judge).
    head : {None, "contrast"}
        ``"contrast"`` replaces the classifier by the deterministic head of
        :func:`gradcam_kit.worker.models.contrast_head` (a class that dominates the softmax).
    """

    arch: str = "densenet121"
    weights: str | None = None
    head: str | None = None


@dataclass(frozen=True)
class LayerRef:
    """The submodule ``name`` (dotted, as in ``model.get_submodule``) of the call's model argument."""

    name: str


def require(condition: bool, what: str) -> None:
    """Raise :class:`ProtocolError` (``malformed message: what``) unless ``condition``."""
    if not condition:
        raise ProtocolError(f"malformed message: {what}")


def record_of(message: Any, what: str) -> Mapping[str, Any]:
    """``message``, which must be a record (a dict)."""
    require(isinstance(message, dict), f"{what} is not a record")
    return message


def text_of(value: Any, what: str, optional: bool = False) -> Any:
    """``value``, which must be a string (or ``None`` when ``optional``)."""
    require(type(value) is str or (optional and value is None), f"{what} must be a string")
    return value


# ------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------
def _array_bytes(array: np.ndarray) -> bytes:
    if array.dtype.hasobject:
        raise ProtocolError("arrays of Python objects cannot cross the boundary")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode(value: Any, blobs: list[bytes], depth: int = 0) -> Any:
    """Turn plain data into a JSON-able document, appending arrays to ``blobs``.

    Raises
    ------
    ProtocolError
        For anything that is not plain data (the worker describes such objects before sending).
    """
    if depth > MAX_DEPTH:
        raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$": "float", "value": repr(value)}
    if kind is list:
        return [encode(item, blobs, depth + 1) for item in value]
    if kind is tuple:
        return {"$": "tuple", "items": [encode(item, blobs, depth + 1) for item in value]}
    if kind is dict:
        return {
            "$": "dict",
            "items": [[encode(k, blobs, depth + 1), encode(v, blobs, depth + 1)] for k, v in value.items()],
        }
    if kind is np.ndarray:
        blobs.append(_array_bytes(value))
        return {"$": "ndarray", "blob": len(blobs) - 1}
    if isinstance(value, np.generic) and kind.__module__ == "numpy":
        blobs.append(_array_bytes(np.asarray(value)))
        return {"$": "npscalar", "blob": len(blobs) - 1}
    if kind is ModelSpec:
        return {"$": "model", "arch": value.arch, "weights": value.weights, "head": value.head}
    if kind is LayerRef:
        return {"$": "layer", "name": value.name}
    raise ProtocolError(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def _load_array(blob: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(blob), allow_pickle=False)
    except Exception as error:  # malformed header, pickled objects...
        raise ProtocolError(f"unreadable array: {error}") from None


def _optional_str(document: dict, key: str) -> str | None:
    value = document.get(key)
    if value is not None and type(value) is not str:
        raise ProtocolError(f"{key!r} must be a string")
    return value


def decode(document: Any, blobs: list[bytes], depth: int = 0) -> Any:
    """The inverse of :func:`encode`; strict about what it accepts."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
    kind = type(document)
    if document is None or kind in (bool, int, str):
        return document
    if kind is float:
        return document
    if kind is list:
        return [decode(item, blobs, depth + 1) for item in document]
    if kind is not dict:
        raise ProtocolError(f"unexpected JSON value of type {kind.__name__}")
    tag = document.get("$")
    try:
        if tag == "tuple":
            return tuple(decode(item, blobs, depth + 1) for item in document["items"])
        if tag == "dict":
            result = {}
            for key, value in document["items"]:
                result[decode(key, blobs, depth + 1)] = decode(value, blobs, depth + 1)
            return result
        if tag == "float":
            if document["value"] not in ("nan", "inf", "-inf"):
                raise ProtocolError("bad special float")
            return float(document["value"])
        if tag in ("ndarray", "npscalar"):
            index = document["blob"]
            if type(index) is not int or not 0 <= index < len(blobs):
                raise ProtocolError("bad blob index")
            array = _load_array(blobs[index])
            return array if tag == "ndarray" else array[()]
        if tag == "model":
            arch = document["arch"]
            if type(arch) is not str:
                raise ProtocolError("model arch must be a string")
            return ModelSpec(arch, _optional_str(document, "weights"), _optional_str(document, "head"))
        if tag == "layer":
            name = document["name"]
            if type(name) is not str:
                raise ProtocolError("layer name must be a string")
            return LayerRef(name)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ProtocolError):
            raise
        raise ProtocolError(f"malformed {tag!r} value: {error}") from None
    raise ProtocolError(f"unknown tag {tag!r}")


# ------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------
def map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with each item that is not a list, tuple or dict replaced by ``leaf(item)``, in
    order; the lists, tuples and dicts (keys kept) are rebuilt around them."""
    if isinstance(value, list):
        return [map_leaves(item, leaf) for item in value]
    if isinstance(value, tuple):
        return tuple(map_leaves(item, leaf) for item in value)
    if isinstance(value, dict):
        return {key: map_leaves(item, leaf) for key, item in value.items()}
    return leaf(value)


def pack_frame(message: Any) -> bytes:
    """One frame holding ``message`` (plain data)."""
    blobs: list[bytes] = []
    document = json.dumps(encode(message, blobs), allow_nan=False, separators=(",", ":")).encode()
    parts = [_JSON_LEN.pack(len(document)), document]
    for blob in blobs:
        parts += [_BLOB_LEN.pack(len(blob)), blob]
    payload = b"".join(parts)
    return _OUTER.pack(MAGIC, len(payload)) + payload


def unpack_payload(payload: bytes) -> Any:
    """Decode the payload of one frame (everything after the outer header)."""
    view = memoryview(payload)
    if len(view) < _JSON_LEN.size:
        raise ProtocolError("truncated frame")
    (json_length,) = _JSON_LEN.unpack_from(view, 0)
    position = _JSON_LEN.size + json_length
    if position > len(view):
        raise ProtocolError("truncated JSON")
    blobs: list[bytes] = []
    while position < len(view):
        if position + _BLOB_LEN.size > len(view):
            raise ProtocolError("truncated blob header")
        (blob_length,) = _BLOB_LEN.unpack_from(view, position)
        position += _BLOB_LEN.size
        if position + blob_length > len(view):
            raise ProtocolError("truncated blob")
        blobs.append(bytes(view[position : position + blob_length]))
        position += blob_length
    try:
        document = json.loads(bytes(view[_JSON_LEN.size : _JSON_LEN.size + json_length]))
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"invalid JSON: {error}") from None
    try:
        return decode(document, blobs)
    except RecursionError:
        raise ProtocolError("value nested too deeply") from None


class FrameReader:
    """Reassembles frames from chunks of a byte stream (non-blocking use).

    Parameters
    ----------
    max_bytes : int
        The largest payload accepted; a bigger announced length raises :class:`ProtocolError`
        before anything is buffered.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Any]:
        """Add bytes; return the messages completed by them, in order."""
        self._buffer += chunk
        messages = []
        while len(self._buffer) >= _OUTER.size:
            magic, length = _OUTER.unpack_from(self._buffer, 0)
            if magic != MAGIC:
                raise ProtocolError("bad frame magic (the stream is corrupted)")
            if length > self.max_bytes:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.max_bytes}")
            end = _OUTER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_OUTER.size : end])
            del self._buffer[:end]
            messages.append(unpack_payload(payload))
        return messages

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)


def _read_exactly(fd: int, count: int) -> bytes:
    chunks = []
    while count:
        chunk = os.read(fd, min(count, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Block until one whole frame has been read from ``fd``; return its message.

    Raises
    ------
    EOFError
        When the channel is closed before a frame starts or while it is being read.
    ProtocolError
        When the bytes are not a valid frame.
    """
    magic, length = _OUTER.unpack(_read_exactly(fd, _OUTER.size))
    if magic != MAGIC:
        raise ProtocolError("bad frame magic (the stream is corrupted)")
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    return unpack_payload(_read_exactly(fd, length))


def write_frame(fd: int, message: Any) -> None:
    """Write one frame to ``fd`` (blocking until all of it is written)."""
    data = memoryview(pack_frame(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]
