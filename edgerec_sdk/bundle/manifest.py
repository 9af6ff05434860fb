"""The bundle manifest (``manifest.json``): parsing, strict validation and serialisation.

Pure code: takes and returns bytes, never touches the file system. The format is specified in
``docs/bundle-format.md``; every rule enforced here is one written there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import orjson

from ..errors import ModelFormatError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IVF_FILES",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "RANKER_NAME",
    "SIGNATURE_NAME",
    "FileEntry",
    "IndexInfo",
    "Manifest",
    "RankerInfo",
    "VectorDtype",
    "check_file_name",
    "check_model_version",
    "created_at_time",
    "required_files",
    "vector_file_names",
]

VectorDtype = Literal["int8", "float16", "float32"]

FORMAT_NAME: Final = "edgerec-bundle"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
SIGNATURE_NAME: Final = "signature"
CATALOG_NAME: Final = "catalog.json"
POPULAR_NAME: Final = "popular.npy"
TOKENIZER_NAME: Final = "tokenizer.json"
RANKER_NAME: Final = "ranker.onnx"
"""The optional second-stage CTR model (manifest ``ranker`` section)."""
_MAX_RANKER_FEATURES: Final = 64
SCALES_NAME: Final = "items.scales.npy"
IVF_FILES: Final = {
    "centroids": "ivf.centroids.npy",
    "offsets": "ivf.offsets.npy",
    "order": "ivf.order.npy",
    "values": "ivf.int8.npy",
    "scales": "ivf.scales.npy",
}
"""Role -> file name of the optional IVF index (manifest ``index.kind == "ivf"``)."""
# A manifest lists a handful of files; anything near this size is an attack, not a bundle.
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_MAX_FILE_NAME_BYTES: Final = 255
_MAX_VERSION_CHARS: Final = 128
_MAX_ONNX_NAME_CHARS: Final = 1024
_INPUT_ROLES: Final = frozenset({"history", "query"})
_DTYPES: Final = frozenset(get_args(VectorDtype))
_Fail = Callable[[str], ModelFormatError]


def vector_file_names(dtype: str) -> tuple[str, ...]:
    """The vector files a bundle of ``dtype`` holds (int8 adds the per-row scales)."""
    if dtype == "int8":
        return ("items.int8.npy", SCALES_NAME)
    return (f"items.{dtype}.npy",)


def required_files(dtype: str, model_file: str) -> tuple[str, ...]:
    """Every file a valid bundle of ``dtype`` must list (``tokenizer.json`` is optional)."""
    return (model_file, *vector_file_names(dtype), CATALOG_NAME, POPULAR_NAME)


def check_file_name(name: object, *, source: str = MANIFEST_NAME) -> str:
    """Return ``name`` if it is a safe bundle file name, else raise :class:`ModelFormatError`.

    A safe name matches ``[A-Za-z0-9][A-Za-z0-9._-]*`` and is at most 255 bytes, so it can never be a path
    (no separator, no ``..`` prefix, no NUL, not absolute) and fits every file system.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ModelFormatError(f"{source}: invalid file name {name!r}", path=source)
    if len(name.encode()) > _MAX_FILE_NAME_BYTES:
        raise ModelFormatError(f"{source}: file name longer than 255 bytes: {name[:40]!r}...", path=source)
    return name


def check_model_version(version: object, *, what: str = "model_version", source: str = MANIFEST_NAME) -> str:
    """Return ``version`` if it is a valid model version (same alphabet as file names, <= 128 chars)."""
    if not isinstance(version, str) or not _NAME_RE.fullmatch(version) or len(version) > _MAX_VERSION_CHARS:
        raise ModelFormatError(f"{source}: invalid {what} {str(version)[:80]!r}", path=source)
    return version


