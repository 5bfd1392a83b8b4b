"""Crossbar cost model: counts on known shapes and a real Hugging Face config."""

from __future__ import annotations

import pytest
from torch import nn

from lorafusion_ext.evaluation.cost import CostModel, crossbar_cost, linear_layers


def test_counts_on_a_two_layer_model():
    layers = [("a", 1024, 1024), ("b", 1000, 300)]
    cm = CostModel(tile_rows=512, tile_cols=256, cells_per_weight=2, energy_per_write_pj=5.0)
    r = crossbar_cost(layers, rank=4, pool_size=3, cost_model=cm)
    m = {x.method.split(" (")[0]: x for x in r.methods}
    base = 2 * (1024 * 1024 + 1000 * 300)
    assert m["base model"].cells_once == base and m["base model"].tiles == 2 * 4 + 2 * 2
    assert m["full fine-tuning"].cells_per_task == base
    lora_cells = 2 * 4 * (1024 + 1024 + 1000 + 300)
    assert m["LoRA on crossbar"].cells_per_task == lora_cells
    assert m["HWA-LoRA"].cells_per_task == 0 and m["HWA-LoRA"].digital_params_per_task == lora_cells // 2
    lf = m["LoRAFusion"]
    assert lf.cells_per_task == 0 and lf.cells_once == base + 3 * lora_cells
    assert lf.digital_params_per_task == 3 * 2 + 1024 + 300
    assert m["base model"].energy_once_uj == pytest.approx(base * 5.0 * 1e-6)
    assert "| LoRAFusion (pool of 3 on crossbar) |" in r.to_markdown()


def test_flan_t5_large_shaped_reference_counts():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(d_model=1024, num_layers=2, num_decoder_layers=2, num_heads=16, d_kv=64,
                                d_ff=2816, vocab_size=64)
    model = transformers.T5ForConditionalGeneration(cfg)
    qv = [n for n, _, _ in linear_layers(model) if n.endswith(("SelfAttention.q", "SelfAttention.v",
                                                                   "EncDecAttention.q", "EncDecAttention.v"))]
    r = crossbar_cost(linear_layers(model), rank=16, pool_size=20, adapted=qv, fusion_blocks=4)
    hwa = next(x for x in r.methods if x.method.startswith("HWA-LoRA"))
    assert hwa.digital_params_per_task == len(qv) * 16 * 2048


def test_bad_arguments():
    with pytest.raises(ValueError, match="CostModel.tile_rows = 0"):
        CostModel(tile_rows=0)
    with pytest.raises(ValueError, match="energy_per_write_pj"):
        CostModel(energy_per_write_pj=-1.0)
    with pytest.raises(ValueError, match=r"adapted layers \['zz'\]"):
        crossbar_cost([("a", 4, 4)], adapted=["zz"])
    assert linear_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))) == [("0", 3, 4), ("2", 4, 2)]
