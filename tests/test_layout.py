"""Repository rules that are cheap to check mechanically."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_sleep_in_tests() -> None:
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        text = path.read_text()
        if re.search(r"\btime\.sleep\(|\bfrom time import sleep\b", text) and path.name != "test_layout.py":
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_module_size_limit() -> None:
    """A module over 500 lines says why on its first line (``# Over 500 lines: <reason>``)."""
    too_big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "edgerec_sdk").rglob("*.py")
        if (n := len(lines := p.read_text().splitlines())) > 500 and not lines[0].startswith("# Over 500 lines: ")
    }
    assert too_big == {}


def test_no_assert_for_argument_checks_in_runtime() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "edgerec_sdk").rglob("*.py")
        if re.search(r"^\s+assert\s", p.read_text(), re.MULTILINE) and "testing" not in p.name
    ]
    assert offenders == []


def test_no_print_in_runtime() -> None:
    runtime = [p for p in (ROOT / "edgerec_sdk").rglob("*.py")
               if "train" not in p.parts and "hub" not in p.parts and p.name != "cli.py"]
    offenders = [str(p.relative_to(ROOT)) for p in runtime if re.search(r"^\s*print\(", p.read_text(), re.M)]
    assert offenders == []


def test_every_exception_class_lives_in_errors() -> None:
    """Exception classes are defined in edgerec_sdk/errors.py only, all under EdgerecError; a private one that
    never leaves its module may stay there if it derives from a class of errors.py."""
    import ast
    import builtins

    import edgerec_sdk.errors as errors

    ours = {name for name in dir(errors) if isinstance(getattr(errors, name), type)}
    builtin_exc = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                   and issubclass(getattr(builtins, n), BaseException)}
    misplaced = []
    for path in (ROOT / "edgerec_sdk").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                     for b in node.bases}
            if not bases & (ours | builtin_exc):
                continue
            where = f"{path.relative_to(ROOT)}:{node.name}"
            if path.name == "errors.py":
                continue
            if not node.name.startswith("_") or bases & builtin_exc:
                misplaced.append(where)
    assert misplaced == []
    tree = (errors.__doc__ or "").split("Third-party")[0]
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.EdgerecError), name
        assert re.search(rf"(── |^    ){name}\b", tree, re.M), f"{name} is missing from the tree drawn in errors.py"


def test_demo_bundle_stays_within_8_mib() -> None:
    """The demo ships inside the wheel: its budget is 8 MiB for the whole bundle directory."""
    demo = ROOT / "edgerec_sdk" / "_demo"
    sizes = {p.name: p.stat().st_size for p in demo.iterdir() if p.is_file()}
    assert "interest.onnx" in sizes and "manifest.json" in sizes
    assert sum(sizes.values()) <= 8 * 1024 * 1024, sizes
