"""Checks run before anything in a bundle is parsed: signature, size, sha256, ONNX external data, npy headers.

Everything here works on bytes or an already-open binary stream; opening files (and refusing paths that
escape the bundle) is the loader's job. The ONNX check walks the protobuf wire format by hand so that the
runtime needs neither the ``onnx`` package nor onnxruntime to decide that a model is safe to hand over.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

import numpy as np

from ..errors import ConfigError, ModelFormatError, ModelIntegrityError

__all__ = [
    "OnnxSummary",
    "check_npy_header",
    "check_signature",
    "check_signing_key",
    "read_capped",
    "scan_onnx",
    "sign_bytes",
]

_CHUNK: Final = 1 << 20
_ORT_MARKER: Final = b"_ORT_MEM_ADDR_"
_MAX_SIGNATURE_BYTES: Final = 1024


# --------------------------------------------------------------------------- signature


def check_signing_key(key: object) -> bytes:
    """``key`` as bytes (a ``str`` is UTF-8 encoded, as ``edgerec publish --signing-key`` does), if it is usable
    for HMAC-SHA256; an empty key would make signatures meaningless."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ConfigError("signing_key must be a non-empty str or bytes")
    return bytes(key)


def sign_bytes(manifest_bytes: bytes, key: str | bytes) -> str:
    """Hex HMAC-SHA256 of the exact manifest bytes, the content of the ``signature`` file."""
    return hmac.new(check_signing_key(key), manifest_bytes, hashlib.sha256).hexdigest()


def check_signature(
    manifest_bytes: bytes,
    signature: bytes | None,
    key: str | bytes,
    *,
    source: str,
    model_version: str | None = None,
) -> None:
    """Raise :class:`ModelIntegrityError` unless ``signature`` is the HMAC of ``manifest_bytes`` under ``key``.

    Args:
        manifest_bytes: the raw ``manifest.json`` bytes, exactly as stored.
        signature: the raw ``signature`` file (hex, surrounding whitespace allowed), or None when absent.
        key: the shared signing key.
        source: the signature path, for messages.
        model_version: for the error's attribute, when already known.
    """
    if signature is None:
        raise ModelIntegrityError(
            f"{source}: signature missing but a signing key is configured",
            path=source,
            model_version=model_version,
        )
    expected = sign_bytes(manifest_bytes, key).encode("ascii")
    got = signature.strip()
    if len(signature) > _MAX_SIGNATURE_BYTES or not hmac.compare_digest(expected, got.lower()):
        raise ModelIntegrityError(
            f"{source}: signature does not match manifest.json", path=source, model_version=model_version
        )


# --------------------------------------------------------------------------- size and sha256


def read_capped(fp: BinaryIO, size: int, *, keep: bool) -> tuple[int, str, bytes | None]:
    """Stream at most ``size + 1`` bytes from ``fp``, hashing them.

    Returns ``(bytes_read, sha256_hex, data)``: ``bytes_read > size`` means the file is longer than declared
    (reading stops there, so an endless file costs one extra byte); ``data`` is the content when ``keep``.
    """
    digest = hashlib.sha256()
    parts: list[bytes] = []
    total = 0
    limit = size + 1
    while total < limit:
        chunk = fp.read(min(_CHUNK, limit - total))
        if not chunk:
            break
        total += len(chunk)
        digest.update(chunk)
        if keep:
            parts.append(chunk)
    return total, digest.hexdigest(), (b"".join(parts) if keep else None)


# --------------------------------------------------------------------------- ONNX wire-format scan

# Which length-delimited fields hold which message, per message type (numbers from onnx/onnx.proto).
# Only the messages that can (transitively) contain a TensorProto are walked.
_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _VALUE_INFO = range(9)
_CHILDREN: Final[dict[int, dict[int, int]]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {},
    _VALUE_INFO: {},
}
_TENSOR_EXTERNAL_DATA: Final = 13
_TENSOR_DATA_LOCATION: Final = 14
_GRAPH_INPUT: Final = 11
_GRAPH_OUTPUT: Final = 12
_MAX_DEPTH: Final = 64


