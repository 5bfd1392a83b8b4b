"""Tests of pool I/O and peft interop, with the real `peft` package on a tiny BERT."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from torch import nn

from lorafusion_ext.interop.peft import export_peft_adapter, import_peft_adapters
from lorafusion_ext.nn.pool import load_pool, save_pool
from lorafusion_ext.nn.convert import attach_lora, attach_pool
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.lora import LoRALinear

peft = pytest.importorskip("peft")


def _bert():
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                        max_position_embeddings=16)
    return tf.BertModel(cfg).eval()


IDS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))


def _peft_adapter(folder, seed, r=2, alpha=4, targets=("query", "value"), **extra):
    model = peft.get_peft_model(_bert(), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **extra))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(folder)
    return model.eval()


def _fuse_one_hot(pool, k):
    model = attach_pool(_bert(), pool, mode="sum", magnitude=False, granularity="global")
    coeffs = next(m.coeffs for m in model.modules() if isinstance(m, LoRAFusionLinear))
    with torch.no_grad():
        coeffs.zero_()
        coeffs[k] = 1.0
    return model


def test_import_peft_adapters_reproduces_each_adapter(tmp_path):
    refs = [_peft_adapter(tmp_path / "a", 1), _peft_adapter(tmp_path / "b", 2, alpha=8), _peft_adapter(tmp_path / "c", 3, use_rslora=True)]
    pool = import_peft_adapters([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    assert pool.adapter_names == ["a", "b", "c"] and pool.num_adapters == 3 and pool.rank == 2
    assert set(pool.layer_names) == {f"encoder.layer.{i}.attention.self.{n}" for i in range(2) for n in ("query", "value")}
    for k, ref in enumerate(refs):  # different alphas / rslora are folded into B exactly
        torch.testing.assert_close(_fuse_one_hot(pool, k)(input_ids=IDS).last_hidden_state,
                                   ref(input_ids=IDS).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_import_rank_and_target_mismatch_errors(tmp_path):
    _peft_adapter(tmp_path / "a", 1, r=2)
    _peft_adapter(tmp_path / "b", 2, r=4)
    _peft_adapter(tmp_path / "c", 3, targets=("query",))
    with pytest.raises(ValueError, match=r"b has rank 4; expected rank 2"):
        import_peft_adapters([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match=r"expected rank 8"):
        import_peft_adapters([tmp_path / "a"], rank=8)
    with pytest.raises(ValueError, match=r"c adapts other layers than .*a \(missing \[.*value"):
        import_peft_adapters([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(ValueError, match=r"expected exactly the targets"):
        import_peft_adapters([tmp_path / "a"], targets=["encoder.layer.0.attention.self.query"])
    with pytest.raises(FileNotFoundError, match="adapter_config.json is missing"):
        import_peft_adapters([tmp_path / "nothing"])
    _peft_adapter(tmp_path / "d", 4, use_dora=True)
    with pytest.raises(ValueError, match="use_dora"):
        import_peft_adapters([tmp_path / "d"])


def test_imported_pool_save_load_round_trip(tmp_path):
    _peft_adapter(tmp_path / "a", 1)
    _peft_adapter(tmp_path / "b", 2)
    pool = import_peft_adapters([tmp_path / "a", tmp_path / "b"], names=["cola", "sst2"])
    loaded = load_pool(save_pool(pool, tmp_path / "pool"))
    assert loaded.adapter_names == ["cola", "sst2"] and loaded.alpha == pool.alpha
    for n in pool.layer_names:
        assert torch.equal(loaded.layer(n).A, pool.layer(n).A) and torch.equal(loaded.layer(n).B, pool.layer(n).B)
    cfg = json.loads((tmp_path / "pool" / "pool_config.json").read_text())
    cfg["rank"] = 3
    (tmp_path / "pool" / "pool_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="expected .* per"):
        load_pool(tmp_path / "pool")


def test_export_loads_in_peft_with_identical_outputs(tmp_path):
    model = attach_lora(_bert(), rank=2, alpha=4.0, dropout=0.05)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g))
    export_peft_adapter(model, tmp_path / "export", base_model_name_or_path="tiny-bert")
    loaded = peft.PeftModel.from_pretrained(_bert(), tmp_path / "export").eval()
    cfg = loaded.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (2, 4.0, 0.05)
    torch.testing.assert_close(loaded(input_ids=IDS).last_hidden_state, model.eval()(input_ids=IDS).last_hidden_state)
    # and back: the exported adapter imports as a one-adapter pool
    pool = import_peft_adapters([tmp_path / "export"])
    torch.testing.assert_close(_fuse_one_hot(pool, 0)(input_ids=IDS).last_hidden_state, model(input_ids=IDS).last_hidden_state,
                               rtol=1e-5, atol=1e-5)


def test_export_without_lora_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no LoRALinear layer"):
        export_peft_adapter(nn.Sequential(nn.Linear(2, 2)), tmp_path)
