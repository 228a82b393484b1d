"""The codebase stays small in its parts: no module over 300 lines, no function over 60, every
module with a docstring (docs/architecture.md)."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("bnreg_tf", "resnet", "efficientnet", "benchmarks")


def _modules():
    for package in SOURCES:
        yield from sorted((ROOT / package).rglob("*.py"))
    yield ROOT / "run_imagenet.py"


def test_modules_and_functions_are_small_and_documented():
    too_long, undocumented = [], []
    for path in _modules():
        text = path.read_text()
        tree = ast.parse(text)
        name = str(path.relative_to(ROOT))
        if text.count("\n") > 300:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        if text.strip() and not ast.get_docstring(tree):
            undocumented.append(name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, too_long
    assert not undocumented, undocumented
