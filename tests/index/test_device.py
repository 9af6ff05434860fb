"""Device choice (CPU or CUDA) and the I/O-binding top-K path: CPU behaviour here, GPU under ``-m gpu``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerec_sdk import IndexConfig, Recommender, RecommenderConfig
from edgerec_sdk.errors import ConfigError, ModelLoadError
from edgerec_sdk.index import (
    AUTO_CUDA_MIN_ROWS,
    HAS_CUDA,
    OnnxTopKIndex,
    _caps,
    brute_force_topk,
    cuda_usable,
    make_index,
    providers_for,
    resolve_device,
)
from edgerec_sdk.testing import fork_probe, make_bundle

_NO_GPU = "no usable CUDA GPU (needs onnxruntime-gpu and an NVIDIA GPU)"


def _matrix(n: int = 500, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from edgerec_sdk.bundle import quantize_rows_int8

    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return quantize_rows_int8(v)


def test_cpu_is_always_cpu_and_auto_is_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu", 10**9) == "cpu"
    monkeypatch.setattr(_caps, "cuda_usable", lambda: False)
    assert resolve_device("auto", 10**9) == "cpu"
    with pytest.raises(ConfigError, match=r"device='cuda'.*no usable CUDA GPU"):
        resolve_device("cuda", 10)
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu", 10)  # type: ignore[arg-type]


def test_auto_takes_the_gpu_only_for_large_catalogs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_caps, "cuda_usable", lambda: True)
    assert resolve_device("auto", AUTO_CUDA_MIN_ROWS) == "cuda"
    assert resolve_device("auto", AUTO_CUDA_MIN_ROWS - 1) == "cpu"
    assert resolve_device("cuda", 1) == "cuda"


def test_providers_for_each_device() -> None:
    assert providers_for("cpu") == ("CPUExecutionProvider",)
    assert providers_for("cuda") == ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has the CUDA provider")
def test_cuda_usable_is_false_without_the_provider_and_spawns_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("probed without a CUDA provider")

    monkeypatch.setattr(_caps.subprocess, "run", no_subprocess)
    assert cuda_usable() is False


def test_config_validates_device_and_reads_it_from_the_environment() -> None:
    assert RecommenderConfig().device == "auto"
    assert RecommenderConfig.from_env(environ={"EDGEREC_DEVICE": "cpu"}).device == "cpu"
    with pytest.raises(ConfigError, match="device must be"):
        RecommenderConfig(device="gpu")  # type: ignore[arg-type]


@pytest.mark.skipif(cuda_usable(), reason="a GPU is usable here")
def test_from_bundle_with_device_cuda_and_no_gpu_is_a_clear_error(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", n_items=50, dim=8)
    with pytest.raises(ConfigError, match="device='cuda'"):
        Recommender.from_bundle(tmp_path / "b", config=RecommenderConfig(device="cuda"))


def test_status_reports_device_and_index(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", n_items=50, dim=8)
    with Recommender.from_bundle(tmp_path / "b", config=RecommenderConfig(device="cpu")) as rec:
        st = rec.status()
        assert (st.device, st.index) == ("cpu", "numpy")


def test_bound_index_matches_the_initializer_graph_with_masks() -> None:
    v8, s8 = _matrix()
    plain = OnnxTopKIndex(v8, s8)
    bound = OnnxTopKIndex(v8, s8, bind_items=True)
    assert (plain.bound, bound.bound, bound.device) == (False, True, "cpu")
    q = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    allow = np.zeros(500, bool)
    allow[::7] = True
    exclude = [np.array([1, 2]), np.array([], np.int64), np.arange(50)]
    for kw in ({}, {"allow": allow}, {"exclude": exclude}, {"allow": allow, "exclude": exclude}):
        a, b = plain.search(q, 10, **kw), bound.search(q, 10, **kw)  # type: ignore[arg-type]
        assert a.rows.tolist() == b.rows.tolist()
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_bound_index_reuploads_its_items_in_a_forked_child() -> None:
    v8, s8 = _matrix()
    bound = OnnxTopKIndex(v8, s8, bind_items=True)
    q = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    want = bound.search(q, 5).rows.tolist()
    parent_items = bound._items

    def checks() -> list[object]:
        got = bound.search(q, 5).rows.tolist()
        return [got == want, bound._items is not parent_items]

    assert fork_probe(checks) == "11"
    assert bound.search(q, 5).rows.tolist() == want and bound._items is parent_items


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has the CUDA provider")
def test_cuda_index_on_a_cpu_only_onnxruntime_is_a_clear_load_error() -> None:
    v8, s8 = _matrix()
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider"):
        make_index(v8, s8, device="cuda")


def test_make_index_refuses_an_unknown_device() -> None:
    v8, s8 = _matrix(n=20)
    with pytest.raises(ValueError, match="device"):
        make_index(v8, s8, device="tpu")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason=_NO_GPU)
def test_gpu_index_keeps_the_items_on_the_device_and_is_exact() -> None:
    v8, s8 = _matrix(n=300_000, d=64)
    idx = make_index(v8, s8, device="cuda")
    assert isinstance(idx, OnnxTopKIndex) and idx.device == "cuda" and idx.bound
    q = np.random.default_rng(4).standard_normal((16, 64)).astype(np.float32)
    ref = brute_force_topk(v8, s8, q, 10)
    res = idx.search(q, 10)
    assert idx._items.device_name() == "cuda"
    assert res.rows.tolist() == ref.rows.tolist()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason=_NO_GPU)
def test_gpu_recommender_serves_a_large_bundle_on_the_device(tmp_path: Path) -> None:
    make_bundle(tmp_path / "b", n_items=AUTO_CUDA_MIN_ROWS, dim=32)
    with Recommender.from_bundle(tmp_path / "b") as rec:
        assert (rec.status().device, rec.status().index) == ("cuda", "onnx")
        cpu_config = RecommenderConfig(device="cpu", index=IndexConfig(backend="numpy"))
        with Recommender.from_bundle(tmp_path / "b", config=cpu_config) as cpu:
            history = ["item-000010", "item-000020"]
            a = rec.recommend("u", k=10, history=history)
            b = cpu.recommend("u", k=10, history=history)
            assert [r.item_id for r in a] == [r.item_id for r in b]


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has the CUDA provider")
def test_the_probe_subprocess_runs_and_says_no_on_a_cpu_only_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the provider is compiled in: the real probe then runs in a subprocess and must answer False.
    monkeypatch.setattr(_caps, "HAS_CUDA", True)
    monkeypatch.setattr(_caps, "_usable", None)
    calls: list[object] = []
    real_run = _caps.subprocess.run

    def counting_run(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(_caps.subprocess, "run", counting_run)
    assert cuda_usable() is False
    assert cuda_usable() is False
    assert len(calls) == 1  # cached for the process
