"""Load a bundle directory: verify everything, then parse, following the 'Loading rules' of bundle-format.md.

Order (fault class B of docs/reliability.md): signature over the raw manifest bytes, manifest schema, size and
sha256 of every listed file (streamed, capped at the declared size), ONNX external-data scan, ``.npy`` headers
against the manifest and file sizes, then parsing and shape agreement. Nothing is parsed before it is verified.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelError, ModelFormatError, ModelIntegrityError, ModelLoadError
from ..index import IvfLayout
from . import manifest as mf
from .catalog import Catalog
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, SIGNATURE_NAME, FileEntry, Manifest
from .vectors import ItemVectors
from .verify import check_npy_header, check_signature, check_signing_key, read_capped, scan_onnx

__all__ = ["Bundle", "inspect_bundle", "load_bundle"]

logger = logging.getLogger(__name__)

_NPY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "int8": np.dtype("<i1"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}
_FINITE_BLOCK_ROWS: Final = 65536


@dataclass(frozen=True, slots=True, eq=False)  # identity equality: arrays have no single truth value
class Bundle:
    """One verified, loaded model version.

    Attributes:
        path: the bundle directory.
        manifest: the validated manifest.
        model_bytes: the verified bytes of the ONNX interest model (create the session from these, never
            from a path, so what runs is what was hashed).
        vectors: item vectors, memory-mapped read-only.
        catalog: ids and columns.
        popular: item rows, most popular first (read-only int64).
        tokenizer_json: the tokenizer definition, when the bundle has one.
        ivf: the approximate index (memory-mapped), when the manifest has an ``index`` section.
        ranker_bytes: the verified ONNX bytes of the CTR ranker, when the manifest has a ``ranker`` section.
    """

    path: Path
    manifest: Manifest
    model_bytes: bytes
    vectors: ItemVectors
    catalog: Catalog
    popular: NDArray[np.int64]
    tokenizer_json: str | None = None
    ivf: IvfLayout | None = None
    ranker_bytes: bytes | None = None

    @property
    def model_version(self) -> str:
        """The manifest's model version."""
        return self.manifest.model_version

    def __repr__(self) -> str:
        return (
            f"Bundle(model_version={self.model_version!r}, n_items={self.manifest.n_items}, "
            f"dim={self.manifest.dim}, dtype={self.manifest.vector_dtype!r}, path={str(self.path)!r})"
        )


def load_bundle(path: str | os.PathLike[str], *, signing_key: str | bytes | None = None) -> Bundle:
    """Verify and load the bundle directory at ``path``.

    Args:
        path: the bundle directory.
        signing_key: when given, ``signature`` must be the hex HMAC-SHA256 of ``manifest.json`` under it.

    Returns:
        The loaded :class:`Bundle`; its item vectors are memory-mapped, everything else is in memory.

    Raises:
        ModelIntegrityError: signature, size or sha256 mismatch, or a listed file missing.
        ModelFormatError: anything that does not follow ``docs/bundle-format.md``.
        ModelLoadError: a file could not be read (permissions, I/O error).

    Example:
        >>> bundle = load_bundle("/var/lib/edgerec/bundles/beauty-3f9a1c2b", signing_key=key)  # doctest: +SKIP
        >>> bundle.model_version  # doctest: +SKIP
        'beauty-3f9a1c2b'
    """
    root = Path(path)
    key = check_signing_key(signing_key) if signing_key is not None else None
    if not root.is_dir():
        raise ModelFormatError(f"bundle directory not found: {root}", path=str(root))
    manifest_path = root / MANIFEST_NAME
    raw = _read_small(root, MANIFEST_NAME, MAX_MANIFEST_BYTES, model_version=None)
    if raw is None:
        raise ModelFormatError(f"{manifest_path}: manifest missing", path=str(manifest_path))
    if key is not None:
        sig_path = root / SIGNATURE_NAME
        signature = _read_small(root, SIGNATURE_NAME, 1024, model_version=None)
        check_signature(raw, signature, key, source=str(sig_path))
    manifest = Manifest.from_bytes(raw, source=str(manifest_path))
    version = manifest.model_version

    # Rule 3: every listed file verified before any is parsed. Small files are kept from the very read that
    # was hashed; the item vectors are hashed by streaming and memory-mapped afterwards.
    kept: dict[str, bytes] = {}
    for name, entry in manifest.files.items():
        keep = name in _PARSED or name in (manifest.model_file, manifest.ranker and manifest.ranker.file)
        data = _verify_file(root, name, entry, keep=keep, model_version=version)
        if data is not None:
            kept[name] = data

    model_bytes = _check_model(root, manifest, kept[manifest.model_file])
    vectors = _load_vectors(root, manifest, kept.get(mf.SCALES_NAME))
    catalog = Catalog.from_json(kept[mf.CATALOG_NAME], n_items=manifest.n_items,
                                source=str(root / mf.CATALOG_NAME), model_version=version)
    popular = _load_popular(root, manifest, kept[mf.POPULAR_NAME])
    tokenizer_json = None
    if mf.TOKENIZER_NAME in kept:
        try:
            tokenizer_json = kept[mf.TOKENIZER_NAME].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(root, mf.TOKENIZER_NAME, version, "not UTF-8") from exc
    ivf = _load_ivf(root, manifest) if manifest.index is not None else None
    logger.info("bundle %s loaded from %s", version, root)
    return Bundle(
        path=root,
        manifest=manifest,
        model_bytes=model_bytes,
        vectors=vectors,
        catalog=catalog,
        popular=popular,
        tokenizer_json=tokenizer_json,
        ivf=ivf,
        ranker_bytes=None if manifest.ranker is None else kept[manifest.ranker.file],
    )


