"""Every refusal of load_bundle, named after the fault class B of docs/reliability.md ids where one applies."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgerec_sdk.bundle import load_bundle, sign_manifest
from edgerec_sdk.bundle import loader as loader_mod
from edgerec_sdk.errors import ModelFormatError, ModelIntegrityError
from edgerec_sdk.testing import make_bundle

from .conftest import edit_manifest, replace_file

KEY = b"k" * 32


def _version(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_bytes())["model_version"])


def _npy(arr: np.ndarray, **kw: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _refuse_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file was parsed before its checksum was verified")

    monkeypatch.setattr(loader_mod, "scan_onnx", boom)
    monkeypatch.setattr(loader_mod, "check_npy_header", boom)
    monkeypatch.setattr("edgerec_sdk.bundle.loader.Catalog.from_json", boom)


# --------------------------------------------------------------------------- B01 / B02 size and sha256


def test_b01_truncated_file(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundle_dir / "items.float32.npy"
    path.write_bytes(path.read_bytes()[:-5])
    _refuse_parsing(monkeypatch)
    with pytest.raises(ModelIntegrityError, match=r"items.float32.npy: size mismatch") as info:
        load_bundle(bundle_dir)
    assert info.value.path == str(path) and info.value.model_version == _version(bundle_dir)


def test_b01_longer_than_declared(bundle_dir: Path) -> None:
    with open(bundle_dir / "catalog.json", "ab") as fp:
        fp.write(b" ")
    with pytest.raises(ModelIntegrityError, match=r"catalog.json: size mismatch"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["interest.onnx", "items.float32.npy", "catalog.json", "popular.npy"])
def test_b02_flipped_byte_sha256(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    path = bundle_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _refuse_parsing(monkeypatch)
    with pytest.raises(ModelIntegrityError, match=f"{name}: sha256 mismatch") as info:
        load_bundle(bundle_dir)
    assert info.value.path == str(path)


def test_missing_listed_file(bundle_dir: Path) -> None:
    (bundle_dir / "popular.npy").unlink()
    with pytest.raises(ModelIntegrityError, match=r"popular.npy: missing"):
        load_bundle(bundle_dir)


def test_missing_bundle_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"bundle directory not found") as info:
        load_bundle(tmp_path / "nope")
    assert info.value.path == str(tmp_path / "nope")


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(ModelFormatError, match=r"manifest.json: manifest missing"):
        load_bundle(bundle_dir)


def test_symlink_escaping_bundle_refused(bundle_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_bytes((bundle_dir / "catalog.json").read_bytes())
    (bundle_dir / "catalog.json").unlink()
    os.symlink(outside, bundle_dir / "catalog.json")
    with pytest.raises(ModelFormatError, match=r"symlink points outside"):
        load_bundle(bundle_dir)


def test_symlink_inside_bundle_allowed(bundle_dir: Path) -> None:
    (bundle_dir / "catalog.json").rename(bundle_dir / "catalog-real.json")
    os.symlink("catalog-real.json", bundle_dir / "catalog.json")
    assert len(load_bundle(bundle_dir).catalog) == 30


def test_not_a_regular_file_refused(bundle_dir: Path) -> None:
    (bundle_dir / "popular.npy").unlink()
    (bundle_dir / "popular.npy").mkdir()
    with pytest.raises(ModelFormatError, match=r"not a regular file"):
        load_bundle(bundle_dir)


# --------------------------------------------------------------------------- B05 signature


def test_b05_bad_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_bundle(tmp_path / "b", n_items=5, dim=4, signing_key=KEY)
    assert load_bundle(path, signing_key=KEY).manifest.n_items == 5
    # by another key
    with pytest.raises(ModelIntegrityError, match=r"signature does not match") as info:
        load_bundle(path, signing_key=b"other-key")
    assert info.value.path == str(path / "signature")
    # manifest changed after signing: the signature check runs before the manifest is even parsed
    edit_manifest(path, lambda d: d.update(format_version=99))
    monkeypatch.setattr("edgerec_sdk.bundle.loader.Manifest.from_bytes", None)
    with pytest.raises(ModelIntegrityError, match=r"signature does not match"):
        load_bundle(path, signing_key=KEY)
    monkeypatch.undo()
    # garbage and missing signatures
    (path / "signature").write_bytes(b"not hex at all")
    with pytest.raises(ModelIntegrityError, match=r"signature does not match"):
        load_bundle(path, signing_key=KEY)
    (path / "signature").unlink()
    with pytest.raises(ModelIntegrityError, match=r"signature missing"):
        load_bundle(path, signing_key=KEY)


def test_b05_empty_key_is_a_config_error(bundle_dir: Path) -> None:
    from edgerec_sdk.errors import ConfigError

    with pytest.raises(ConfigError):
        load_bundle(bundle_dir, signing_key=b"")
    with pytest.raises(ConfigError):
        sign_manifest(bundle_dir, b"")


# --------------------------------------------------------------------------- B06 names


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", "a/b", "a\x00b", ".hidden", "-x", "", "x" * 256, "caf\u00e9", "a b", "..\\x"],
)
def test_b06_path_traversal_names(bundle_dir: Path, name: str) -> None:
    edit_manifest(bundle_dir, lambda d: d["files"].update({name: d["files"]["catalog.json"]}))
    with pytest.raises(ModelFormatError, match=r"invalid file name|longer than 255"):
        load_bundle(bundle_dir)


def test_b06_model_file_name_is_checked(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d["model"].update(file="../interest.onnx"))
    with pytest.raises(ModelFormatError, match=r"invalid file name"):
        load_bundle(bundle_dir)


def test_b06_duplicated_names(bundle_dir: Path) -> None:
    raw = (bundle_dir / "manifest.json").read_text()
    entry = json.dumps(json.loads(raw)["files"]["catalog.json"])
    (bundle_dir / "manifest.json").write_text(
        raw.replace('"files": {', f'"files": {{"catalog.json": {entry},', 1)
    )
    with pytest.raises(ModelFormatError, match=r"duplicated key"):
        load_bundle(bundle_dir)


def test_b06_case_collision(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d["files"].update({"Catalog.json": d["files"]["catalog.json"]}))
    with pytest.raises(ModelFormatError, match=r"duplicated file name"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["manifest.json", "signature"])
def test_b06_manifest_and_signature_never_listed(bundle_dir: Path, name: str) -> None:
    edit_manifest(bundle_dir, lambda d: d["files"].update({name: d["files"]["catalog.json"]}))
    with pytest.raises(ModelFormatError, match=r"must not list"):
        load_bundle(bundle_dir)


# --------------------------------------------------------------------------- B07 ONNX external data


def _external(tensor: TensorProto, *, location: bool = True, entries: bool = True) -> TensorProto:
    if location:
        tensor.data_location = TensorProto.EXTERNAL
    if entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"
    if location or entries:
        tensor.ClearField("float_data")
        tensor.ClearField("raw_data")
    return tensor


def _model(graph: onnx.GraphProto, functions: list[onnx.FunctionProto] | None = None) -> bytes:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=functions or [],
    )
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    return (
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", 10])],
        [helper.make_tensor_value_info("interest", TensorProto.FLOAT, ["batch", 8])],
    )


def _const(name: str, **ext: bool) -> TensorProto:
    return _external(helper.make_tensor(name, TensorProto.FLOAT, [8], [0.0] * 8), **ext)


def external_initializer(**ext: bool) -> bytes:
    ins, outs = _io()
    node = helper.make_node("Identity", ["w"], ["interest"])
    return _model(helper.make_graph([node], "g", ins, outs, initializer=[_const("w", **ext)]))


def external_constant_attribute() -> bytes:
    ins, outs = _io()
    node = helper.make_node("Constant", [], ["interest"], value=_const("c"))
    return _model(helper.make_graph([node], "g", ins, outs))


def external_in_subgraph() -> bytes:
    ins, outs = _io()
    inner_const = helper.make_node("Constant", [], ["x"], value=_const("c", entries=False))
    then_g = helper.make_graph(
        [inner_const], "then", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "else",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
        initializer=[_const("w", location=False)],
    )
    cond = helper.make_node(
        "Constant", [], ["cond"], value=helper.make_tensor("b", TensorProto.BOOL, [], [True])
    )
    node = helper.make_node("If", ["cond"], ["interest"], then_branch=then_g, else_branch=else_g)
    return _model(helper.make_graph([cond, node], "g", ins, outs))


def external_in_sparse_initializer() -> bytes:
    ins, outs = _io()
    values = _const("v")
    indices = helper.make_tensor("i", TensorProto.INT64, [8], list(range(8)))
    sparse = helper.make_sparse_tensor(values, indices, [8])
    graph = helper.make_graph([helper.make_node("Identity", ["v"], ["interest"])], "g", ins, outs)
    graph.sparse_initializer.append(sparse)
    return _model(graph)


def external_in_function() -> bytes:
    ins, outs = _io()
    fn = helper.make_function(
        "local",
        "F",
        [],
        ["out"],
        [helper.make_node("Constant", [], ["out"], value=_const("c"))],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph([helper.make_node("F", [], ["interest"], domain="local")], "g", ins, outs)
    return _model(graph, [fn])


def external_in_attribute_tensors_list() -> bytes:
    ins, outs = _io()
    node = helper.make_node("Identity", ["history"], ["interest"])
    node.attribute.append(
        helper.make_attribute(
            "ts", [helper.make_tensor("ok", TensorProto.FLOAT, [1], [1.0]), _const("bad", location=False)]
        )
    )
    return _model(helper.make_graph([node], "g", ins, outs))


def ort_marker() -> bytes:
    ins, outs = _io()
    node = helper.make_node("Identity", ["history"], ["interest"], doc_string="_ORT_MEM_ADDR_")
    return _model(helper.make_graph([node], "g", ins, outs))


B07_MODELS = {
    "initializer_location_and_entries": lambda: external_initializer(),
    "initializer_location_only": lambda: external_initializer(entries=False),
    "initializer_entries_only": lambda: external_initializer(location=False),
    "constant_attribute": external_constant_attribute,
    "if_subgraphs": external_in_subgraph,
    "sparse_initializer": external_in_sparse_initializer,
    "function_body": external_in_function,
    "attribute_tensors_list": external_in_attribute_tensors_list,
    "ort_mem_addr_marker": ort_marker,
}


@pytest.mark.parametrize("case", sorted(B07_MODELS))
def test_b07_onnx_external_data(bundle_dir: Path, case: str) -> None:
    replace_file(bundle_dir, "interest.onnx", B07_MODELS[case]())
    with pytest.raises(ModelFormatError, match=r"interest.onnx: refused") as info:
        load_bundle(bundle_dir)
    assert not isinstance(info.value, ModelIntegrityError)
    assert info.value.model_version == _version(bundle_dir)


def test_b07_garbage_model(bundle_dir: Path) -> None:
    replace_file(bundle_dir, "interest.onnx", b"\x0a\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(ModelFormatError, match=r"not a valid ONNX protobuf"):
        load_bundle(bundle_dir)


# --------------------------------------------------------------------------- B10 contract and shapes


def test_b10_wrong_dimension(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d.update(dim=9))
    with pytest.raises(ModelFormatError, match=r"items.float32.npy: shape \(30, 8\) does not match"):
        load_bundle(bundle_dir)


def test_b10_wrong_n_items(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d.update(n_items=29))
    with pytest.raises(ModelFormatError, match=r"does not match"):
        load_bundle(bundle_dir)


def test_b10_catalog_rows_disagree(bundle_dir: Path) -> None:
    doc = json.loads((bundle_dir / "catalog.json").read_bytes())
    doc["ids"] = doc["ids"][:-1]
    doc["columns"] = {}
    replace_file(bundle_dir, "catalog.json", json.dumps(doc).encode())
    with pytest.raises(ModelFormatError, match=r"catalog.json: has 29 ids"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(("role", "section"), [("history", "inputs"), ("interest", "outputs")])
def test_b10_names_missing_from_graph(bundle_dir: Path, role: str, section: str) -> None:
    edit_manifest(bundle_dir, lambda d: d["model"][section].update({role: "renamed"}))
    with pytest.raises(ModelFormatError, match=r"graph has no"):
        load_bundle(bundle_dir)


def test_popular_rows_out_of_range(bundle_dir: Path) -> None:
    replace_file(bundle_dir, "popular.npy", _npy(np.array([0, 30], dtype=np.int64)))
    with pytest.raises(ModelFormatError, match=r"popular.npy: rows must lie"):
        load_bundle(bundle_dir)


def test_catalog_duplicate_ids(bundle_dir: Path) -> None:
    doc = json.loads((bundle_dir / "catalog.json").read_bytes())
    doc["ids"][1] = doc["ids"][0]
    replace_file(bundle_dir, "catalog.json", json.dumps(doc).encode())
    with pytest.raises(ModelFormatError, match=r"not unique"):
        load_bundle(bundle_dir)


# --------------------------------------------------------------------------- B11 non-finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_b11_nan_vectors(bundle_dir: Path, bad: float) -> None:
    values = np.load(bundle_dir / "items.float32.npy")
    values[7, 3] = bad
    replace_file(bundle_dir, "items.float32.npy", _npy(values))
    with pytest.raises(ModelFormatError, match=r"items.float32.npy: refused: NaN or inf"):
        load_bundle(bundle_dir)


def test_b11_nan_scales(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "b", n_items=10, dim=4, dtype="int8")
    scales = np.load(path / "items.scales.npy")
    scales[2] = np.nan
    replace_file(path, "items.scales.npy", _npy(scales))
    with pytest.raises(ModelFormatError, match=r"items.scales.npy: refused"):
        load_bundle(path)


def test_b11_inf_float16(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "b", n_items=10, dim=4, dtype="float16")
    values = np.load(path / "items.float16.npy")
    values[0, 0] = np.inf
    replace_file(path, "items.float16.npy", _npy(values))
    with pytest.raises(ModelFormatError, match=r"NaN or inf"):
        load_bundle(path)


# --------------------------------------------------------------------------- B12 npy headers


def _with_header(shape: tuple[int, ...], body: bytes, descr: str = "<f4", fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue() + body


def test_b12_npy_header_mismatch(bundle_dir: Path) -> None:
    raw = (bundle_dir / "items.float32.npy").read_bytes()
    body = raw[-30 * 8 * 4 :]
    for shape, match in (
        ((30, 9), "header declares"),
        ((10**12, 8), "header declares"),
        ((30, 4), "header declares"),
        ((30, 8, 1), "not 2-dimensional"),
    ):
        replace_file(bundle_dir, "items.float32.npy", _with_header(shape, body))
        with pytest.raises(ModelFormatError, match=match):
            load_bundle(bundle_dir)
    replace_file(bundle_dir, "items.float32.npy", _with_header((30, 8), body, fortran=True))
    with pytest.raises(ModelFormatError, match=r"Fortran"):
        load_bundle(bundle_dir)
    replace_file(bundle_dir, "items.float32.npy", _with_header((30, 8), body, descr=">f4"))
    with pytest.raises(ModelFormatError, match=r"dtype"):
        load_bundle(bundle_dir)
    replace_file(bundle_dir, "items.float32.npy", _with_header((30, 16), body, descr="<f2"))
    with pytest.raises(ModelFormatError, match=r"dtype is <f2"):
        load_bundle(bundle_dir)
    replace_file(bundle_dir, "items.float32.npy", b"\x93NUMPY garbage")
    with pytest.raises(ModelFormatError, match=r"invalid .npy header|unsupported .npy"):
        load_bundle(bundle_dir)


# --------------------------------------------------------------------------- B13 format


@pytest.mark.parametrize(
    ("key", "value"), [("format_version", 2), ("format_version", "1"), ("format_version", None)]
)
def test_b13_unknown_format_version(bundle_dir: Path, key: str, value: object) -> None:
    edit_manifest(bundle_dir, lambda d: d.update({key: value}))
    with pytest.raises(ModelFormatError, match=r"unknown format_version") as info:
        load_bundle(bundle_dir)
    assert not isinstance(info.value, ModelIntegrityError)
    assert info.value.model_version == _version(bundle_dir)


def test_b13_unknown_format(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d.update(format="tf-saved-model"))
    with pytest.raises(ModelFormatError, match=r"format must be"):
        load_bundle(bundle_dir)


def test_b13_npy_with_objects(bundle_dir: Path) -> None:
    replace_file(bundle_dir, "popular.npy", _npy(np.array([0, "x", None], dtype=object), allow_pickle=True))
    with pytest.raises(ModelFormatError, match=r"popular.npy: refused: .npy holds Python objects"):
        load_bundle(bundle_dir)


def test_unknown_top_level_keys_ignored(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda d: d.update(future_field={"x": 1}))
    assert load_bundle(bundle_dir).manifest.n_items == 30
