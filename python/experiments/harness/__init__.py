"""One harness for the experiment scripts of `python/experiments/`.

Each script keeps only its protocol: its settings, its cell list, how one cell computes and how
its report reads. The harness holds the rest:

- `cells`: `Cell`, `PendingCell`, cell keys, and `NOISE_STREAM`, the version of the
  simulator's noise draws that every new cell records (cells computed before carry version 1
  implicitly; a bump makes them stale, never mixed with new ones);
- `run_folder`: `RunFolder`, one JSON file per finished cell, skipped on a rerun, adopted
  from a committed report or imported from another run; `run_queue`, the claimed work queue
  several processes share;
- `claims`: `ProcessLock` (flock) and `Claims`, which process computes which cell;
- `seeds`: mean ± std over seeds;
- `report`: the exact command, the machine, settings files, Markdown + JSON pages, plots;
- `adapters`: the trained per-task states (LoRA, head) stored beside a run's cells, for
  later experiments to reuse under the same config;
- `tiny_models`: the tiny random models of the `--quick` smoke runs and of the tests.

The scripts import it as ``harness`` (they put their own folder on ``sys.path``).
"""

from .adapters import adapter_config, adapter_path, load_adapter, save_adapter
from .cells import LEGACY_NOISE_STREAM, NOISE_STREAM, Cell, PendingCell, noise_stream_of, same_config, select, stamp
from .cells import to_compute
from .claims import Claims, ProcessLock
from .report import command_line, committed_reports, machine, pyplot, read_json, record_settings, recorded_settings
from .report import pending_section, without_workers, write_page, write_text
from .run_folder import RunFolder, run_queue, start_workers, write_json_atomic
from .seeds import format_mean_std, mean_std

__all__ = [
    "adapter_config", "adapter_path", "load_adapter", "save_adapter",
    "NOISE_STREAM", "LEGACY_NOISE_STREAM", "Cell", "PendingCell", "noise_stream_of", "same_config", "select", "stamp",
    "to_compute",
    "Claims", "ProcessLock", "RunFolder", "run_queue", "start_workers", "write_json_atomic", "format_mean_std", "mean_std",
    "command_line", "committed_reports", "machine", "pyplot", "read_json", "record_settings", "recorded_settings",
    "without_workers", "write_page", "write_text",
]
