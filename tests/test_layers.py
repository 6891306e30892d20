"""The layering of ../shared/design/style.md, checked on every import of the package and kernels/:
arrows point down only, kernels and the contract import nothing above them, only the front door
imports the implementations, and no module takes another package's private names."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    if rel.startswith("kernels"):
        rel = "fcnfast." + rel
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _sources():
    for top in ("fcnfast", "kernels"):
        for root, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(root, f)


def _imports(path: str):
    """(imported module, names taken from it) of every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names = tuple(a.name for a in node.names)
            yield mod, names
            for n in names:  # `from . import x` imports the submodule x
                yield f"{mod}.{n}", ()


def _ours(mod: str) -> bool:
    return mod == "fcnfast" or mod.startswith("fcnfast.")


def _table():
    return {_module_name(p): list(_imports(p)) for p in _sources()}


TABLE = _table()
KNOWN = set(TABLE)


def _targets(name):
    """Modules of ours (that exist) the module imports."""
    return {m for m, _ in TABLE[name] if _ours(m) and m in KNOWN and m != name}


def _in(mod: str, *prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_table_is_read():
    assert {"fcnfast.contract", "fcnfast.ops", "fcnfast.kernels.upsample_crop_add",
            "fcnfast.engine.engine", "fcnfast.models.vgg"} <= KNOWN


def test_contract_is_a_leaf():
    assert _targets("fcnfast.contract") == set()
    for mod, _ in TABLE["fcnfast.contract"]:
        assert mod.split(".")[0] in ("torch", "numpy", "math", "weakref", "collections",
                                     "dataclasses", "typing", "__future__"), mod


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if _in(n, "fcnfast.kernels")))
def test_kernels_import_only_the_contract(name):
    assert _targets(name) - {"fcnfast.contract", "fcnfast"} <= {
        n for n in KNOWN if _in(n, "fcnfast.kernels")}


@pytest.mark.parametrize("name", ["fcnfast.ops.reference", "fcnfast.ops.native"])
def test_implementations_import_only_the_contract(name):
    # native also needs the optional-module gate for the compiled modules
    assert _targets(name) <= {"fcnfast.contract", "fcnfast._ext", "fcnfast"}


def test_only_the_front_door_imports_the_implementations():
    impl = {"fcnfast.ops.reference", "fcnfast.ops.native"} | {
        n for n in KNOWN if _in(n, "fcnfast.kernels")}
    for name in KNOWN - impl - {"fcnfast.ops", "fcnfast._ext", "fcnfast.ops.custom_ops"}:
        assert not (_targets(name) & impl), f"{name} imports {_targets(name) & impl}"


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if _in(n, "fcnfast.models")))
def test_models_know_nothing_of_ops_kernels_or_engine(name):
    bad = {t for t in _targets(name)
           if _in(t, "fcnfast.ops", "fcnfast.kernels", "fcnfast.engine", "fcnfast.api",
                  "fcnfast.images", "fcnfast.cli")}
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(n for n in KNOWN
                                        if _in(n, "fcnfast.training", "fcnfast.data", "fcnfast.metrics")))
def test_training_side_never_imports_the_engine(name):
    bad = {t for t in _targets(name) if _in(t, "fcnfast.engine", "fcnfast.api", "fcnfast.cli")}
    assert not bad, f"{name} imports {bad}"


def test_engine_never_imports_upwards():
    for name in (n for n in KNOWN if _in(n, "fcnfast.engine")):
        bad = {t for t in _targets(name) if _in(t, "fcnfast.api", "fcnfast.cli", "fcnfast.video")}
        assert not bad, f"{name} imports {bad}"


def test_no_private_names_across_packages():
    def package(mod):
        return mod.rpartition(".")[0] if mod.count(".") > 1 else mod

    found = []
    for name, imports in TABLE.items():
        for mod, names in imports:
            if not _ours(mod):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            other = package(mod) != package(name)
            if private and other and mod != "fcnfast":
                found.append(f"{name}: from {mod} import {', '.join(private)}")
            last = mod.rpartition(".")[2]
            if mod in KNOWN and last.startswith("_") and last != "_ext" and other:
                found.append(f"{name}: imports private module {mod}")
    assert not found, "\n".join(found)


def test_nothing_below_the_faces_imports_them():
    # The deployment and scale-out faces (ONNX export, Ray Data jobs) sit beside the CLI: the
    # API, engine, front door and models never reach up to them.
    faces = ("fcnfast.cli", "fcnfast.video", "fcnfast.distributed", "fcnfast.export")
    below = [n for n in KNOWN if _in(n, "fcnfast.api", "fcnfast.engine", "fcnfast.ops",
                                     "fcnfast.models", "fcnfast.images", "fcnfast.contract",
                                     "fcnfast.checkpoint", "fcnfast.training", "fcnfast.data")]
    for name in below:
        bad = {t for t in _targets(name) if _in(t, *faces)}
        assert not bad, f"{name} imports {bad}"


def test_optional_modules_come_through_the_gate():
    # onnx, onnxruntime and ray are imported by fcnfast._ext alone (the CLI's and the faces'
    # "pip install fcnfast[...]" hints come from there)
    for name, imports in TABLE.items():
        if name == "fcnfast._ext":
            continue
        bad = [m for m, _ in imports if m.split(".")[0] in ("onnx", "onnxruntime", "onnxscript", "ray", "pyarrow")]
        assert not bad, f"{name} imports {bad} directly"