def created_at_time(created_at: str) -> datetime | None:
    """``created_at`` as an aware UTC datetime, or None when it is not an ISO 8601 date and time.

    Accepts what :func:`datetime.fromisoformat` reads plus a trailing ``Z``; a time without an offset is UTC
    (the format says UTC). Edges order the manifests of a channel by this value (rollback protection).
    """
    text = created_at.strip()
    if len(text) < 19 or "T" not in text.upper():  # a date alone is not a publication time
        return None
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """The declared size (bytes) and lowercase hex sha256 of one bundle file."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """The optional ``index`` section: an approximate index stored in the bundle.

    Attributes:
        kind: ``"ivf"`` (the only kind this SDK builds); the files are :data:`IVF_FILES`.
        nlist: number of inverted lists.
        nprobe: lists to probe per query, tuned when the bundle was written.
        recall: the recall@10 measured at build time with that ``nprobe`` (informational).
    """

    kind: str
    nlist: int
    nprobe: int
    recall: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the section."""
        out: dict[str, Any] = {"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe}
        if self.recall is not None:
            out["recall"] = self.recall
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class RankerInfo:
    """The optional ``ranker`` section: a small ONNX model scoring retrieval candidates (click probability).

    Attributes:
        file: the ONNX file (:data:`RANKER_NAME`).
        features: the feature names, in the order of the model input's columns.
        input: the ONNX input name (``float32 [n, len(features)]``).
        output: the ONNX output name (``float32 [n, 1]``, a probability).
        means: each feature's training mean: ``explain`` measures a feature's push on an item as the change
            when that feature alone is moved to its mean.
    """

    file: str
    features: tuple[str, ...]
    input: str = "features"
    output: str = "ctr"
    means: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "features": list(self.features), "input": self.input, "output": self.output,
                "means": list(self.means)}


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated ``manifest.json``.

    Build one with :meth:`from_bytes` (validating) or let :func:`~edgerec_sdk.bundle.write_bundle` do it.
    ``input_names`` maps a role (``"history"``, optionally ``"query"``) to the ONNX input name;
    ``output_names`` maps ``"interest"`` to the ONNX output name.

    Example:
        >>> m = Manifest.from_bytes(open("bundle/manifest.json", "rb").read())  # doctest: +SKIP
        >>> m.dim, m.vector_dtype  # doctest: +SKIP
        (64, 'int8')
    """

    format_version: int
    model_version: str
    created_at: str
    parent_version: str | None
    dim: int
    n_items: int
    max_seq_len: int
    vector_dtype: VectorDtype
    model_file: str
    input_names: Mapping[str, str]
    output_names: Mapping[str, str]
    query_max_len: int
    files: Mapping[str, FileEntry]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    index: IndexInfo | None = None
    """The optional approximate index; None serves the exact kernel."""
    ranker: RankerInfo | None = None
    """The optional CTR ranker; None serves the retrieval order."""

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType fields do not pickle; the JSON form is the canonical state anyway.
        return (Manifest.from_bytes, (self.to_bytes(),))

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and strictly validate manifest bytes.

        Args:
            raw: the exact bytes of ``manifest.json``.
            source: how to name the manifest in error messages and ``ModelFormatError.path``.

        Raises:
            ModelFormatError: anything at all is wrong; no other exception escapes.
        """
        try:
            doc = _decode(raw, source)
            manifest = _build(doc, source)
            # Refuse what could not be written back (e.g. integers beyond 64 bits in metrics): a manifest
            # accepted here must survive update_metrics and sign_manifest unchanged.
            manifest.to_bytes()
            return manifest
        except ModelFormatError:
            raise
        except Exception as exc:  # why: the contract is "ModelFormatError or a Manifest", whatever the input
            raise ModelFormatError(f"{source}: invalid manifest ({type(exc).__name__})", path=source) from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this manifest, in the layout of ``docs/bundle-format.md``."""
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "parent_version": self.parent_version,
            "dim": self.dim,
            "n_items": self.n_items,
            "max_seq_len": self.max_seq_len,
            "vector_dtype": self.vector_dtype,
            "model": {
                "file": self.model_file,
                "inputs": dict(self.input_names),
                "outputs": dict(self.output_names),
                "query_max_len": self.query_max_len,
            },
            "files": {name: {"sha256": e.sha256, "size": e.size} for name, e in self.files.items()},
            "metrics": self.metrics,
            "extra": self.extra,
            **({"index": self.index.to_dict()} if self.index is not None else {}),
            **({"ranker": self.ranker.to_dict()} if self.ranker is not None else {}),
        }

    def to_bytes(self) -> bytes:
        """Serialise with sorted keys and 2-space indent, so equal manifests give equal bytes."""
        try:
            return (
                orjson.dumps(
                    self.to_dict(),
                    option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
                )
                + b"\n"
            )
        except TypeError as exc:  # orjson.JSONEncodeError: metrics/extra hold something JSON cannot say
            raise ModelFormatError(
                f"{MANIFEST_NAME}: metrics/extra are not JSON-serialisable: {exc}",
                path=MANIFEST_NAME,
                model_version=self.model_version,
            ) from exc


def _decode(raw: bytes, source: str) -> dict[str, Any]:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"{source}: manifest must be bytes, not {type(raw).__name__}", path=source)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelFormatError(f"{source}: manifest larger than {MAX_MANIFEST_BYTES} bytes", path=source)
    text = bytes(raw).decode("utf-8")  # strict: a UnicodeDecodeError becomes ModelFormatError above
    # The stdlib parser (not orjson) because it reports duplicate keys, which orjson silently merges.
    doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{source}: manifest must be a JSON object", path=source)
    return doc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ModelFormatError(f"{MANIFEST_NAME}: duplicated key {key[:80]!r}", path=MANIFEST_NAME)
        out[key] = value
    return out


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ModelFormatError(f"{MANIFEST_NAME}: number {text[:40]} overflows a float", path=MANIFEST_NAME)
    return value


def _no_constant(name: str) -> Any:
    raise ModelFormatError(f"{MANIFEST_NAME}: {name} is not valid JSON", path=MANIFEST_NAME)


def _build(doc: dict[str, Any], source: str) -> Manifest:
    def fail(msg: str) -> ModelFormatError:
        version = doc.get("model_version")
        return ModelFormatError(
            f"{source}: {msg}", path=source, model_version=version if isinstance(version, str) else None
        )

    if doc.get("format") != FORMAT_NAME:
        raise fail(f"format must be {FORMAT_NAME!r}, not {str(doc.get('format'))[:40]!r}")
    fv = doc.get("format_version")
    if not _is_int(fv) or fv != FORMAT_VERSION:
        raise fail(f"unknown format_version {str(fv)[:20]!r} (this SDK reads {FORMAT_VERSION})")
    version = check_model_version(doc.get("model_version"), source=source)
    parent = doc.get("parent_version")
    if parent is not None:
        check_model_version(parent, what="parent_version", source=source)
    created_at = doc.get("created_at")
    if not isinstance(created_at, str) or len(created_at) > 64:
        raise fail("created_at must be a string (ISO 8601)")
    dim = _positive(doc, "dim", fail)
    n_items = _positive(doc, "n_items", fail)
    max_seq_len = _positive(doc, "max_seq_len", fail)
    dtype: Any = doc.get("vector_dtype")
    if dtype not in _DTYPES:
        raise fail(f"vector_dtype must be one of {sorted(_DTYPES)}, not {str(dtype)[:20]!r}")

    model = doc.get("model")
    if not isinstance(model, dict):
        raise fail("'model' must be an object")
    model_file = check_file_name(model.get("file"), source=source)
    inputs = _names(model.get("inputs"), "model.inputs", fail)
    outputs = _names(model.get("outputs"), "model.outputs", fail)
    if "history" not in inputs:
        raise fail("model.inputs must name the 'history' input")
    unknown = sorted(set(inputs) - _INPUT_ROLES)
    if unknown:
        # An input the SDK does not know how to feed would make every inference fail.
        raise fail(f"model.inputs has unknown roles {unknown[:5]}")
    if "interest" not in outputs:
        raise fail("model.outputs must name the 'interest' output")
    query_max_len: Any = model.get("query_max_len", 0)
    if not _is_int(query_max_len) or query_max_len < 0:
        raise fail("model.query_max_len must be an integer >= 0")
    if "query" in inputs and query_max_len == 0:
        raise fail("model.query_max_len must be positive when the model has a 'query' input")

    files = _files(doc.get("files"), source, fail)
    for name in required_files(str(dtype), model_file):
        if name not in files:
            raise fail(f"files must list {name!r} (required for vector_dtype {dtype!r})")

    metrics = doc.get("metrics", {})
    extra = doc.get("extra", {})
    if not isinstance(metrics, dict) or not isinstance(extra, dict):
        raise fail("'metrics' and 'extra' must be objects")
    index = _index(doc.get("index"), files, n_items, fail)
    ranker = _ranker(doc.get("ranker"), files, fail)
    return Manifest(
        format_version=FORMAT_VERSION,
        model_version=version,
        created_at=created_at,
        parent_version=parent,
        dim=dim,
        n_items=n_items,
        max_seq_len=max_seq_len,
        vector_dtype=dtype,
        model_file=model_file,
        input_names=MappingProxyType(inputs),
        output_names=MappingProxyType(outputs),
        query_max_len=query_max_len,
        files=MappingProxyType(files),
        metrics=metrics,
        extra=extra,
        index=index,
        ranker=ranker,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ranker(value: object, files: Mapping[str, FileEntry], fail: _Fail) -> RankerInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("'ranker' must be an object")
    name = check_file_name(value.get("file"))
    if name not in files:
        raise fail(f"files must list {name!r} (named by ranker.file)")
    features = value.get("features")
    if (not isinstance(features, list) or not 0 < len(features) <= _MAX_RANKER_FEATURES
            or not all(isinstance(f, str) and 0 < len(f) <= 64 for f in features) or len(set(features)) != len(features)):
        raise fail(f"ranker.features must be 1 to {_MAX_RANKER_FEATURES} distinct names")
    io = {k: value.get(k, d) for k, d in (("input", "features"), ("output", "ctr"))}
    if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in io.values()):
        raise fail("ranker.input and ranker.output must be names")
    means = value.get("means", [])
    if not isinstance(means, list) or len(means) not in (0, len(features)) or not all(
            _is_number(m) and math.isfinite(m) for m in means):
        raise fail("ranker.means must be one finite number per feature")
    return RankerInfo(file=name, features=tuple(features), input=io["input"], output=io["output"],
                      means=tuple(float(m) for m in means))


def _index(value: object, files: Mapping[str, FileEntry], n_items: int, fail: _Fail) -> IndexInfo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("'index' must be an object")
    kind: Any = value.get("kind")
    if kind != "ivf":
        raise fail(f"index.kind must be 'ivf', not {str(kind)[:20]!r}")
    nlist: Any = value.get("nlist")
    nprobe: Any = value.get("nprobe")
    if not _is_int(nlist) or not 1 <= nlist <= n_items:
        raise fail(f"index.nlist must be an integer in [1, n_items], not {str(nlist)[:20]!r}")
    if not _is_int(nprobe) or not 1 <= nprobe <= nlist:
        raise fail(f"index.nprobe must be an integer in [1, nlist], not {str(nprobe)[:20]!r}")
    recall: Any = value.get("recall")
    if recall is not None and (isinstance(recall, bool) or not isinstance(recall, int | float)):
        raise fail("index.recall must be a number")
    for name in IVF_FILES.values():
        if name not in files:
            raise fail(f"files must list {name!r} (required by index.kind 'ivf')")
    return IndexInfo(kind="ivf", nlist=int(nlist), nprobe=int(nprobe),
                     recall=None if recall is None else float(recall))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(doc: dict[str, Any], key: str, fail: _Fail) -> int:
    value: Any = doc.get(key)
    if not _is_int(value) or value <= 0:
        raise fail(f"{key} must be a positive integer, not {str(value)[:20]!r}")
    # Past 2**53 nothing real fits in memory; the cap keeps later size arithmetic honest.
    if value > 2**53:
        raise fail(f"{key} is absurdly large")
    return int(value)


def _names(value: object, what: str, fail: _Fail) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise fail(f"{what} must be a non-empty object of role -> ONNX name")
    out: dict[str, str] = {}
    for role, name in value.items():
        if not isinstance(name, str) or not name or len(name) > _MAX_ONNX_NAME_CHARS or "\x00" in name:
            raise fail(f"{what}.{role[:40]} must be a non-empty string")
        out[role] = name
    return out


def _files(value: object, source: str, fail: _Fail) -> dict[str, FileEntry]:
    if not isinstance(value, dict):
        raise fail("'files' must be an object of name -> {sha256, size}")
    out: dict[str, FileEntry] = {}
    folded: set[str] = set()
    for name, entry in value.items():
        check_file_name(name, source=source)
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise fail(f"files must not list {name!r}")
        # Names equal but for case collide on case-insensitive file systems (macOS, Windows).
        if name.lower() in folded:
            raise fail(f"duplicated file name {name!r}")
        folded.add(name.lower())
        if not isinstance(entry, dict):
            raise fail(f"files[{name!r}] must be an object")
        sha: Any = entry.get("sha256")
        size: Any = entry.get("size")
        if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
            raise fail(f"files[{name!r}].sha256 must be 64 lowercase hex digits")
        if not _is_int(size) or size < 0 or size > 2**53:
            raise fail(f"files[{name!r}].size must be an integer >= 0")
        out[name] = FileEntry(sha256=sha, size=int(size))
    return out
