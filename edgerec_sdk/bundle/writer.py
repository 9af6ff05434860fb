"""Write bundles atomically, update their metrics and sign their manifests.

A bundle is written into a temporary sibling directory, every file fsynced, then renamed into place, so a
reader (or a crash) sees either no bundle or a complete one. The writer validates what it writes with the
same checks the loader runs (ONNX scan, catalog, manifest round trip): it never writes a bundle that
:func:`~edgerec_sdk.bundle.load_bundle` would refuse.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import orjson
from numpy.typing import NDArray

from .._impl.files import fsync_dir, replace_file, sync_file
from ..errors import ModelFormatError
from ..index import ANN_MIN_ITEMS, DEFAULT_TARGET_RECALL, IvfLayout, build_ivf
from . import manifest as mf
from .catalog import Catalog
from .manifest import (
    FORMAT_VERSION,
    IVF_FILES,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    FileEntry,
    IndexInfo,
    Manifest,
)
from .vectors import quantize_rows_int8
from .verify import check_signing_key, scan_onnx, sign_bytes

__all__ = ["sign_manifest", "update_metrics", "write_bundle"]

logger = logging.getLogger(__name__)

MODEL_FILE: Final = "interest.onnx"
_FLOAT16_MAX: Final = float(np.finfo(np.float16).max)
_BLOCK_ROWS: Final = 65536
_IVF_MAX_PROBE_FRACTION: Final = 0.1
"""``index="auto"`` drops an IVF index that must probe more than this share of its lists."""


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    model_bytes: bytes,
    vectors: NDArray[np.floating],
    catalog_ids: Sequence[str],
    max_seq_len: int,
    vector_dtype: str = "int8",
    catalog_columns: Mapping[str, Sequence[Any]] | None = None,
    popular: NDArray[np.integer] | None = None,
    model_version: str | None = None,
    parent_version: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    tokenizer_json: str | None = None,
    signing_key: str | bytes | None = None,
    input_names: Mapping[str, str] | None = None,
    output_names: Mapping[str, str] | None = None,
    query_max_len: int = 0,
    overwrite: bool = False,
    index: Literal["auto", "ivf", "none"] = "auto",
    ivf_nlist: int | None = None,
    ivf_nprobe: int | None = None,
    ivf_target_recall: float = DEFAULT_TARGET_RECALL,
) -> Path:
    """Write a complete bundle directory atomically.

    Args:
        out_dir: the bundle directory to create (its parent is created if needed).
        model_bytes: the serialised ONNX interest model (no external data).
        vectors: float item vectors ``(n_items, dim)``, finite.
        catalog_ids: unique item ids in row order.
        max_seq_len: history length the model takes.
        vector_dtype: ``"int8"`` (per-row symmetric, see :func:`quantize_rows_int8`), ``"float16"``
            or ``"float32"``.
        catalog_columns: optional columns (``title``, ``category``, ``brand``, ``price``, ``in_stock``, ...).
        popular: item rows most popular first; default row order.
        model_version: default ``"edgerec-"`` + the first 12 hex digits of a hash of the content.
        parent_version: the version this one was trained from, if any.
        metrics: offline evaluation results.
        extra: free-form build information.
        tokenizer_json: a ``tokenizers`` tokenizer definition.
        signing_key: when given, writes ``signature`` (hex HMAC-SHA256 of the manifest bytes).
        input_names: role -> ONNX input name; default ``{"history": "history"}``.
        output_names: role -> ONNX output name; default ``{"interest": "interest"}``.
        query_max_len: query length when the model has a ``query`` input.
        overwrite: replace an existing ``out_dir`` (the old one is moved aside, then deleted).
        index: ``"ivf"`` adds an approximate IVF index (``ivf.*.npy`` and the manifest's ``index``
            section); ``"auto"`` does so from :data:`~edgerec_sdk.index.ANN_MIN_ITEMS` items on, unless the
            tuned ``nprobe`` exceeds 10% of the lists (vectors without cluster structure, where the exact
            kernel is faster); ``"none"`` never. Building costs k-means plus an nprobe tuning pass (14 s at
            1M x 64 on the 2-core dev box: ``ann_build`` in ``benchmarks/bench_kernels.py``).
        ivf_nlist: IVF lists; default :func:`~edgerec_sdk.index.default_nlist`.
        ivf_nprobe: lists probed by default; None tunes it to ``ivf_target_recall`` on sample queries.
        ivf_target_recall: recall@10 against the exact answer that the tuned ``nprobe`` reaches on
            item-to-item sample queries; default 0.99 (:data:`~edgerec_sdk.index.DEFAULT_TARGET_RECALL` says
            why).

    Returns:
        The bundle directory.

    Raises:
        ModelFormatError: the content would not make a valid bundle (non-finite vectors, mismatched
            lengths, external data in the model, bad names).
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.

    Example:
        >>> write_bundle("out/b1", model_bytes=onnx_bytes, vectors=v, catalog_ids=ids,
        ...              max_seq_len=50)  # doctest: +SKIP
        PosixPath('out/b1')
    """
    out = Path(out_dir)
    if index not in ("auto", "ivf", "none"):
        raise ModelFormatError(f"index must be 'auto', 'ivf' or 'none', not {index!r}")
    if vector_dtype not in ("int8", "float16", "float32"):
        raise ModelFormatError(f"vector_dtype must be 'int8', 'float16' or 'float32', not {vector_dtype!r}")
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len <= 0:
        raise ModelFormatError(f"max_seq_len must be a positive integer, not {max_seq_len!r}")
    key = check_signing_key(signing_key) if signing_key is not None else None
    inputs = dict(input_names or {"history": "history"})
    outputs = dict(output_names or {"interest": "interest"})
    _check_model(model_bytes, inputs, outputs)
    arrays = _vector_arrays(vectors, vector_dtype)
    n_items, dim = arrays[0][1].shape
    # numpy string arrays hold np.str_, which the catalog's exact type checks (rightly) refuse.
    ids = catalog_ids.tolist() if isinstance(catalog_ids, np.ndarray) else catalog_ids
    catalog = Catalog(ids, _plain_columns(catalog_columns))
    if len(catalog) != n_items:
        raise ModelFormatError(f"{len(catalog)} catalog ids for {n_items} vectors", path=mf.CATALOG_NAME)
    pop = _popular(popular, n_items)
    ivf = _ivf_layout(arrays, vectors, index, ivf_nlist, ivf_nprobe, ivf_target_recall)
    if tokenizer_json is not None and not isinstance(tokenizer_json, str):
        raise ModelFormatError("tokenizer_json must be a str", path=mf.TOKENIZER_NAME)

    if out.exists() and not overwrite:
        raise FileExistsError(f"bundle directory already exists: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        files: dict[str, FileEntry] = {MODEL_FILE: _write(tmp, MODEL_FILE, lambda fp: fp.write(model_bytes))}
        for name, arr in arrays:
            files[name] = _write(tmp, name, _npy_writer(arr))
        files[mf.CATALOG_NAME] = _write(tmp, mf.CATALOG_NAME, lambda fp: fp.write(catalog.to_json_bytes()))
        files[mf.POPULAR_NAME] = _write(tmp, mf.POPULAR_NAME, _npy_writer(pop))
        if ivf is not None:
            for role, name in IVF_FILES.items():
                files[name] = _write(tmp, name, _npy_writer(getattr(ivf, role)))
        if tokenizer_json is not None:
            text = tokenizer_json.encode("utf-8")
            files[mf.TOKENIZER_NAME] = _write(tmp, mf.TOKENIZER_NAME, lambda fp: fp.write(text))
        shape_info = {
            "dim": int(dim),
            "n_items": int(n_items),
            "max_seq_len": max_seq_len,
            "vector_dtype": vector_dtype,
            "inputs": inputs,
            "outputs": outputs,
            "query_max_len": query_max_len,
        }
        if ivf is not None:
            shape_info["index"] = IndexInfo(kind="ivf", nlist=ivf.nlist, nprobe=ivf.nprobe, recall=ivf.recall)
        manifest = _manifest(
            files,
            shape_info,
            model_version=model_version,
            parent_version=parent_version,
            metrics=metrics,
            extra=extra,
        )
        raw = manifest.to_bytes()
        Manifest.from_bytes(raw)  # never write a manifest the loader would refuse
        _write(tmp, MANIFEST_NAME, lambda fp: fp.write(raw))
        if key is not None:
            _write(tmp, SIGNATURE_NAME, lambda fp: fp.write(sign_bytes(raw, key).encode("ascii") + b"\n"))
        fsync_dir(tmp)
        _swap_into_place(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("bundle %s written to %s", manifest.model_version, out)
    return out


def update_metrics(
    bundle_dir: str | os.PathLike[str], metrics: Mapping[str, Any], *, signing_key: str | bytes | None = None
) -> Manifest:
    """Replace the manifest's ``metrics`` atomically (``edgerec evaluate`` runs after the build).

    Re-signs when ``signing_key`` is given; otherwise a now-stale ``signature`` is deleted, since it could
    only make a keyed loader refuse the bundle.

    Args:
        bundle_dir: the bundle directory (not one in use: bundles being served are immutable).
        metrics: the new metrics, JSON-serialisable.
        signing_key: key to re-sign with.

    Returns:
        The new manifest.
    """
    root = Path(bundle_dir)
    key = check_signing_key(signing_key) if signing_key is not None else None
    old = Manifest.from_bytes(_read_manifest(root), source=str(root / MANIFEST_NAME))
    fields = old.to_dict()
    fields["metrics"] = dict(metrics)
    try:
        raw = orjson.dumps(
            fields, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
        )
    except TypeError as exc:
        raise ModelFormatError(
            f"metrics are not JSON-serialisable: {exc}",
            path=str(root / MANIFEST_NAME),
            model_version=old.model_version,
        ) from exc
    new = Manifest.from_bytes(raw + b"\n", source=str(root / MANIFEST_NAME))
    raw = new.to_bytes()
    replace_file(root / MANIFEST_NAME, raw)
    if key is not None:
        replace_file(root / SIGNATURE_NAME, sign_bytes(raw, key).encode("ascii") + b"\n")
    elif (root / SIGNATURE_NAME).exists():
        logger.warning("bundle %s: manifest changed, stale signature removed", new.model_version)
        (root / SIGNATURE_NAME).unlink()
    return new


def sign_manifest(bundle_dir: str | os.PathLike[str], key: str | bytes) -> Path:
    """Write ``signature``: the hex HMAC-SHA256 of the exact ``manifest.json`` bytes under ``key``.

    Returns:
        The path of the signature file.
    """
    root = Path(bundle_dir)
    raw = _read_manifest(root)
    Manifest.from_bytes(raw, source=str(root / MANIFEST_NAME))  # only sign what the loader would accept
    replace_file(root / SIGNATURE_NAME, sign_bytes(raw, check_signing_key(key)).encode("ascii") + b"\n")
    return root / SIGNATURE_NAME


# --------------------------------------------------------------------------- validation


def _check_model(model_bytes: bytes, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    if not isinstance(model_bytes, bytes):
        raise ModelFormatError("model_bytes must be bytes", path=MODEL_FILE)
    summary = scan_onnx(model_bytes, source=MODEL_FILE)
    for role, name in inputs.items():
        if name not in summary.inputs:
            raise ModelFormatError(
                f"{MODEL_FILE}: graph has no input {name!r} (role {role!r})", path=MODEL_FILE
            )
    for role, name in outputs.items():
        if name not in summary.outputs:
            raise ModelFormatError(
                f"{MODEL_FILE}: graph has no output {name!r} (role {role!r})", path=MODEL_FILE
            )


def _vector_arrays(vectors: NDArray[np.floating], dtype: str) -> list[tuple[str, NDArray[Any]]]:
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ModelFormatError(f"vectors must be a non-empty float matrix (n, dim), got {x.dtype} {x.shape}")
    for lo in range(0, x.shape[0], _BLOCK_ROWS):
        block = x[lo : lo + _BLOCK_ROWS]
        if not bool(np.isfinite(block).all()):
            raise ModelFormatError("refused: NaN or inf in vectors (nonfinite)")
        if dtype == "float16" and bool((np.abs(block) > _FLOAT16_MAX).any()):
            raise ModelFormatError("refused: vectors overflow float16")
    names = mf.vector_file_names(dtype)
    if dtype == "int8":
        q, scales = quantize_rows_int8(x)
        return [(names[0], q), (names[1], scales.astype("<f4", copy=False))]
    target = "<f2" if dtype == "float16" else "<f4"
    return [(names[0], np.ascontiguousarray(x, dtype=target))]


def _ivf_layout(
    arrays: list[tuple[str, NDArray[Any]]],
    vectors: NDArray[np.floating],
    index: str,
    nlist: int | None,
    nprobe: int | None,
    target_recall: float,
) -> IvfLayout | None:
    n_items = arrays[0][1].shape[0]
    if index == "none" or (index == "auto" and n_items < ANN_MIN_ITEMS):
        return None
    if len(arrays) == 2:  # int8: index the stored rows themselves
        values, scales = arrays[0][1], arrays[1][1]
    else:  # float bundles: an int8 copy for the lists; the index rescores from the stored floats
        values, scales = quantize_rows_int8(np.asarray(vectors))
    try:
        layout = build_ivf(values, scales, nlist=nlist, nprobe=nprobe, target_recall=target_recall)
    except ValueError as exc:
        raise ModelFormatError(f"cannot build the IVF index: {exc}") from exc
    if index == "auto" and layout.nprobe > _IVF_MAX_PROBE_FRACTION * layout.nlist:
        # Vectors without cluster structure: reaching the recall target means scanning a large part of
        # the catalog, which the exact kernel does faster. Serve exact and do not ship the index.
        logger.info("ivf: not written, nprobe %d of %d lists needed for the recall target",
                    layout.nprobe, layout.nlist)
        return None
    return layout


def _plain_columns(columns: Mapping[str, Sequence[Any]] | None) -> dict[str, Sequence[Any]] | None:
    if columns is None:
        return None
    # numpy columns become Python values, so the catalog's type checks and JSON see plain types.
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in columns.items()}


def _popular(popular: NDArray[np.integer] | None, n_items: int) -> NDArray[np.int64]:
    if popular is None:
        return np.arange(n_items, dtype="<i8")
    pop = np.asarray(popular)
    if pop.ndim != 1 or not (np.issubdtype(pop.dtype, np.integer) or pop.size == 0):
        raise ModelFormatError("popular must be a 1-d integer array of rows", path=mf.POPULAR_NAME)
    pop = pop.astype("<i8")
    if pop.size and (int(pop.min()) < 0 or int(pop.max()) >= n_items):
        raise ModelFormatError(f"popular rows must lie in [0, {n_items})", path=mf.POPULAR_NAME)
    if pop.size and int(np.bincount(pop, minlength=n_items).max()) > 1:
        raise ModelFormatError("popular rows are not unique", path=mf.POPULAR_NAME)
    return pop


def _manifest(
    files: dict[str, FileEntry],
    info: dict[str, Any],
    *,
    model_version: str | None,
    parent_version: str | None,
    metrics: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> Manifest:
    if model_version is None:
        # Content-addressed: same files and contract give the same version, whenever they were built.
        content = orjson.dumps(
            {"files": {k: [v.sha256, v.size] for k, v in files.items()}, **info}, option=orjson.OPT_SORT_KEYS
        )
        model_version = "edgerec-" + hashlib.sha256(content).hexdigest()[:12]
    # (the IVF files are in ``files``, so the index is part of the content address too)
    mf.check_model_version(model_version)
    if parent_version is not None:
        mf.check_model_version(parent_version, what="parent_version")
    return Manifest(
        format_version=FORMAT_VERSION,
        model_version=model_version,
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        parent_version=parent_version,
        dim=info["dim"],
        n_items=info["n_items"],
        max_seq_len=info["max_seq_len"],
        vector_dtype=info["vector_dtype"],
        model_file=MODEL_FILE,
        input_names=MappingProxyType(info["inputs"]),
        output_names=MappingProxyType(info["outputs"]),
        query_max_len=info["query_max_len"],
        files=MappingProxyType(files),
        metrics=dict(metrics or {}),
        extra=dict(extra or {}),
        index=info.get("index"),
    )


# --------------------------------------------------------------------------- file system


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through, so files are read once."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._fp.write(data)


def _npy_writer(arr: NDArray[Any]) -> Callable[[Any], object]:
    def write(fp: Any) -> None:
        np.save(fp, arr, allow_pickle=False)

    return write


def _write(directory: Path, name: str, fill: Callable[[Any], object]) -> FileEntry:
    with open(directory / name, "xb") as fp:
        writer = _HashingWriter(fp)
        fill(writer)
        sync_file(fp)
    return FileEntry(sha256=writer.digest.hexdigest(), size=writer.size)


def _swap_into_place(tmp: Path, out: Path, *, overwrite: bool) -> None:
    if overwrite and out.exists():
        # POSIX cannot atomically replace a non-empty directory: move the old one aside first.
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    fsync_dir(out.parent)


def _read_manifest(root: Path) -> bytes:
    path = root / MANIFEST_NAME
    try:
        with open(path, "rb") as fp:
            raw = fp.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read manifest ({exc.strerror})", path=str(path)) from exc
    return raw
