"""setup.py installs every subpackage (a non-editable install lacking one fails only for users)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_packages():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "packages":
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py names no packages")


def test_every_subpackage_is_installed():
    found = set()
    for root, dirs, files in os.walk(os.path.join(ROOT, "fcnfast")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if "__init__.py" in files or os.path.basename(root) == "weights":
            found.add(os.path.relpath(root, ROOT).replace(os.sep, "."))
    missing = found - _setup_packages()
    assert not missing, f"setup.py's packages= lacks {sorted(missing)}"
