from __future__ import annotations

import mmap
import pickle
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgerec_sdk.bundle import (
    Bundle,
    Catalog,
    ItemVectors,
    Manifest,
    load_bundle,
    quantize_rows_int8,
    sign_manifest,
    update_metrics,
    write_bundle,
)
from edgerec_sdk.errors import ModelFormatError, ModelIntegrityError
from edgerec_sdk.testing import make_bundle, make_interest_model

KEY = b"test-signing-key"


def _simple(tmp_path: Path, dtype: str, **kw: object) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((12, 4)).astype(np.float32)
    out = write_bundle(
        tmp_path / f"b-{dtype}",
        model_bytes=make_interest_model(vectors, max_seq_len=5),
        vectors=vectors,
        catalog_ids=[f"id{i}" for i in range(12)],
        catalog_columns={"price": [float(i) for i in range(12)], "in_stock": [True] * 11 + [None]},
        vector_dtype=dtype,
        max_seq_len=5,
        **kw,  # type: ignore[arg-type]
    )
    return out, vectors


def _is_mapped(arr: np.ndarray) -> bool:
    base: object = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


@pytest.mark.parametrize("dtype", ["int8", "float16", "float32"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    path, vectors = _simple(tmp_path, dtype, metrics={"recall@10": 0.5}, tokenizer_json='{"model": {}}')
    bundle = load_bundle(path)
    assert isinstance(bundle, Bundle)
    m = bundle.manifest
    assert (m.n_items, m.dim, m.max_seq_len, m.vector_dtype) == (12, 4, 5, dtype)
    assert m.metrics == {"recall@10": 0.5}
    assert bundle.model_version == m.model_version and m.model_version.startswith("edgerec-")
    assert bundle.vectors.dtype == dtype and bundle.vectors.n == 12 and bundle.vectors.dim == 4
    assert isinstance(bundle.vectors.values, np.memmap) and _is_mapped(bundle.vectors.values)
    assert not bundle.vectors.values.flags.writeable
    tol = {"int8": 0.02, "float16": 2e-3, "float32": 0.0}[dtype]
    np.testing.assert_allclose(bundle.vectors.dense_f32(), vectors, atol=tol)
    rows = np.array([3, 0, 11], dtype=np.int64)
    np.testing.assert_array_equal(bundle.vectors.rows_f32(rows), bundle.vectors.dense_f32()[rows])
    assert (bundle.vectors.scales is not None) == (dtype == "int8")
    assert bundle.vectors.nbytes == 12 * 4 * np.dtype(dtype).itemsize + (48 if dtype == "int8" else 0)
    np.testing.assert_array_equal(bundle.popular, np.arange(12))
    assert bundle.tokenizer_json == '{"model": {}}'
    assert bundle.catalog.ids[0] == "id0" and len(bundle.catalog) == 12
    assert bundle.catalog.metadata(11) == {"id": "id11", "price": 11.0}
    session = ort.InferenceSession(bundle.model_bytes, providers=["CPUExecutionProvider"])
    out = session.run(None, {"history": np.array([[0, 0, 0, 0, 3]], dtype=np.int64)})[0]
    np.testing.assert_allclose(out[0], vectors[2], rtol=1e-6)


def test_manifest_round_trip_and_pickle(bundle_dir: Path) -> None:
    raw = (bundle_dir / "manifest.json").read_bytes()
    m = Manifest.from_bytes(raw)
    assert m.to_bytes() == raw
    assert Manifest.from_bytes(m.to_bytes()) == m
    assert pickle.loads(pickle.dumps(m)) == m
    assert set(m.files) == {"interest.onnx", "items.float32.npy", "catalog.json", "popular.npy"}


def test_default_model_version_is_content_addressed(tmp_path: Path) -> None:
    a = load_bundle(make_bundle(tmp_path / "a", n_items=10, dim=4, seed=3))
    b = load_bundle(make_bundle(tmp_path / "b", n_items=10, dim=4, seed=3))
    c = load_bundle(make_bundle(tmp_path / "c", n_items=10, dim=4, seed=4))
    assert a.model_version == b.model_version != c.model_version
    assert (
        load_bundle(make_bundle(tmp_path / "d", n_items=10, dim=4, model_version="v-1")).model_version
        == "v-1"
    )


def test_signed_round_trip(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "s", n_items=10, dim=4, signing_key=KEY)
    assert load_bundle(path, signing_key=KEY).manifest.n_items == 10
    assert load_bundle(path).manifest.n_items == 10  # no key configured: signature not required


def test_update_metrics_resigns(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "s", n_items=10, dim=4, signing_key=KEY)
    before = load_bundle(path).manifest
    new = update_metrics(path, {"ndcg@10": np.float32(0.25), "n": 3}, signing_key=KEY)
    loaded = load_bundle(path, signing_key=KEY).manifest
    assert loaded == new and loaded.metrics == {"ndcg@10": 0.25, "n": 3}
    assert loaded.model_version == before.model_version and loaded.files == before.files
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []


def test_update_metrics_without_key_drops_stale_signature(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "s", n_items=10, dim=4, signing_key=KEY)
    update_metrics(path, {"x": 1})
    assert not (path / "signature").exists()
    with pytest.raises(ModelIntegrityError, match=r"signature missing"):
        load_bundle(path, signing_key=KEY)
    sign_manifest(path, KEY)
    assert load_bundle(path, signing_key=KEY).manifest.metrics == {"x": 1}


def test_update_metrics_refuses_unserialisable(bundle_dir: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"JSON"):
        update_metrics(bundle_dir, {"x": object()})


def test_write_is_atomic_and_refuses_existing(tmp_path: Path) -> None:
    path, _ = _simple(tmp_path, "int8")
    with pytest.raises(FileExistsError):
        _simple(tmp_path, "int8")
    _simple(tmp_path, "int8", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary siblings left behind


def test_write_failure_leaves_nothing(tmp_path: Path) -> None:
    vectors = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ModelFormatError, match=r"catalog"):
        write_bundle(
            tmp_path / "x",
            model_bytes=make_interest_model(vectors, max_seq_len=2),
            vectors=vectors,
            catalog_ids=["a", "b"],
            max_seq_len=2,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"catalog_ids": ["a", "a", "b"]}, "not unique"),
        ({"popular": np.array([0, 3])}, "popular"),
        ({"popular": np.array([0, 0])}, "not unique"),
        ({"vector_dtype": "int4"}, "vector_dtype"),
        ({"model_version": "../evil"}, "model_version"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"input_names": {"history": "nope"}}, "no input"),
        ({"catalog_columns": {"price": ["cheap", 1.0, 2.0]}}, "price"),
    ],
)
def test_write_refuses_bad_content(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    vectors = np.ones((3, 2), dtype=np.float32)
    args: dict[str, object] = {
        "model_bytes": make_interest_model(vectors, max_seq_len=2),
        "vectors": vectors,
        "catalog_ids": ["a", "b", "c"],
        "max_seq_len": 2,
    }
    args.update(kwargs)
    with pytest.raises(ModelFormatError, match=match):
        write_bundle(tmp_path / "x", **args)  # type: ignore[arg-type]


def test_write_refuses_nonfinite_and_float16_overflow(tmp_path: Path) -> None:
    for bad, dtype in ((np.array([[1.0, np.nan]]), "int8"), (np.array([[1e6, 0.0]]), "float16")):
        with pytest.raises(ModelFormatError, match=r"nonfinite|overflow"):
            write_bundle(
                tmp_path / "x",
                model_bytes=make_interest_model(np.zeros((1, 2), np.float32), max_seq_len=2),
                vectors=bad,
                catalog_ids=["a"],
                max_seq_len=2,
                vector_dtype=dtype,
            )


def test_quantize_rows_int8() -> None:
    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 3.0, -3.0]], dtype=np.float32)
    q, s = quantize_rows_int8(x)
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0] and s[1] == 0.0
    assert int(np.abs(q).max()) == 127
    np.testing.assert_allclose(q * s[:, None], x, atol=float(s.max()) / 2 + 1e-7)
    vecs = ItemVectors(values=q, scales=s)
    np.testing.assert_array_equal(vecs.dense_f32()[1], 0.0)