_PARSED: Final = frozenset({mf.CATALOG_NAME, mf.POPULAR_NAME, mf.TOKENIZER_NAME, mf.SCALES_NAME})


def _fail(
    root: Path, name: str, version: str | None, msg: str, cls: type[ModelError] = ModelFormatError
) -> ModelError:
    where = str(root / name)
    return cls(f"{where}: {msg}", path=where, model_version=version)


def _safe_path(root: Path, name: str, version: str | None) -> Path | None:
    """The file ``name`` inside ``root``, or None when absent; refuse links out of the bundle and non-files."""
    path = root / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _fail(root, name, version, f"cannot stat ({exc.strerror})", ModelLoadError) from exc
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            raise _fail(root, name, version, "refused: symlink points outside the bundle")
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return None
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block or never end; only regular files are bundle content.
        raise _fail(root, name, version, "refused: not a regular file")
    return path


@contextlib.contextmanager
def _open(root: Path, name: str, version: str | None) -> Iterator[BinaryIO | None]:
    path = _safe_path(root, name, version)
    if path is None:
        yield None
        return
    try:
        fp = open(path, "rb")  # noqa: SIM115  (closed by the with below; open errors are translated)
    except OSError as exc:
        raise _fail(root, name, version, f"cannot open ({exc.strerror})", ModelLoadError) from exc
    with fp:
        yield fp


def _read_small(root: Path, name: str, cap: int, *, model_version: str | None) -> bytes | None:
    with _open(root, name, model_version) as fp:
        if fp is None:
            return None
        try:
            data = fp.read(cap + 1)
        except OSError as exc:
            raise _fail(root, name, model_version, f"cannot read ({exc.strerror})", ModelLoadError) from exc
    if len(data) > cap:
        raise _fail(root, name, model_version, f"larger than {cap} bytes")
    return data


def _verify_file(root: Path, name: str, entry: FileEntry, *, keep: bool, model_version: str) -> bytes | None:
    with _open(root, name, model_version) as fp:
        if fp is None:
            raise _fail(root, name, model_version, "missing (listed in the manifest)", ModelIntegrityError)
        try:
            actual = os.fstat(fp.fileno()).st_size
            if actual != entry.size:
                raise _fail(
                    root,
                    name,
                    model_version,
                    f"size mismatch: declared {entry.size}, found {actual}",
                    ModelIntegrityError,
                )
            got, digest, data = read_capped(fp, entry.size, keep=keep)
        except OSError as exc:
            raise _fail(root, name, model_version, f"cannot read ({exc.strerror})", ModelLoadError) from exc
    if got != entry.size:
        # The file changed size between fstat and read: treat it like any other size mismatch.
        raise _fail(
            root,
            name,
            model_version,
            f"size mismatch: declared {entry.size}, read {got}",
            ModelIntegrityError,
        )
    if digest != entry.sha256:
        raise _fail(root, name, model_version, "sha256 mismatch", ModelIntegrityError)
    return data


def _check_model(root: Path, manifest: Manifest, data: bytes) -> bytes:
    name = manifest.model_file
    version = manifest.model_version
    summary = scan_onnx(data, source=str(root / name), model_version=version)
    # Cheap early contract check (B10): the names the manifest promises must exist in the graph.
    for role, onnx_name in manifest.input_names.items():
        if onnx_name not in summary.inputs:
            raise _fail(root, name, version, f"graph has no input {onnx_name!r} (role {role!r})")
    for role, onnx_name in manifest.output_names.items():
        if onnx_name not in summary.outputs:
            raise _fail(root, name, version, f"graph has no output {onnx_name!r} (role {role!r})")
    return data


def _open_npy_header(
    root: Path, name: str, manifest: Manifest, dtype: np.dtype[Any], ndim: int
) -> tuple[int, ...]:
    size = manifest.files[name].size
    with _open(root, name, manifest.model_version) as fp:
        if fp is None:
            raise _fail(root, name, manifest.model_version, "missing", ModelIntegrityError)
        return check_npy_header(
            fp,
            file_size=size,
            dtype=dtype,
            ndim=ndim,
            source=str(root / name),
            model_version=manifest.model_version,
        )


