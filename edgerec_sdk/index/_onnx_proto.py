"""A minimal protobuf writer for the few ONNX messages the top-K graph needs.

Why: ``onnx`` is not a runtime dependency, and the graph is tiny (3-4 nodes) while its one big initializer
(the item matrix) is better streamed as raw bytes. Messages are lists of byte chunks so the matrix is
copied once, by the final ``b"".join``. Field numbers follow ``onnx/onnx.proto`` (IR version 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Chunks = list["bytes | memoryview"]

# onnx.TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16 = 1, 2, 3, 6, 7, 9, 10
_DTYPES = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
}
_ATTR_INT = 2


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative ints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _size(chunks: Chunks) -> int:
    return sum(c.nbytes if isinstance(c, memoryview) else len(c) for c in chunks)


def _msg(field: int, chunks: Chunks) -> Chunks:
    return [_varint(field << 3 | 2), _varint(_size(chunks)), *chunks]


def _str(field: int, text: str) -> Chunks:
    return _msg(field, [text.encode()])


def _int(field: int, value: int) -> Chunks:
    return [_varint(field << 3), _varint(value)]


def tensor(name: str, array: NDArray[np.generic]) -> Chunks:
    """TensorProto with ``raw_data`` viewing the (C-contiguous, little-endian) array without copying."""
    arr = np.ascontiguousarray(array)
    out: Chunks = []
    for dim in arr.shape:
        out += _int(1, dim)
    out += _int(2, _DTYPES[arr.dtype])
    out += _str(8, name)
    out += _msg(9, [arr.reshape(-1).view(np.uint8).data])
    return out


def value_info(name: str, elem_type: int, shape: Sequence[int | str] | None) -> Chunks:
    """ValueInfoProto of a tensor; ``shape`` items are fixed sizes or symbolic names, None = unknown."""
    tensor_type: Chunks = _int(1, elem_type)
    if shape is not None:
        dims: Chunks = []
        for d in shape:
            dims += _msg(1, _int(1, d) if isinstance(d, int) else _str(2, d))
        tensor_type += _msg(2, dims)
    return _str(1, name) + _msg(2, _msg(1, tensor_type))


def node(
    op_type: str, inputs: Sequence[str], outputs: Sequence[str], *, domain: str = "", **int_attrs: int
) -> Chunks:
    """NodeProto with integer attributes only (all this graph needs)."""
    out: Chunks = []
    for name in inputs:
        out += _str(1, name)
    for name in outputs:
        out += _str(2, name)
    out += _str(4, op_type)
    for key, val in int_attrs.items():
        out += _msg(5, _str(1, key) + _int(3, val) + _int(20, _ATTR_INT))
    if domain:
        out += _str(7, domain)
    return out


def model(
    nodes: Sequence[Chunks],
    inputs: Sequence[Chunks],
    outputs: Sequence[Chunks],
    initializers: Sequence[Chunks],
    *,
    opsets: dict[str, int],
) -> bytes:
    """Serialize a ModelProto (IR version 8) holding one graph."""
    graph: Chunks = []
    for n in nodes:
        graph += _msg(1, n)
    graph += _str(2, "edgerec_topk")
    for t in initializers:
        graph += _msg(5, t)
    for i in inputs:
        graph += _msg(11, i)
    for o in outputs:
        graph += _msg(12, o)
    proto: Chunks = _int(1, 8) + _str(2, "edgerec_sdk") + _msg(7, graph)
    for domain, version in opsets.items():
        proto += _msg(8, _str(1, domain) + _int(2, version))
    return b"".join(proto)
