"""The layout's rules: imports run one way (no cycles), the file contract imports no physics or
producer, loading a release imports no generator, voxelizer backend or torch, nanoedx_dataset
never imports nanoedx_models, core modules never import the CLI, and ``nanoedx --help`` needs
no torch."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import nanoedx_dataset
import nanoedx_models

ROOT = Path(nanoedx_dataset.__file__).parent.parent
PACKAGES = ("nanoedx_dataset", "nanoedx_models")


def _modules() -> list[str]:
    out = []
    for pkg in (nanoedx_dataset, nanoedx_models):
        out.append(pkg.__name__)
        out += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return out


def _imports(module: str) -> set[str]:
    """Modules of the two packages that ``module`` imports anywhere (module level or inside a
    function), resolved to module names."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = set(_modules())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _sys_modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                           "print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_no_import_cycles():
    graph = {m: _imports(m) for m in _modules()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n] if n in path else [m, n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(n) is None:
                visit(n, path + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", [m for m in _modules()])
def test_arrows_point_down(module):
    imports = _imports(module)
    if module.startswith("nanoedx_dataset"):
        assert not any(i.startswith("nanoedx_models") for i in imports)
    if module.startswith("nanoedx_dataset.store"):  # the contract: no physics, no producer
        assert all(i.startswith(("nanoedx_dataset.store", "nanoedx_dataset.errors"))
                   for i in imports), imports
    if not module.endswith(".cli"):
        assert not any(i.endswith(".cli") for i in imports), imports


def test_loading_a_release_imports_no_generator_backend_or_torch():
    loaded = _sys_modules_after("import nanoedx_dataset\n"
                                "nanoedx_dataset.load_dataset('mini').noisy[0, 0, 0].values")
    assert "torch" not in loaded and not any(m.startswith("nanoedx_models") for m in loaded)
    assert not any(m.startswith("nanoedx_dataset.generation") for m in loaded)
    assert not any(m.startswith("nanoedx_dataset.simulate") for m in loaded), \
        sorted(m for m in loaded if m.startswith("nanoedx_dataset"))


def test_generating_imports_no_optional_backend_or_models():
    loaded = _sys_modules_after("import nanoedx_dataset, tempfile, pathlib\n"
                                "d = pathlib.Path(tempfile.mkdtemp())\n"
                                "nanoedx_dataset.generate(d / 'x.h5', None, n=1, size=16, "
                                "progress=False)")
    assert "nanoedx_dataset.simulate.voxelizers.blender" not in loaded
    assert "bpy" not in loaded and "vtk" not in loaded and "torch" not in loaded
    assert not any(m.startswith("nanoedx_models") for m in loaded)


def test_help_needs_no_torch():
    loaded = _sys_modules_after("from nanoedx_models.cli import main\n"
                                "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                                "try:\n    main(['benchmark', '--help'])\nexcept SystemExit:\n"
                                "    pass")
    assert "torch" not in loaded


def test_public_api_keeps_its_names():
    for name in ("load_dataset", "generate", "generate_from_mesh", "renoise", "publish", "info",
                 "verify", "preview", "draw_spec", "voxelize", "project", "add_noise",
                 "downsample_counts", "voxelize_mesh"):
        assert callable(getattr(nanoedx_dataset, name)), name
    for name in ("train", "load_pretrained", "denoise", "reconstruct", "benchmark",
                 "evaluate_holdout", "evaluate_methods", "EDXMaps", "TiltSeries", "UNet"):
        assert callable(getattr(nanoedx_models, name)), name
    with pytest.raises(AttributeError):
        nanoedx_dataset.no_such_name  # noqa: B018
