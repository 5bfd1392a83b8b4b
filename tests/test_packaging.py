"""Packaging as a user meets it: the sdist carries what a build needs and nothing heavy, the
metadata is complete, and the version has one source.

The full install from the sdist (`pip install --no-build-isolation dist/*.tar.gz` into a venv
with torch) compiles the extension, minutes on 2 cores; it is run by hand (docs/install.md),
not here.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # pytest's own dependency

import lorafusion_ext

ROOT = Path(__file__).resolve().parent.parent
MAX_SDIST_BYTES = 5 * 2**20
MAX_FILE_BYTES = 1 * 2**20
# The demo's LoRA pool ships as package data (lorafusion_ext.assets): its own cap, 10 MB.
PACKAGED_POOL = "lorafusion_ext/assets/glue_pool/"
MAX_PACKAGED_POOL_BYTES = 10 * 2**20


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="the `build` package is not installed (make install installs it)")
    pytest.importorskip("scikit_build_core", reason="scikit-build-core is not installed (make install installs it)")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend is already installed, and an isolated environment
    # would download it (an sdist never builds the extension, so no torch is involved).
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"python -m build --sdist failed:\n{proc.stdout}\n{proc.stderr}"
    found = sorted(out.glob("lorafusion_ext-*.tar.gz"))
    assert len(found) == 1, f"expected one dist/lorafusion_ext-*.tar.gz, found {found}"
    return found[0]


def _members(path: Path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        top = f"lorafusion_ext-{lorafusion_ext.__version__}/"
        names = {}
        for m in tar.getmembers():
            if m.isfile():
                assert m.name.startswith(top), f"{m.name} is outside the sdist's top folder {top}"
                names[m.name[len(top):]] = m.size
        return names


def test_sdist_name_carries_the_version(sdist):
    assert sdist.name == f"lorafusion_ext-{lorafusion_ext.__version__}.tar.gz"


def test_sdist_has_sources_and_build_files(sdist):
    files = _members(sdist)
    needed = {"pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "PKG-INFO", "mkdocs.yml"}
    for sub in ("csrc", "lorafusion_ext", "docs"):
        needed |= {
            p.relative_to(ROOT).as_posix() for p in (ROOT / sub).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc")
            and p.name != "_build_info.json"
        }
    assert {"csrc/include/lorafusion/philox.h", "csrc/torch/library.cpp", "lorafusion_ext/__init__.py"} <= needed
    missing = sorted(needed - set(files))
    assert not missing, f"files a build or a reader needs are not in the sdist: {missing}"
    assert any(n.startswith("tests/test_") for n in files), "the tests are not in the sdist"


def test_sdist_leaves_out_outputs_and_heavy_data(sdist):
    files = _members(sdist)
    banned_dirs = (".venv", "build/", "dist/", "site/", "results/", ".make/", "tests/data/", ".git/")
    bad = sorted(n for n in files if n.startswith(banned_dirs) or "__pycache__" in n.split("/")
                 or (n.endswith((".so", ".pyc", ".pt", ".safetensors")) and not n.startswith(PACKAGED_POOL)))
    assert not bad, f"build outputs, environments or bulky data in the sdist: {bad[:20]}"
    big = sorted((n, s) for n, s in files.items() if s > MAX_FILE_BYTES and not n.startswith(PACKAGED_POOL))
    assert not big, f"files over {MAX_FILE_BYTES} bytes in the sdist: {big}"
    pool_bytes = sum(s for n, s in files.items() if n.startswith(PACKAGED_POOL))
    assert pool_bytes <= MAX_PACKAGED_POOL_BYTES
    assert sdist.stat().st_size < MAX_SDIST_BYTES + pool_bytes


def test_sdist_metadata_is_complete(sdist):
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"lorafusion_ext-{lorafusion_ext.__version__}/PKG-INFO")
        assert member is not None
        meta = email.parser.Parser().parsestr(member.read().decode())
    assert meta["Name"] == "lorafusion_ext"
    assert meta["Version"] == lorafusion_ext.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert meta["Requires-Python"] == ">=3.10"
    requires = meta.get_all("Requires-Dist") or []
    torch_reqs = [Requirement(r) for r in requires if Requirement(r).name == "torch"]
    assert len(torch_reqs) == 1, requires
    # The supported range is the tested one: make test runs on 2.13.0, make cuda-check on 2.14.1.
    spec = torch_reqs[0].specifier
    assert set(spec.filter(["2.12.1", "2.13.0", "2.14.1", "2.15.0"])) == {"2.13.0", "2.14.1"}, spec
    assert meta.get_all("Project-URL"), "no Project-URL"
    classifiers = meta.get_all("Classifier") or []
    assert any(c.startswith("Programming Language :: Python :: 3") for c in classifiers), classifiers
    assert meta["Summary"] and meta.get_payload().lstrip().startswith("# lorafusion_ext")


def test_version_has_one_source():
    """`__version__`, the installed metadata and `lorafusion --version` agree."""
    assert importlib.metadata.version("lorafusion_ext") == lorafusion_ext.__version__
    proc = subprocess.run([sys.executable, "-m", "lorafusion_ext.apps.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lorafusion {lorafusion_ext.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject


def test_what_import_needs_is_declared():
    """Every third-party module that `import lorafusion_ext` imports at module level is a declared
    dependency, so `pip install` of the sdist gives a package that imports."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    declared = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].replace("-", "_").lower()
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    proc = subprocess.run([sys.executable, "-c", "import lorafusion_ext, sys; "
                           "print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
                           "if n.split('.')[0] == 'lorafusion_ext' and getattr(m, '__file__', None)))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    files = [Path(f) for f in proc.stdout.split() if f.endswith(".py")]
    assert len(files) > 10, files
    needed: dict[str, str] = {}
    for f in files:
        for node in ast.parse(f.read_text()).body:  # module level: what importing it runs
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                root = name.split(".")[0]
                if root not in sys.stdlib_module_names and root not in ("lorafusion_ext", "__future__"):
                    needed.setdefault(root, f.name)
    dists = importlib.metadata.packages_distributions()  # module -> distributions (sklearn -> scikit-learn)

    def is_declared(module: str) -> bool:
        names = {module, *dists.get(module, [])}
        return any(n.replace("-", "_").lower() in declared for n in names)

    undeclared = {m: f for m, f in needed.items() if not is_declared(m)}
    assert not undeclared, f"imported when lorafusion_ext is imported but not in [project] dependencies: {undeclared}"
