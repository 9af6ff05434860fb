"""The IVF index inside a bundle: written by write_bundle, verified and mapped by load_bundle, served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerec_sdk import Recommender
from edgerec_sdk._impl.serving import ServingState
from edgerec_sdk.bundle import load_bundle, update_metrics, write_bundle
from edgerec_sdk.bundle.manifest import IVF_FILES, Manifest
from edgerec_sdk.config import IndexConfig, RecommenderConfig
from edgerec_sdk.errors import ModelFormatError, ModelIntegrityError
from edgerec_sdk.index import IvfIndex, NumpyExactIndex
from edgerec_sdk.testing import make_interest_model

from .test_ivf import clustered

N, DIM = 3000, 16


def _write(path: Path, *, index: str = "ivf", dtype: str = "int8", **kw: object) -> Path:
    x = clustered(N, DIM, centers=30, seed=2)
    return write_bundle(
        path,
        model_bytes=make_interest_model(x, max_seq_len=5),
        vectors=x,
        catalog_ids=[f"i{r}" for r in range(N)],
        catalog_columns={"in_stock": [r % 3 != 0 for r in range(N)]},
        max_seq_len=5,
        vector_dtype=dtype,
        index=index,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ivf_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("ivf") / "b")


def test_written_and_loaded(ivf_bundle: Path) -> None:
    bundle = load_bundle(ivf_bundle)
    info = bundle.manifest.index
    assert info is not None and info.kind == "ivf" and 1 <= info.nprobe <= info.nlist
    assert info.recall is not None and info.recall >= 0.95
    assert set(IVF_FILES.values()) <= set(bundle.manifest.files)
    assert bundle.ivf is not None and bundle.ivf.nprobe == info.nprobe
    assert isinstance(bundle.ivf.values, np.memmap)  # shared by every worker through the page cache
    np.testing.assert_array_equal(bundle.ivf.values, np.asarray(bundle.vectors.values)[bundle.ivf.order])


def test_target_recall_sets_the_tuned_nprobe(ivf_bundle: Path, tmp_path: Path) -> None:
    default = load_bundle(ivf_bundle).manifest.index
    assert default is not None and default.recall is not None and default.recall >= 0.99
    low = load_bundle(_write(tmp_path / "low", ivf_target_recall=0.5)).manifest.index
    assert low is not None and low.recall is not None and low.recall >= 0.5
    assert low.nprobe < default.nprobe  # a lower target probes fewer lists on the same vectors
    for bad in (0.0, 1.5, float("nan"), True, "0.9"):
        with pytest.raises(ModelFormatError, match="target_recall"):
            _write(tmp_path / "bad", ivf_target_recall=bad)


def test_no_index_below_threshold_or_when_refused(tmp_path: Path) -> None:
    for index in ("auto", "none"):  # 3000 items: auto builds nothing
        bundle = load_bundle(_write(tmp_path / index, index=index))
        assert bundle.manifest.index is None and bundle.ivf is None
        assert "index" not in json.loads((tmp_path / index / "manifest.json").read_bytes())
        assert not any(name.startswith("ivf.") for name in bundle.manifest.files)


def test_serving_chooses_ivf_above_ann_min_items(ivf_bundle: Path) -> None:
    bundle = load_bundle(ivf_bundle)
    ivf = ServingState(bundle, RecommenderConfig(index=IndexConfig(ann_min_items=1000)))
    exact = ServingState(bundle, RecommenderConfig())  # default threshold 100k: exact
    assert isinstance(ivf.index, IvfIndex)
    assert isinstance(exact.index, NumpyExactIndex)
    tuned = ServingState(bundle, RecommenderConfig(index=IndexConfig(ann_min_items=1000, nprobe=2)))
    assert isinstance(tuned.index, IvfIndex) and tuned.index.nprobe == 2


def test_recommend_end_to_end_with_ivf(ivf_bundle: Path) -> None:
    cfg = RecommenderConfig(strict=True, cache_size=0, index=IndexConfig(ann_min_items=1000))
    exact_cfg = RecommenderConfig(strict=True, cache_size=0)
    with Recommender.from_bundle(ivf_bundle, config=cfg) as rec, Recommender.from_bundle(
        ivf_bundle, config=exact_cfg
    ) as ref:
        history = ["i10", "i11", "i12"]
        got = rec.recommend("u", k=10, history=history, exclude=["i13"], filters={"in_stock": True})
        want = ref.recommend("u", k=10, history=history, exclude=["i13"], filters={"in_stock": True})
        ids = [r.item_id for r in got.items]
        assert len(ids) == 10 and not {"i10", "i11", "i12", "i13"} & set(ids)
        assert all(int(i[1:]) % 3 != 0 for i in ids)  # in stock only
        overlap = len(set(ids) & {r.item_id for r in want.items}) / 10
        assert overlap >= 0.8


def test_float_bundle_gets_int8_lists_and_exact_rescoring(tmp_path: Path) -> None:
    bundle = load_bundle(_write(tmp_path / "f", dtype="float32"))
    assert bundle.ivf is not None and bundle.ivf.values.dtype == np.int8
    state = ServingState(bundle, RecommenderConfig(index=IndexConfig(ann_min_items=1)))
    q = np.asarray(bundle.vectors.values[:3], dtype=np.float32)
    res = state.index.search(q, 5)
    want = np.einsum("bkd,bd->bk", np.asarray(bundle.vectors.values)[res.rows], q)
    np.testing.assert_allclose(res.scores, want, rtol=1e-5, atol=1e-5)


def test_update_metrics_keeps_the_index_section(ivf_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ivf_bundle, copy)
    before = load_bundle(copy).manifest.index
    after = update_metrics(copy, {"ndcg@10": 0.5}).index
    assert before is not None and after == before
    assert load_bundle(copy).ivf is not None


def test_tampered_ivf_file_is_refused(ivf_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ivf_bundle, copy)
    path = copy / IVF_FILES["order"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        load_bundle(copy)


@pytest.mark.parametrize(
    "section",
    [
        {"kind": "hnsw", "nlist": 4, "nprobe": 1},
        {"kind": "ivf", "nlist": 0, "nprobe": 1},
        {"kind": "ivf", "nlist": 4, "nprobe": 5},
        {"kind": "ivf", "nlist": 4, "nprobe": True},
        {"kind": "ivf", "nlist": 4, "nprobe": 1, "recall": "high"},
        [],
    ],
)
def test_manifest_index_section_is_validated(ivf_bundle: Path, section: object) -> None:
    doc = json.loads((ivf_bundle / "manifest.json").read_bytes())
    doc["index"] = section
    with pytest.raises(ModelFormatError):
        Manifest.from_bytes(json.dumps(doc).encode())


def test_manifest_index_needs_its_files(ivf_bundle: Path) -> None:
    doc = json.loads((ivf_bundle / "manifest.json").read_bytes())
    del doc["files"][IVF_FILES["centroids"]]
    with pytest.raises(ModelFormatError):
        Manifest.from_bytes(json.dumps(doc).encode())


def test_layout_not_matching_manifest_is_refused(tmp_path: Path) -> None:
    """Consistent checksums but a wrong nlist in the manifest: refused when the layout is checked."""
    path = _write(tmp_path / "b", ivf_nlist=8, ivf_nprobe=2)
    doc = json.loads((path / "manifest.json").read_bytes())
    doc["index"]["nlist"] = 9
    doc["index"]["nprobe"] = 2
    (path / "manifest.json").write_bytes(json.dumps(doc).encode())
    with pytest.raises(ModelFormatError):
        load_bundle(path)


def test_auto_builds_from_ann_min_items_and_only_when_it_pays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edgerec_sdk.bundle.writer.ANN_MIN_ITEMS", 1000)
    # 3000 rows in 93 lists: 0.95 needs 4 lists, the default 0.99 needs 12 (past the 10% cut-off).
    clustered_bundle = load_bundle(_write(tmp_path / "c", index="auto", ivf_target_recall=0.95))
    assert clustered_bundle.manifest.index is not None
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)  # no structure at all
    path = write_bundle(
        tmp_path / "g", model_bytes=make_interest_model(x, max_seq_len=5), vectors=x,
        catalog_ids=[f"i{r}" for r in range(N)], max_seq_len=5, index="auto",
    )
    assert load_bundle(path).manifest.index is None
    forced = write_bundle(
        tmp_path / "f", model_bytes=make_interest_model(x, max_seq_len=5), vectors=x,
        catalog_ids=[f"i{r}" for r in range(N)], max_seq_len=5, index="ivf",
    )
    assert load_bundle(forced).manifest.index is not None
