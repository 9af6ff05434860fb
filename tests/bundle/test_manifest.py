from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerec_sdk.bundle import FileEntry, Manifest
from edgerec_sdk.errors import ModelFormatError

SHA = "ab" * 32
VALID: dict[str, Any] = {
    "format": "edgerec-bundle",
    "format_version": 1,
    "model_version": "beauty-sasrec-3f9a1c2b",
    "created_at": "2026-11-22T19:30:00Z",
    "parent_version": None,
    "dim": 64,
    "n_items": 12101,
    "max_seq_len": 50,
    "vector_dtype": "int8",
    "model": {
        "file": "interest.onnx",
        "inputs": {"history": "history"},
        "outputs": {"interest": "interest"},
        "query_max_len": 0,
    },
    "files": {
        name: {"sha256": SHA, "size": 10}
        for name in ("interest.onnx", "items.int8.npy", "items.scales.npy", "catalog.json", "popular.npy")
    },
    "metrics": {"recall@10": 0.1},
    "extra": {},
}


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_valid_manifest_parses() -> None:
    m = Manifest.from_bytes(_raw(VALID))
    assert m.model_version == "beauty-sasrec-3f9a1c2b" and m.vector_dtype == "int8"
    assert m.files["catalog.json"] == FileEntry(sha256=SHA, size=10)
    assert dict(m.input_names) == {"history": "history"} and m.query_max_len == 0
    assert json.loads(m.to_bytes()) == VALID
    with pytest.raises(TypeError):
        m.files["x"] = FileEntry(SHA, 1)  # type: ignore[index]


def _mutate(path: tuple[str, ...], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("dim",), 0, "dim must be a positive integer"),
        (("dim",), True, "dim must be a positive integer"),
        (("n_items",), 1.5, "n_items"),
        (("max_seq_len",), _DELETE, "max_seq_len"),
        (("n_items",), 2**60, "absurdly large"),
        (("vector_dtype",), "int4", "vector_dtype"),
        (("model_version",), "a" * 129, "invalid model_version"),
        (("model_version",), "../x", "invalid model_version"),
        (("parent_version",), 5, "invalid parent_version"),
        (("created_at",), 5, "created_at"),
        (("model",), [], "'model' must be an object"),
        (("model", "inputs"), {"query": "q"}, "history"),
        (("model", "inputs"), {"history": "h", "image": "i"}, "unknown roles"),
        (("model", "inputs"), {"history": ""}, "non-empty string"),
        (("model", "inputs", "query"), "q", "query_max_len must be positive"),
        (("model", "outputs"), {"x": "y"}, "interest"),
        (("model", "query_max_len"), -1, "query_max_len"),
        (("files", "items.scales.npy"), _DELETE, "must list 'items.scales.npy'"),
        (("files", "interest.onnx", "sha256"), "AB" * 32, "sha256"),
        (("files", "interest.onnx", "size"), -1, "size"),
        (("files", "interest.onnx"), [], "must be an object"),
        (("files",), [], "'files' must be an object"),
        (("metrics",), [], "metrics"),
    ],
)
def test_manifest_refusals(path: tuple[str, ...], value: object, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        Manifest.from_bytes(_raw(_mutate(path, value)), source="m.json")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"null",
        b"{",
        b"\xff\xfe",
        b'{"a": NaN}',
        b'{"format": Infinity}',
        b"1" * 5000,
        b"[" * 100_000,
        b"\x00",
    ],
)
def test_manifest_garbage(raw: bytes) -> None:
    with pytest.raises(ModelFormatError):
        Manifest.from_bytes(raw)


def test_manifest_too_large() -> None:
    with pytest.raises(ModelFormatError, match=r"larger than"):
        Manifest.from_bytes(b" " * (16 * 1024 * 1024 + 1))


def test_float16_and_float32_required_files() -> None:
    for dtype in ("float16", "float32"):
        doc = copy.deepcopy(VALID)
        doc["vector_dtype"] = dtype
        with pytest.raises(ModelFormatError, match=f"items.{dtype}.npy"):
            Manifest.from_bytes(_raw(doc))
        doc["files"][f"items.{dtype}.npy"] = {"sha256": SHA, "size": 1}
        assert Manifest.from_bytes(_raw(doc)).vector_dtype == dtype


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
_keys = st.sampled_from(sorted(VALID)) | st.text(max_size=10)


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=200))
def test_from_bytes_only_raises_model_format_error_on_bytes(raw: bytes) -> None:
    with contextlib.suppress(ModelFormatError):
        Manifest.from_bytes(raw)


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(_keys, _json, max_size=8), base=st.booleans(), patch=st.dictionaries(_keys, _json))
def test_from_bytes_only_raises_model_format_error_on_json(
    doc: dict[str, Any], base: bool, patch: dict[str, Any]
) -> None:
    if base:
        doc = {**copy.deepcopy(VALID), **patch}
    with contextlib.suppress(ModelFormatError):
        Manifest.from_bytes(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["model", "files", "metrics"]), key=st.text(max_size=12), value=_json)
def test_from_bytes_nested_fuzz(section: str, key: str, value: object) -> None:
    doc = copy.deepcopy(VALID)
    doc[section][key] = value
    try:
        m = Manifest.from_bytes(json.dumps(doc).encode())
    except ModelFormatError:
        return
    assert Manifest.from_bytes(m.to_bytes()) == m


@pytest.mark.parametrize("raw_value", [b"1e999", b"-1e400", b"99999999999999999999999"])
def test_manifest_values_that_cannot_round_trip(raw_value: bytes) -> None:
    raw = json.dumps({**VALID, "metrics": {"x": "PLACEHOLDER"}}).encode().replace(b'"PLACEHOLDER"', raw_value)
    with pytest.raises(ModelFormatError):
        Manifest.from_bytes(raw)
