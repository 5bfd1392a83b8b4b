"""Report writing shared by the experiment scripts: the exact command, the machine, the run's
recorded settings, the Markdown + JSON pages (written whole) and plot helpers."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .seeds import mean_std

#: Where the scripts write their pages by default, and where committed reports are looked up.
DOCS_RESULTS = Path("docs/results")


def command_line(script: str, argv: Sequence[str] | None, drop: Sequence[str] = (), prefix: str = "python ") -> str:
    """The command that reruns this invocation: `prefix` + `script` (its path from the
    repository root) + the arguments quoted for a shell, less `drop` (flags that only rewrite
    the report, so that the page names the computing command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return prefix + " ".join(shlex.quote(x) for x in [script, *args] if x not in drop)


def without_workers(args: Sequence[str]) -> list[str]:
    """`args` less `--workers N` / `--workers=N`: how many processes ran does not change a result
    (so a page's command leaves it out)."""
    out, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--workers":
            skip = True
        elif not x.startswith("--workers="):
            out.append(x)
    return out


def machine(torch_threads: int | None = None) -> str:
    """'Linux x86_64, 2 CPUs visible, torch 2.x' (+ the torch threads when given)."""
    import torch

    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}"
    return text + (f", {torch_threads} torch thread(s)" if torch_threads is not None else "")


def pending_section(keys: Sequence[str]) -> list[str]:
    """The Markdown lines of a partial report's "Pending cells" section (none when nothing is
    pending), ending with a blank line."""
    if not keys:
        return []
    return ["## Pending cells", "", ", ".join(f"`{k}`" for k in keys), ""]


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_page(folder: Path, name: str, markdown: str, data: Any, json_newline: bool = False,
               plot: Callable[[Path], None] | None = None) -> None:
    """`<folder>/<name>.md`, `<name>.json` (indent 2, a final newline if `json_newline`) and,
    given `plot`, `<name>.png` drawn by it."""
    write_text(folder / f"{name}.md", markdown)
    write_text(folder / f"{name}.json", json.dumps(data, indent=2) + ("\n" if json_newline else ""))
    if plot is not None:
        plot(folder / f"{name}.png")


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None (absent or not an object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def record_settings(folder: Path, settings: dict) -> None:
    """Write the run's settings (`settings.json` in its run folder): what the cells were computed with."""
    write_text(Path(folder) / "settings.json", json.dumps(settings, indent=2))


def recorded_settings(folder: Path) -> dict | None:
    return read_json(Path(folder) / "settings.json")


def committed_reports(name: str, root: Path = DOCS_RESULTS) -> list[Path]:
    """Every `<name>` report under `root` (the committed result pages), sorted."""
    root = Path(root)
    return sorted(root.rglob(name)) if root.is_dir() else []


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """(mean, std over seeds) for a bar with an error bar; the error is 0 for a single value."""
    mean, sd = mean_std(values)
    return mean, 0.0 if math.isnan(sd) else sd
