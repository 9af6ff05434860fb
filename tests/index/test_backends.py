from __future__ import annotations

import numpy as np
import pytest

from edgerec_sdk.index import HAS_CUDA, NumpyExactIndex, OnnxTopKIndex, VectorIndex

from .contract import IndexContract, quantize


class _Numpy(IndexContract):
    block_rows = 65536

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        return NumpyExactIndex(values, scales, block_rows=self.block_rows)

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        return self.make_index_from_stored(*quantize(values_f32, dtype))


class _Onnx(IndexContract):
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def make_index_from_stored(self, values: np.ndarray, scales: np.ndarray | None) -> VectorIndex:
        return OnnxTopKIndex(values, scales, providers=list(self.providers))

    def make_index(self, values_f32: np.ndarray, dtype: str) -> VectorIndex:
        return self.make_index_from_stored(*quantize(values_f32, dtype))


class TestNumpyFloat32(_Numpy):
    dtype = "float32"


class TestNumpyFloat32SmallBlocks(_Numpy):
    """Blocks smaller than the matrix: the running threshold and cross-block ties are exercised."""

    dtype = "float32"
    block_rows = 7


class TestNumpyInt8(_Numpy):
    dtype = "int8"
    exact = False


class TestNumpyInt8SmallBlocks(_Numpy):
    dtype = "int8"
    exact = False
    block_rows = 33


class TestNumpyFloat16(_Numpy):
    dtype = "float16"
    exact = False


class TestOnnxFloat32(_Onnx):
    dtype = "float32"


class TestOnnxInt8(_Onnx):
    dtype = "int8"
    exact = False


class TestOnnxFloat16(_Onnx):
    dtype = "float16"
    exact = False


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDA provider")
class TestOnnxCuda(_Onnx):
    dtype = "float32"
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="onnxruntime has no CUDA provider")
class TestOnnxCudaInt8(_Onnx):
    dtype = "int8"
    exact = False
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
