"""Write docs/api.md from the docstrings of the public API.

    python docs/gen_api.py           # rewrite docs/api.md
    python docs/gen_api.py --check   # exit 1 when docs/api.md is stale (tests/test_docs.py runs this)

Signatures come from ``inspect``; dataclass field documentation from the string literal that follows each
field in the source (read with ``ast``, since Python keeps no runtime record of it).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"
sys.path.insert(0, str(ROOT))

SECTIONS: list[tuple[str, str, list[str]]] = [
    ("The recommender", "edgerec_sdk", ["Recommender"]),
    ("Results and events", "edgerec_sdk", ["Recommendations", "Recommendation", "FeedbackEvent", "Status"]),
    ("Configuration", "edgerec_sdk", ["RecommenderConfig", "IndexConfig", "ProfileConfig", "FeedbackConfig"]),
    ("Profile stores", "edgerec_sdk.profile",
     ["make_profile_store", "ProfileStore", "ProfileEvent", "MemoryProfileStore", "SqliteProfileStore",
      "RedisProfileStore", "ProfileUnavailableError"]),
    ("Flask", "edgerec_sdk.integrations.flask", ["EdgeRec", "current_recommender"]),
    ("Django", "edgerec_sdk.integrations.django", ["get_recommender", "close_recommender"]),
    ("Integration settings", "edgerec_sdk.integrations", ["parse_settings", "ProcessLocalRecommender"]),
    ("Errors", "edgerec_sdk",
     ["EdgerecError", "ConfigError", "EventError", "MissingExtraError", "ModelError", "ModelFormatError",
      "ModelIntegrityError", "ModelLoadError", "RuleError", "NotReadyError", "ClosedError", "HubError",
      "HubTransportError", "HubStatusError", "HubAuthError", "HubProtocolError"]),
]
PUBLIC_METHODS = {
    "Recommender": ["from_bundle", "demo", "connect", "recommend", "recommend_many", "similar_items", "feedback",
                    "forget", "status", "flush", "close", "poll_once", "install_signal_handlers", "postfork",
                    "swap"],
    "Recommendations": ["item_ids", "scores"],
}
# Dataclasses whose fields get a table (field, default, meaning) besides the configuration classes.
FIELD_TABLES = {"Recommendations", "Recommendation", "FeedbackEvent", "Status"}


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    return f"```text\n{doc}\n```" if doc else "*(no docstring)*"


def _sig(obj: Any) -> str:
    """The signature with annotations as written (they are strings under ``from __future__ import annotations``)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params = [p.replace(annotation=_Raw(p.annotation)) if isinstance(p.annotation, str) else p
              for p in sig.parameters.values() if p.name not in ("self", "cls")]
    ret = sig.return_annotation
    sig = sig.replace(parameters=params, return_annotation=_Raw(ret) if isinstance(ret, str) else ret)
    return str(sig)


