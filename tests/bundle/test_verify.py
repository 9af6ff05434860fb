"""Unit tests of the pure checks in bundle/verify.py (no files)."""

from __future__ import annotations

import hashlib
import hmac
import io

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerec_sdk.bundle.verify import check_npy_header, check_signature, read_capped, scan_onnx, sign_bytes
from edgerec_sdk.errors import ModelFormatError, ModelIntegrityError
from edgerec_sdk.testing import make_interest_model

from .test_faults import B07_MODELS, _const, _io, _model


def test_scan_accepts_real_model_and_reports_names() -> None:
    model = make_interest_model(
        np.ones((5, 3), np.float32), max_seq_len=4, weights=np.eye(3, dtype=np.float32)
    )
    summary = scan_onnx(model, source="m.onnx")
    assert summary.inputs == ("history",) and summary.outputs == ("interest",)


@pytest.mark.parametrize("case", sorted(B07_MODELS))
def test_b07_scan_refuses(case: str) -> None:
    with pytest.raises(ModelFormatError, match=r"m.onnx: refused"):
        scan_onnx(B07_MODELS[case](), source="m.onnx")


@pytest.mark.parametrize("ext", [{"entries": False}, {"location": False}])
def test_b07_scan_finds_one_bad_tensor_deep_in_a_loop_body(ext: dict[str, bool]) -> None:
    ins, outs = _io()
    inner = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=_const("c", **ext))],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [8]),
        ],
    )
    nested = helper.make_graph(
        [helper.make_node("Loop", ["", ""], ["interest"], body=inner)],
        "outer",
        [],
        [helper.make_tensor_value_info("interest", TensorProto.FLOAT, [8])],
    )
    node = helper.make_node("If", ["c"], ["interest"], then_branch=nested, else_branch=nested)
    with pytest.raises(ModelFormatError, match=r"refused: a tensor"):
        scan_onnx(_model(helper.make_graph([node], "g", ins, outs)), source="m.onnx")


@pytest.mark.parametrize("data", [b"", b"\x0a\x05abc", b"\x0b", b"\xff" * 11, b"\x3a\x02\x2a\x05"])
def test_scan_refuses_malformed_protobuf(data: bytes) -> None:
    with pytest.raises(ModelFormatError):
        scan_onnx(data, source="m.onnx")


def test_scan_refuses_data_location_with_wrong_wire_type() -> None:
    # graph(7) { initializer(5) { data_location(14) as a length-delimited field } }
    tensor = bytes([0x72, 0x01, 0x01])
    graph = bytes([0x2A, len(tensor)]) + tensor
    with pytest.raises(ModelFormatError, match=r"data_location"):
        scan_onnx(bytes([0x3A, len(graph)]) + graph, source="m.onnx")


def test_scan_refuses_absurd_nesting() -> None:
    # attribute g -> graph -> node -> attribute g ... built from the inside out
    graph = b""
    for _ in range(40):
        attr = bytes([0x32]) + _len(graph) + graph  # AttributeProto.g = 6
        node = bytes([0x2A]) + _len(attr) + attr  # NodeProto.attribute = 5
        graph = bytes([0x0A]) + _len(node) + node  # GraphProto.node = 1
    with pytest.raises(ModelFormatError, match=r"nested deeper"):
        scan_onnx(bytes([0x3A]) + _len(graph) + graph, source="m.onnx")


def _len(data: bytes) -> bytes:
    n, out = len(data), bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def test_signature_helpers() -> None:
    raw = b'{"x": 1}'
    sig = sign_bytes(raw, b"key")
    assert sig == hmac.new(b"key", raw, hashlib.sha256).hexdigest()
    check_signature(raw, sig.encode() + b"\n", b"key", source="s")
    check_signature(raw, sig.upper().encode(), b"key", source="s")
    for bad in (None, b"", sig[:-1].encode(), b"0" * 2000):
        with pytest.raises(ModelIntegrityError):
            check_signature(raw, bad, b"key", source="s")


def test_read_capped_stops_one_byte_past_declared() -> None:
    class Endless(io.RawIOBase):
        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            b[:] = b"x" * len(b)
            return len(b)

    total, _, data = read_capped(Endless(), 10, keep=True)  # type: ignore[arg-type]
    assert total == 11 and data == b"x" * 11
    total, digest, data = read_capped(io.BytesIO(b"abc"), 3, keep=False)
    assert (total, digest, data) == (3, hashlib.sha256(b"abc").hexdigest(), None)


def test_npy_header_check_returns_shape() -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 2), np.float32))
    size = len(buf.getvalue())
    buf.seek(0)
    assert check_npy_header(buf, file_size=size, dtype=np.dtype("<f4"), ndim=2, source="x") == (3, 2)