def test_catalog_is_read_only_and_lookups(bundle_dir: Path) -> None:
    cat = load_bundle(bundle_dir).catalog
    assert isinstance(cat, Catalog)
    assert cat.row("item-000001") == 0 and cat.row("nope") is None and cat.row(5) is None  # type: ignore[arg-type]
    assert "item-000030" in cat and "x" not in cat and 3 not in cat
    assert list(cat)[:2] == ["item-000001", "item-000002"]
    np.testing.assert_array_equal(cat.rows(["item-000003", "zzz", "item-000001"]), [2, 0])
    assert cat.rows([]).dtype == np.int64
    assert cat.column_names == ("title", "category", "brand", "price", "in_stock")
    meta = cat.metadata(0)
    assert meta["id"] == "item-000001" and isinstance(meta["category"], list) and meta["title"] == "Item 1"
    with pytest.raises(AttributeError):
        cat.ids = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        cat.columns["title"] = ()  # type: ignore[index]
    with pytest.raises(IndexError):
        cat.metadata(30)
    assert pickle.loads(pickle.dumps(cat)).ids == cat.ids


def test_numpy_ids_and_columns_accepted(tmp_path: Path) -> None:
    vectors = np.ones((3, 2), dtype=np.float32)
    path = write_bundle(
        tmp_path / "np",
        model_bytes=make_interest_model(vectors, max_seq_len=2),
        vectors=vectors,
        catalog_ids=np.array(["a", "b", "c"]),
        catalog_columns={"price": np.array([1.0, 2.5, 3.0]), "in_stock": np.array([True, False, True])},
        popular=np.array([2, 0], dtype=np.int32),
        max_seq_len=2,
    )
    bundle = load_bundle(path)
    assert bundle.catalog.metadata(1) == {"id": "b", "price": 2.5, "in_stock": False}
    assert bundle.popular.tolist() == [2, 0]


def test_loading_never_imports_onnx(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = make_bundle(tmp_path / "b", n_items=5, dim=4)
    code = (
        "import sys; from edgerec_sdk.bundle import load_bundle; "
        f"b = load_bundle({str(path)!r}); "
        "assert 'onnx' not in sys.modules, 'onnx imported at load time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