class _Raw:
    """Prints an annotation string without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _field_docs(cls: type) -> dict[str, str]:
    """Map field name -> the string literal placed right after it in the class body."""
    # the defining file, found through the class's own functions: public classes carry the package as their
    # __module__, so inspect.getsource(cls) finds no definition and the meaning column stayed empty
    files = sorted({f.__code__.co_filename for f in vars(cls).values() if hasattr(f, "__code__")}
                   & {str(p) for p in (ROOT / "edgerec_sdk").rglob("*.py")})
    try:
        tree = ast.parse(Path(files[0]).read_text() if files else inspect.getsource(cls))
    except (OSError, TypeError):
        return _attribute_docs(cls)
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    body = found[0].body if found else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return {**_attribute_docs(cls), **docs}


def _attribute_docs(cls: type) -> dict[str, str]:
    """Map name -> text from the ``Attributes:`` section of the class docstring (Google style)."""
    docs: dict[str, str] = {}
    current = None
    in_section = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            in_section, current = True, None
            continue
        if not in_section:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        head, sep, text = line.strip().partition(": ")
        if line.startswith("    ") and not line.startswith("     ") and sep and head.isidentifier():
            current = head
            docs[current] = text
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def _dataclass_table(cls: type) -> list[str]:
    docs = _field_docs(cls)
    lines = ["", "| field | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f"{f.default_factory.__name__}()"
        else:
            default = "required"
        if not f.repr:
            default = "*(secret, not shown)*"
        lines.append(f"| `{f.name}` | `{default}` | {docs.get(f.name, '').replace('|', '/')} |")
    return lines


def _public_modules() -> list[str]:
    """Every package without a leading underscore in its path that declares ``__all__``, and the documented
    modules; found on disk so a new package cannot be left out of the public list."""
    names = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgerec_sdk").rglob("__init__.py")
             if not any(part.startswith("_") for part in p.parent.relative_to(ROOT).parts)
             and "__all__" in p.read_text()}
    return sorted(names | {module for _, module, _ in SECTIONS})


def _public_section() -> list[str]:
    import importlib

    out = ["## What is public", "",
           "The supported API, kept compatible within a major version, is exactly:", "",
           "- the names in `edgerec_sdk.__all__`;",
           "- the names in the `__all__` of the packages in the table below, imported from the package",
           "  (`from edgerec_sdk.bundle import write_bundle`), not from the module that defines them;",
           "- `edgerec_sdk.testing`, the test doubles for your own tests (bundles with a real ONNX model, a fake hub);",
           "- the `edgerec` command line and the formats on disk and on the wire "
           "([bundle-format.md](bundle-format.md), [hub.md](hub.md)).", "",
           "**Not public**: `edgerec_sdk._impl`, every module, package or name whose name starts with an underscore",
           "(`edgerec_sdk.index._common`, `edgerec_sdk.integrations._common`, `edgerec_sdk._demo`), and names a",
           "submodule defines that its package's `__all__` does not list. They change without notice. This page",
           "documents the part a storefront engineer calls; the other packages are documented by their",
           "docstrings and the pages on the formats. How the packages fit together: [design.md](design.md).", "",
           "| package | public names |", "|---|---|"]
    for name in _public_modules():
        exported = list(getattr(importlib.import_module(name), "__all__", []))
        listed = ", ".join(f"`{n}`" for n in exported) or "none (used through the `edgerec` command)"
        out.append(f"| `{name}` | {listed} |")
    return [*out, ""]


def render() -> str:
    import importlib

    out = ["# API reference", "",
           "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.",
           "Concepts are explained in [concepts.md](concepts.md), setup in [getting-started.md](getting-started.md).",
           "", *_public_section()]
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        out += [f"## {title}", ""]
        if title == "Errors":
            tree = (inspect.getdoc(importlib.import_module("edgerec_sdk.errors")) or "").split("\n\n")
            out += ["Every exception the SDK raises is an `EdgerecError`; catch that to catch them all.", "",
                    "```text", *textwrap.dedent(next((p for p in tree if "\u251c" in p), "")).splitlines(),
                    "```", ""]
        for name in names:
            obj = getattr(module, name, None)
            if obj is None:
                continue
            qual = f"{module_name}.{name}"
            if inspect.isclass(obj):
                out += [f"### `{qual}`", "", _doc(obj)]
                if dataclasses.is_dataclass(obj) and (name.endswith("Config") or name in FIELD_TABLES):
                    out += _dataclass_table(obj)
                for meth in PUBLIC_METHODS.get(name, []):
                    attr = inspect.getattr_static(obj, meth, None)
                    if attr is None:
                        continue
                    if isinstance(attr, property) and attr.fget is not None:
                        ret = inspect.signature(attr.fget).return_annotation
                        out += ["", f"#### `{name}.{meth} -> {ret}` (property)", "", _doc(attr.fget)]
                        continue
                    func = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
                    if callable(func):
                        out += ["", f"#### `{name}.{meth}{_sig(func)}`", "", _doc(func)]
            else:
                out += [f"### `{qual}{_sig(obj)}`", "", _doc(obj)]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write("docs/api.md is stale: run `python docs/gen_api.py`\n")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
