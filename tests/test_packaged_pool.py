"""The LoRA pool shipped in the package for the demo: it loads, fits all-MiniLM-L6-v2's layers,
carries a head per member and its provenance, and stays small."""

from __future__ import annotations

import pytest

from lorafusion_ext.assets import GLUE_POOL, load_packaged_pool
from lorafusion_ext.data.glue import task_spec


def test_packaged_pool_loads_with_heads_and_provenance():
    packaged = load_packaged_pool()
    pool = packaged.pool
    assert pool.rank == 8 and pool.alpha == 32.0 and pool.num_adapters == 4
    assert packaged.provenance["held_out"] == "sst2" and "sst2" not in packaged.tasks
    # MiniLM: 6 blocks of 6 linear layers and the pooler, hidden 384, intermediate 1536.
    assert len(pool.layer_names) == 37
    q = pool.layer("bert.encoder.layer.0.attention.self.query")
    assert (q.in_features, q.out_features) == (384, 384)
    for task in packaged.tasks:
        weight, bias = packaged.heads[task]
        assert weight.shape == (task_spec(task).num_labels, 384) and bias.shape == (task_spec(task).num_labels,)
        assert set(packaged.provenance["members"][task]) >= {"metric", "dev", "t0", "t10y"}
    assert "lorafusion_glue.py" in packaged.provenance["regenerate"]
    assert sum(f.stat().st_size for f in GLUE_POOL.iterdir()) <= 10 * 2**20


def test_packaged_pool_folder_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="heads.safetensors"):
        load_packaged_pool(tmp_path)
