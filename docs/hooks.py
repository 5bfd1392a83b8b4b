"""mkdocs hook: pages written by other parts of the project join the nav when they exist.

Experiment scripts write `docs/results/<name>.md`, and `docs/aihwkit.md` holds the AIHWKIT
compatibility table. Listing them by hand in mkdocs.yml would make every new results page an
edit of the nav (and a broken build in strict mode until the page exists), so the nav names
only the pages that always exist and this hook adds the others: results pages under
"Results" after its index (known pages first, in the order below, then the rest by name), and
the AIHWKIT page before "Extending".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Results pages in reading order; any other docs/results/*.md follows, sorted by name.
RESULTS_ORDER = ("lorafusion.md", "lorafusion_short_budget.md", "hwa_lora.md", "hwa_lora_short_budget.md", "budget_sweep.md",
                 "aihwkit_equivalence.md")


def _results_pages(docs_dir: Path) -> list[str]:
    found = sorted(p.name for p in (docs_dir / "results").glob("*.md") if p.name != "index.md")
    known = [n for n in RESULTS_ORDER if n in found]
    return [f"results/{n}" for n in known + [n for n in found if n not in known]]


def _section(nav: list[Any], title: str) -> list[Any] | None:
    for item in nav:
        if isinstance(item, dict) and title in item and isinstance(item[title], list):
            return item[title]
    return None


def on_config(config: Any, **_: Any) -> Any:
    """Add the optional pages that exist to `config["nav"]` (entries already listed stay)."""
    nav = config.get("nav")
    if not nav:
        return config
    docs_dir = Path(config["docs_dir"])
    listed = {str(v) for item in nav for v in _leaves(item)}
    results = _section(nav, "Results")
    if results is not None:
        results.extend(p for p in _results_pages(docs_dir) if p not in listed)
    if (docs_dir / "aihwkit.md").is_file() and "aihwkit.md" not in listed:
        titles = [next(iter(i)) if isinstance(i, dict) else None for i in nav]
        at = titles.index("Extending") if "Extending" in titles else len(nav)
        nav.insert(at, {"AIHWKIT compatibility": "aihwkit.md"})
    return config


def _leaves(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return [leaf for v in item.values() for leaf in _leaves(v)]
    if isinstance(item, list):
        return [leaf for v in item for leaf in _leaves(v)]
    return [item]
