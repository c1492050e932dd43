"""Decoding Bluesky documents from the network without ever running the network's code.

Publishers encode numpy arrays the msgpack-numpy way: a map ``{b"nd": True, b"type": "<f8",
b"kind": b"", b"shape": [n], b"data": <bytes>}``. msgpack-numpy's own decoder turns a map that
says ``kind: "O"`` into ``pickle.loads(data)``, so anyone who can reach the proxy could run code
in the service (issue 19). This decoder reads the same format but accepts only plain numeric
dtypes (kinds ``b``, ``i``, ``u``, ``f``, ``c``), checks that shape, dtype and buffer agree, and
never imports or calls pickle. Anything else raises :class:`UnsafePayloadError`, which the
sources count as ``bad_document``.

Why not patch msgpack-numpy: its decoder also builds structured (``V``) dtypes from a
descriptor the sender controls, and reads ``shape`` without checking it against the buffer; the
format is small enough that reading it ourselves is the safer and shorter path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np

NUMERIC_KINDS = frozenset("biufc")
MAX_NDIM = 32  # numpy's own limit is 64; no document array comes near either
MAX_COMPLEX_TEXT = 100  # characters of a Python complex written as text
# A plain array-protocol type string: byte order, numeric kind, item size (no structured,
# object, string, datetime or void types; no sub-array shapes).
_TYPE_STR = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")
_ND_KEYS = frozenset({b"nd", b"type", b"kind", b"shape", b"data"})


class UnsafePayloadError(ValueError):
    """A payload that claims to hold a numpy value but is not a plain numeric one (object or
    structured dtype, a shape that does not match its buffer, ...). Never decoded."""


def _numeric_dtype(type_field: Any) -> np.dtype[Any]:
    if isinstance(type_field, bytes):
        try:
            type_field = type_field.decode("ascii")
        except UnicodeDecodeError as err:
            raise UnsafePayloadError("numpy type is not ASCII") from err
    if not isinstance(type_field, str) or not _TYPE_STR.fullmatch(type_field):
        raise UnsafePayloadError(f"numpy type {str(type_field)[:40]!r} is not a numeric type")
    try:
        dtype = np.dtype(type_field)
    except (TypeError, ValueError) as err:
        raise UnsafePayloadError(f"numpy type {type_field!r}: {err}") from err
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.itemsize == 0:
        raise UnsafePayloadError(f"numpy type {type_field!r} has kind {dtype.kind!r}")
    return dtype


def _shape(shape_field: Any) -> tuple[int, ...]:
    if not isinstance(shape_field, list | tuple) or len(shape_field) > MAX_NDIM:
        raise UnsafePayloadError("numpy shape is not a short list of sizes")
    shape: list[int] = []
    for n in shape_field:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UnsafePayloadError(f"numpy shape has a bad size {str(n)[:40]!r}")
        shape.append(n)
    return tuple(shape)


def decode_numpy(obj: dict[Any, Any]) -> Any:
    """msgpack object hook: numeric numpy arrays and scalars back; plain maps unchanged.

    Raises :class:`UnsafePayloadError` for a map in msgpack-numpy's format that is not a plain
    numeric value. Memory is bounded by the message: the array is a view of bytes msgpack has
    already read (a shape that asks for more than the buffer holds is refused).
    """
    if b"nd" in obj:
        if not set(obj) <= _ND_KEYS:
            raise UnsafePayloadError("numpy map with unexpected keys")
        nd, data = obj.get(b"nd"), obj.get(b"data")
        if not isinstance(data, bytes):
            raise UnsafePayloadError("numpy data is not bytes")
        kind = obj.get(b"kind", b"")
        if kind not in (b"", ""):
            raise UnsafePayloadError(f"numpy kind {str(kind)[:10]!r} refused (object/structured)")
        dtype = _numeric_dtype(obj.get(b"type"))
        if nd is True:
            shape = _shape(obj.get(b"shape"))
            count = 1
            for n in shape:
                count *= n  # Python ints: no overflow, whatever the sender claims
            if count * dtype.itemsize != len(data):
                raise UnsafePayloadError(
                    f"numpy shape {shape} of {dtype.str} needs {count * dtype.itemsize} bytes, "
                    f"the buffer has {len(data)}"
                )
            return np.frombuffer(data, dtype=dtype).reshape(shape)
        if nd is False:
            if b"shape" in obj or len(data) != dtype.itemsize:
                raise UnsafePayloadError("numpy scalar with a shape or a wrong-sized buffer")
            return np.frombuffer(data, dtype=dtype)[0]
        raise UnsafePayloadError("numpy map whose 'nd' is neither true nor false")
    if b"complex" in obj:
        text = obj.get(b"data")
        if set(obj) != {b"complex", b"data"} or not isinstance(text, str | bytes):
            raise UnsafePayloadError("complex map of the wrong form")
        if len(text) > MAX_COMPLEX_TEXT:
            raise UnsafePayloadError("complex written in more than 100 characters")
        try:
            return complex(text.decode("ascii") if isinstance(text, bytes) else text)
        except (ValueError, UnicodeDecodeError) as err:
            raise UnsafePayloadError(f"complex {text[:40]!r}: {err}") from err
    return obj


def msgpack_serializer(doc: Mapping[str, Any]) -> bytes:
    """Encode a document; numpy arrays keep dtype and shape (msgpack-numpy's format)."""
    return msgpack.packb(doc, default=msgpack_numpy.encode, use_bin_type=True)


def msgpack_deserializer(payload: bytes) -> Any:
    """Decode a msgpack payload from the network; numeric numpy values only, never pickle.

    Raises :class:`UnsafePayloadError` for a refused numpy map, and msgpack's own errors
    (``ValueError`` subclasses and ``TypeError``/``StackError``) for bytes that are not
    msgpack. msgpack bounds every container by the payload's own length.
    """
    return msgpack.unpackb(
        payload,
        object_hook=decode_numpy,
        raw=False,
        strict_map_key=False,
    )
