"""The documentation site: it builds in strict mode, every public name has an entry in the API
reference, and everything the reference renders has a docstring.

mkdocstrings hides an object without a docstring instead of failing (and `--strict` only
catches docstrings griffe cannot parse), so the docstrings are checked here, over exactly
what the reference pages name, with the member filters of mkdocs.yml.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

import lorafusion_ext

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"
_DIRECTIVE = re.compile(r"^::: *([\w.]+)\s*$")
_MEMBERS = re.compile(r"^\s+members:\s*\[([^\]]*)\]\s*$")


def _directives() -> list[tuple[str, list[str] | None, str]]:
    """(identifier, explicit members or None, page) of every `::: identifier` in docs/api."""
    found = []
    for page in sorted(API.glob("*.md")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _DIRECTIVE.match(line)
            if not m:
                continue
            members = None
            for follow in lines[i + 1 : i + 4]:
                mm = _MEMBERS.match(follow)
                if mm:
                    members = [s.strip() for s in mm.group(1).split(",") if s.strip()]
            found.append((m.group(1), members, page.name))
    return found


def _resolve(identifier: str) -> Any:
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(identifier)


def _filters() -> list[tuple[bool, re.Pattern]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads mkdocs.yml (installed with the docs toolchain)")

    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may carry python-specific tags (!!python/name:...): read them as plain text.
    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    plugins = cfg["plugins"]
    mkds = next(p["mkdocstrings"] for p in plugins if isinstance(p, dict) and "mkdocstrings" in p)
    raw = mkds["handlers"]["python"]["options"]["filters"]
    return [(f.startswith("!"), re.compile(f[1:] if f.startswith("!") else f)) for f in raw]


def _shown(name: str, filters: list[tuple[bool, re.Pattern]]) -> bool:
    # mkdocstrings: a name is kept unless a negative filter matches it (positive filters keep).
    keep = True
    for negative, pattern in filters:
        if pattern.search(name):
            keep = not negative
    return keep


def _own_members(cls: type, filters: list[tuple[bool, re.Pattern]]) -> Iterator[tuple[str, Any]]:
    """Public methods and properties defined by `cls` itself (what the reference renders)."""
    for name, value in vars(cls).items():
        if not _shown(name, filters):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            yield name, value.__func__
        elif isinstance(value, property):
            yield name, value
        elif inspect.isfunction(value):
            yield name, value


def _documented(identifier: str, members: list[str] | None, filters) -> Iterator[tuple[str, Any]]:
    obj = _resolve(identifier)
    yield identifier, obj
    if isinstance(obj, types.ModuleType):
        names = members if members is not None else list(getattr(obj, "__all__", []))
        for name in names:
            yield from _documented(f"{identifier}.{name}", None, filters)
    elif inspect.isclass(obj):
        for name, member in _own_members(obj, filters):
            yield f"{identifier}.{name}", member


def test_every_public_name_has_a_reference_entry():
    documented = {ident for ident, _, _ in _directives()}
    missing = sorted(n for n in lorafusion_ext.__all__ if f"lorafusion_ext.{n}" not in documented)
    assert not missing, f"public names without a `::: lorafusion_ext.<name>` entry in docs/api/*.md: {missing}"


def test_everything_the_reference_renders_has_a_docstring():
    filters = _filters()
    undocumented = []
    seen = 0
    for identifier, members, page in _directives():
        for path, obj in _documented(identifier, members, filters):
            if not (inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, (property, types.ModuleType))):
                continue  # constants: rendered only with a doc comment
            seen += 1
            doc = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ if obj.fget else None)
            if not (doc and doc.strip()):
                undocumented.append(f"{path} ({page})")
    assert seen > 100, f"only {seen} objects found: is docs/api/*.md being parsed?"
    assert not undocumented, "no docstring (mkdocstrings would silently leave them out):\n  " + "\n  ".join(undocumented)


def test_results_pages_join_the_nav(tmp_path):
    """Pages that experiments write later are listed without editing mkdocs.yml."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        hooks = importlib.import_module("hooks")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    (tmp_path / "results").mkdir()
    for name in ("index.md", "zeta.md", "hwa_lora.md", "lorafusion.md"):
        (tmp_path / "results" / name).write_text("# x\n")
    (tmp_path / "aihwkit.md").write_text("# x\n")
    nav = [{"Home": "index.md"}, {"Numerics": "numerics.md"}, {"Extending": "extending.md"},
           {"Results": ["results/index.md"]}]
    hooks.on_config({"nav": nav, "docs_dir": str(tmp_path)})
    assert nav[2] == {"AIHWKIT compatibility": "aihwkit.md"}
    assert nav[4]["Results"] == ["results/index.md", "results/lorafusion.md", "results/hwa_lora.md", "results/zeta.md"]
    hooks.on_config({"nav": nav, "docs_dir": str(tmp_path)})  # idempotent: listed pages stay once
    assert nav[4]["Results"].count("results/lorafusion.md") == 1 and len(nav) == 5


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (make docs / make test install it)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (make docs / make test install it)")
    pytest.importorskip("material", reason="mkdocs-material is not installed (make docs / make test install it)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    html = "\n".join(p.read_text(errors="replace") for p in (site / "api").rglob("*.html"))
    missing = [n for n in lorafusion_ext.__all__ if f'id="lorafusion_ext.{n}"' not in html]
    assert not missing, f"public names without an anchor in the built reference: {missing}"
    assert "DESIGN.md" not in html, "the reference points readers to DESIGN.md, which is not part of the project"
    # No page may point outside the repository's own documentation for the architecture.
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    # (Result pages quote their commands, whose data flags name the local data folders.)
    assert "../shared" not in pages.replace("../shared/data/glue", "").replace("../shared/data/bbh", "")