def _load_vectors(root: Path, manifest: Manifest, scales_raw: bytes | None) -> ItemVectors:
    version = manifest.model_version
    name = mf.vector_file_names(manifest.vector_dtype)[0]
    dtype = _NPY_DTYPES[manifest.vector_dtype]
    shape = _open_npy_header(root, name, manifest, dtype, 2)
    if shape != (manifest.n_items, manifest.dim):
        raise _fail(
            root,
            name,
            version,
            f"shape {shape} does not match (n_items, dim) = ({manifest.n_items}, {manifest.dim})",
        )
    try:
        values = np.load(root / name, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _fail(root, name, version, f"cannot map ({exc})", ModelLoadError) from exc
    scales: NDArray[np.float32] | None = None
    if manifest.vector_dtype == "int8":
        if scales_raw is None:  # pragma: no cover - required_files guarantees it is listed and verified
            raise _fail(root, mf.SCALES_NAME, version, "missing", ModelIntegrityError)
        scales = _npy_from_bytes(root, mf.SCALES_NAME, manifest, scales_raw, np.dtype("<f4"))
        if scales.shape != (manifest.n_items,):
            raise _fail(
                root, mf.SCALES_NAME, version, f"shape {scales.shape}, expected ({manifest.n_items},)"
            )
        if not bool(np.all(np.isfinite(scales))) or bool(np.any(scales < 0)):
            raise _fail(root, mf.SCALES_NAME, version, "refused: scales must be finite and >= 0 (nonfinite)")
    else:
        _check_finite(root, name, version, values)
    return ItemVectors(values=values, scales=scales)


_IVF_SPECS: Final[dict[str, tuple[np.dtype[Any], int]]] = {  # role -> (dtype, ndim)
    "centroids": (np.dtype("<f4"), 2),
    "offsets": (np.dtype("<i8"), 1),
    "order": (np.dtype("<i4"), 1),
    "values": (np.dtype("<i1"), 2),
    "scales": (np.dtype("<f4"), 1),
}


def _load_ivf(root: Path, manifest: Manifest) -> IvfLayout:
    """Map the ``ivf.*.npy`` files read-only (shared by every worker) and check they form a valid layout."""
    info = manifest.index
    if info is None:  # pragma: no cover - the caller checks
        raise _fail(root, MANIFEST_NAME, manifest.model_version, "no index section")
    arrays: dict[str, NDArray[Any]] = {}
    for role, name in mf.IVF_FILES.items():
        dtype, ndim = _IVF_SPECS[role]
        _open_npy_header(root, name, manifest, dtype, ndim)
        try:
            arrays[role] = np.load(root / name, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise _fail(root, name, manifest.model_version, f"cannot map ({exc})", ModelLoadError) from exc
    layout = IvfLayout(
        centroids=arrays["centroids"],
        offsets=np.array(arrays["offsets"]),
        order=arrays["order"],
        values=arrays["values"],
        scales=arrays["scales"],
        nprobe=info.nprobe,
    )
    try:
        if layout.nlist != info.nlist or (layout.n_items, layout.dim) != (manifest.n_items, manifest.dim):
            raise ValueError(f"shapes do not match nlist {info.nlist}, (n_items, dim)")
        layout.check()
    except ValueError as exc:
        raise _fail(root, mf.IVF_FILES["values"], manifest.model_version, f"invalid IVF index: {exc}") from exc
    return layout


def _check_finite(root: Path, name: str, version: str, values: NDArray[Any]) -> None:
    # Blocked so a million-row float32 map is checked without a matrix-sized temporary.
    for lo in range(0, values.shape[0], _FINITE_BLOCK_ROWS):
        if not bool(np.isfinite(values[lo : lo + _FINITE_BLOCK_ROWS]).all()):
            raise _fail(root, name, version, "refused: NaN or inf in item vectors (nonfinite)")


def _npy_from_bytes(
    root: Path, name: str, manifest: Manifest, raw: bytes, dtype: np.dtype[Any]
) -> NDArray[Any]:
    buf = io.BytesIO(raw)
    check_npy_header(
        buf,
        file_size=len(raw),
        dtype=dtype,
        ndim=1,
        source=str(root / name),
        model_version=manifest.model_version,
    )
    buf.seek(0)
    try:
        arr: NDArray[Any] = np.load(buf, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise _fail(root, name, manifest.model_version, f"cannot parse ({exc})") from exc
    arr.flags.writeable = False
    return arr


def _load_popular(root: Path, manifest: Manifest, raw: bytes) -> NDArray[np.int64]:
    version = manifest.model_version
    name = mf.POPULAR_NAME
    popular = _npy_from_bytes(root, name, manifest, raw, np.dtype("<i8"))
    if popular.size and (int(popular.min()) < 0 or int(popular.max()) >= manifest.n_items):
        raise _fail(root, name, version, f"rows must lie in [0, {manifest.n_items})")
    if popular.size and int(np.bincount(popular, minlength=manifest.n_items).max()) > 1:
        raise _fail(root, name, version, "rows are not unique")
    return popular


def inspect_bundle(path: str | os.PathLike[str], *, signing_key: str | bytes | None = None) -> dict[str, Any]:
    """Summarise a bundle and check every file's size and sha256, without raising on a corrupt bundle.

    Args:
        path: the bundle directory.
        signing_key: when given, the signature is checked too (``"ok"``, ``"bad"`` or ``"missing"``);
            otherwise the verdict is ``"present"`` or ``"absent"``.

    Returns:
        ``{"path", "ok", "error", "manifest", "signature", "files", "unlisted"}``: ``manifest`` is a summary
        (None when unreadable, with ``error`` saying why); ``files`` maps each listed name to
        ``{"size", "actual_size", "sha256", "status"}`` where status is ``"ok"``, ``"size mismatch"``,
        ``"sha256 mismatch"``, ``"missing"`` or ``"unreadable: ..."``; ``unlisted`` names files on disk that
        the manifest does not list.

    Example:
        >>> report = inspect_bundle("bundle")  # doctest: +SKIP
        >>> report["ok"], report["files"]["popular.npy"]["status"]  # doctest: +SKIP
        (True, 'ok')
    """
    root = Path(path)
    report: dict[str, Any] = {
        "path": str(root),
        "ok": False,
        "error": None,
        "manifest": None,
        "signature": None,
        "files": {},
        "unlisted": [],
    }
    try:
        raw = (
            _read_small(root, MANIFEST_NAME, MAX_MANIFEST_BYTES, model_version=None)
            if root.is_dir()
            else None
        )
        if raw is None:
            report["error"] = f"{root / MANIFEST_NAME}: manifest missing"
            return report
        report["signature"] = _signature_verdict(root, raw, signing_key)
        manifest = Manifest.from_bytes(raw, source=str(root / MANIFEST_NAME))
    except ModelError as exc:
        report["error"] = str(exc)
        return report
    report["manifest"] = _summary(manifest)
    all_ok = report["signature"] not in ("bad", "missing")
    for name, entry in manifest.files.items():
        verdict = _file_verdict(root, name, entry)
        report["files"][name] = verdict
        all_ok = all_ok and verdict["status"] == "ok"
    with contextlib.suppress(OSError):
        on_disk = {p.name for p in root.iterdir()}
        report["unlisted"] = sorted(on_disk - set(manifest.files) - {MANIFEST_NAME, SIGNATURE_NAME})
    report["ok"] = all_ok
    return report


def _signature_verdict(root: Path, raw: bytes, key: str | bytes | None) -> str:
    sig = _read_small(root, SIGNATURE_NAME, 1024, model_version=None)
    if key is None:
        return "absent" if sig is None else "present"
    if sig is None:
        return "missing"
    try:
        check_signature(raw, sig, check_signing_key(key), source=SIGNATURE_NAME)
    except ModelIntegrityError:
        return "bad"
    return "ok"


def _summary(m: Manifest) -> dict[str, Any]:
    return {
        "model_version": m.model_version,
        "parent_version": m.parent_version,
        "created_at": m.created_at,
        "format_version": m.format_version,
        "dim": m.dim,
        "n_items": m.n_items,
        "max_seq_len": m.max_seq_len,
        "vector_dtype": m.vector_dtype,
        "model_file": m.model_file,
        "inputs": dict(m.input_names),
        "outputs": dict(m.output_names),
        "query_max_len": m.query_max_len,
        "total_bytes": sum(e.size for e in m.files.values()),
        "metrics": m.metrics,
    }


def _file_verdict(root: Path, name: str, entry: FileEntry) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        "size": entry.size,
        "actual_size": None,
        "sha256": entry.sha256,
        "status": "ok",
    }
    try:
        with _open(root, name, None) as fp:
            if fp is None:
                verdict["status"] = "missing"
                return verdict
            actual = os.fstat(fp.fileno()).st_size
            verdict["actual_size"] = actual
            if actual != entry.size:
                verdict["status"] = "size mismatch"
                return verdict
            got, digest, _ = read_capped(fp, entry.size, keep=False)
    except (ModelError, OSError) as exc:
        verdict["status"] = f"unreadable: {exc}"
        return verdict
    if got != entry.size:
        verdict["status"] = "size mismatch"
    elif digest != entry.sha256:
        verdict["status"] = "sha256 mismatch"
    return verdict