@dataclass(frozen=True, slots=True)
class OnnxSummary:
    """What the scan learnt about the main graph: its input and output names, in order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def scan_onnx(data: bytes, *, source: str, model_version: str | None = None) -> OnnxSummary:
    """Refuse an ONNX model that could make onnxruntime read anything but ``data``.

    Walks every TensorProto reachable from the model (graph initializers, sparse initializers, node
    attributes ``t``/``tensors``/``sparse_tensor(s)``, subgraphs ``g``/``graphs``, functions, training
    graphs) and refuses any with ``external_data`` entries or ``data_location == EXTERNAL``; refuses the
    ``_ORT_MEM_ADDR_`` marker anywhere in the bytes (CVE-2022-25882, CVE-2024-27318).

    Raises:
        ModelFormatError: external data, the marker, or bytes that are not a well-formed protobuf.
    """

    def fail(msg: str) -> ModelFormatError:
        return ModelFormatError(f"{source}: {msg}", path=source, model_version=model_version)

    if _ORT_MARKER in data:
        raise fail("refused: contains the _ORT_MEM_ADDR_ marker")
    if len(data) == 0:
        raise fail("empty ONNX model")
    view = memoryview(data)
    inputs: list[str] = []
    outputs: list[str] = []
    # An explicit stack instead of recursion: a hostile model can nest graphs arbitrarily deep.
    stack: list[tuple[int, int, int, int, bool]] = [(_MODEL, 0, len(view), 0, False)]
    while stack:
        kind, start, end, depth, main = stack.pop()
        if depth > _MAX_DEPTH:
            raise fail("refused: messages nested deeper than 64 levels")
        children = _CHILDREN[kind]
        try:
            for field_no, wire, value, lo, hi in _fields(view, start, end):
                if kind == _TENSOR:
                    if field_no == _TENSOR_EXTERNAL_DATA:
                        raise fail("refused: a tensor references external data (external_data)")
                    if field_no == _TENSOR_DATA_LOCATION and (wire != 0 or value != 0):
                        raise fail("refused: a tensor has data_location EXTERNAL")
                elif main and wire == 2 and field_no in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                    name = _value_info_name(view, lo, hi)
                    (inputs if field_no == _GRAPH_INPUT else outputs).append(name)
                child = children.get(field_no)
                if child is not None:
                    if wire != 2:
                        raise fail(f"malformed protobuf: field {field_no} has wire type {wire}")
                    is_main = kind == _MODEL and field_no == 7
                    stack.append((child, lo, hi, depth + 1, is_main))
        except _WireError as exc:
            raise fail(f"not a valid ONNX protobuf ({exc})") from exc
    return OnnxSummary(inputs=tuple(inputs), outputs=tuple(outputs))


class _WireError(ModelFormatError):
    """Malformed protobuf; never leaves this module (scan_onnx re-raises it with the file named)."""


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint too long")


def _fields(view: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field, wire_type, varint_value, payload_start, payload_end)`` for each field in range."""
    while pos < end:
        key, pos = _varint(view, pos, end)
        field_no, wire = key >> 3, key & 7
        if field_no == 0:
            raise _WireError("field number 0")
        if wire == 0:
            value, pos = _varint(view, pos, end)
            yield field_no, wire, value, pos, pos
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _WireError("truncated fixed-width field")
            yield field_no, wire, 0, pos, pos + width
            pos += width
        elif wire == 2:
            length, pos = _varint(view, pos, end)
            if pos + length > end:
                raise _WireError("length-delimited field runs past its message")
            yield field_no, wire, 0, pos, pos + length
            pos += length
        else:
            # Groups (3, 4) are not used by ONNX; anything else is not protobuf at all.
            raise _WireError(f"unsupported wire type {wire}")


def _value_info_name(view: memoryview, lo: int, hi: int) -> str:
    name = ""
    for field_no, wire, _, a, b in _fields(view, lo, hi):
        if field_no == 1 and wire == 2:
            try:
                name = bytes(view[a:b]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _WireError("value name is not UTF-8") from exc
    return name


# --------------------------------------------------------------------------- .npy headers


def check_npy_header(
    fp: BinaryIO,
    *,
    file_size: int,
    dtype: np.dtype[np.generic],
    ndim: int,
    source: str,
    model_version: str | None = None,
) -> tuple[int, ...]:
    """Read an ``.npy`` header from ``fp`` and check it before any array is allocated or mapped.

    The header must declare exactly ``dtype`` (little-endian, never object), C order and ``ndim``
    dimensions, and header length plus data length must equal ``file_size``: a header that promises
    10**12 elements in a small file is refused here, not by an allocation failure later.

    Returns:
        The declared shape (the caller compares it with the manifest).
    """

    def fail(msg: str) -> ModelFormatError:
        return ModelFormatError(f"{source}: {msg}", path=source, model_version=model_version)

    try:
        major, minor = np.lib.format.read_magic(fp)
        if (major, minor) == (1, 0):
            shape, fortran, got = np.lib.format.read_array_header_1_0(fp)
        elif (major, minor) in ((2, 0), (3, 0)):
            shape, fortran, got = np.lib.format.read_array_header_2_0(fp)
        else:
            raise fail(f"unsupported .npy version {major}.{minor}")
        offset = fp.tell()
    except ModelFormatError:
        raise
    except (ValueError, OSError, SyntaxError, EOFError, io.UnsupportedOperation) as exc:
        raise fail(f"invalid .npy header ({exc})") from exc
    if got.hasobject:
        raise fail("refused: .npy holds Python objects")
    if got != dtype or got.byteorder == ">":
        raise fail(f".npy dtype is {got.str}, expected {dtype.str}")
    if fortran:
        raise fail(".npy is in Fortran order, expected C order")
    if len(shape) != ndim or any(int(s) < 0 for s in shape):
        raise fail(f".npy shape {shape} is not {ndim}-dimensional")
    count = 1
    for s in shape:
        count *= int(s)
    expected = offset + count * dtype.itemsize
    if expected != file_size:
        raise fail(
            f".npy header declares {count} elements ({expected} bytes) but the file has {file_size} bytes"
        )
    return tuple(int(s) for s in shape)
