"""Tests of model conversion on tiny random-init Hugging Face models: analog conversion, LoRA
and pool attachment (encoder, encoder-decoder, decoder-only), block grouping, heads and the
trainable-parameter counts of the paper."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from lorafusion_ext.nn.convert import (
    attach_lora,
    attach_pool,
    block_key,
    convert_to_analog,
    lora_adapter,
    targets,
    task_context,
    trainable_parameters,
)
from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.lora import LoRALinear
from lorafusion_ext.nn.pool import LoRAPool


def _bert(cls=tf.BertForSequenceClassification):
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                        max_position_embeddings=16, num_labels=3)
    return cls(cfg).eval()


def _t5():
    torch.manual_seed(0)
    cfg = tf.T5Config(vocab_size=40, d_model=16, d_kv=4, num_heads=2, d_ff=24, num_layers=2, num_decoder_layers=2,
                      decoder_start_token_id=0, pad_token_id=0)
    return tf.T5ForConditionalGeneration(cfg).eval()


def _llama():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=32)
    return tf.LlamaForCausalLM(cfg).eval()


def _mobilebert():
    torch.manual_seed(0)
    cfg = tf.MobileBertConfig(vocab_size=50, hidden_size=16, embedding_size=8, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=16, intra_bottleneck_size=8, true_hidden_size=8, num_feedforward_networks=1,
                              max_position_embeddings=16, num_labels=2)
    return tf.MobileBertForSequenceClassification(cfg).eval()


def _pool_for(model, patterns, K=3, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.Linear) and any(path.endswith("." + p) for p in patterns):
            layers[path] = (torch.randn(K, r, m.in_features, generator=g) * 0.2, torch.randn(K, m.out_features, r, generator=g) * 0.2)
    return LoRAPool(layers, alpha=4.0)


def _ids(vocab=40, shape=(2, 5)):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


def test_block_key_from_paths():
    assert block_key("encoder.block.3.layer.0.SelfAttention.q") == "encoder.block.3"
    assert block_key("decoder.block.3.layer.1.EncDecAttention.v") == "decoder.block.3"
    assert block_key("bert.encoder.layer.11.attention.self.query") == "bert.encoder.layer.11"
    assert block_key("model.layers.2.self_attn.q_proj") == "model.layers.2"
    assert block_key("transformer.h.0.attn") == "transformer.h.0"
    assert block_key("pooler.dense") == "pooler.dense"


def test_convert_to_analog_ideal_equals_digital_and_keeps_heads_digital():
    model = _bert()
    ids = _ids(50)
    ref = model(input_ids=ids).logits
    convert_to_analog(model, HardwareConfig.preset("ideal"), seed=0)
    assert type(model.classifier) is nn.Linear
    analog = [p for p, m in model.named_modules() if isinstance(m, AnalogLinear)]
    assert len(analog) == 2 * 6 + 1  # q, k, v, attn out, ffn in/out per layer + pooler
    torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-5)


def test_convert_to_analog_seeded_noise_is_reproducible():
    outs = []
    for _ in range(2):
        model = convert_to_analog(_bert(), HardwareConfig.preset("pcm_paper"), targets.QV, seed=5)
        outs.append(model(input_ids=_ids(50)).logits)
    assert torch.equal(outs[0], outs[1])
    assert sum(isinstance(m, AnalogLinear) for m in model.modules()) == 4


def test_seeded_conversion_leaves_the_global_rng_alone_so_lora_inits_pair_up():
    # HWA-LoRA against a digitally trained LoRA is a paired comparison only if the same torch
    # seed gives the same adapter init on both models; a conversion that drew from the global
    # RNG (nn.Linear's init, then overwritten) shifted every LoRA init after it.
    digital, analog = _bert(), _bert()
    torch.manual_seed(11)
    attach_lora(digital, rank=2, alpha=4.0, targets=targets.ALL_LINEAR)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    convert_to_analog(analog, HardwareConfig.preset("pcm_paper"), seed=3)
    assert torch.equal(before, torch.get_rng_state())
    attach_lora(analog, rank=2, alpha=4.0, targets=targets.ALL_LINEAR)
    a = {p: m.lora_A for p, m in analog.named_modules() if isinstance(m, LoRALinear)}
    d = {p: m.lora_A for p, m in digital.named_modules() if isinstance(m, LoRALinear)}
    assert len(a) == 13 and a.keys() == d.keys()
    assert all(torch.equal(a[k], d[k]) for k in a)


def test_attach_lora_hwa_on_bert_trains_lora_and_head():
    model = convert_to_analog(_bert(), HardwareConfig.preset("pcm_paper"), seed=0)
    attach_lora(model, rank=2, alpha=4.0, dropout=0.1, targets=targets.QV)
    loras = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(loras) == 4 and all(isinstance(m.base, AnalogLinear) for m in loras)
    counts = trainable_parameters(model)
    assert counts["lora"] == 4 * 2 * (16 + 16)
    assert counts["head"] == 16 * 3 + 3 and counts["other"] == 0
    model.train()
    model(input_ids=_ids(50), labels=torch.tensor([0, 2])).loss.backward()
    assert all(m.lora_A.grad is not None for m in loras)


def test_attach_lora_freeze_head_option():
    model = attach_lora(_bert(), rank=2, alpha=4.0, train_head=False)
    assert trainable_parameters(model)["head"] == 0


def test_targets_match_nothing_is_an_error():
    with pytest.raises(ValueError, match="no nn.Linear layer matches targets"):
        attach_lora(_bert(), rank=2, alpha=4.0, targets=["nonexistent"])


@pytest.mark.parametrize(
    "make, patterns, n_blocks",
    [(_t5, ("q", "v"), 4), (_llama, ("q_proj", "v_proj"), 2), (_mobilebert, ("query", "value"), 2)],
)
@pytest.mark.parametrize("granularity", ["block", "layer", "global"])
def test_attach_pool_groups_and_trains(make, patterns, n_blocks, granularity):
    model = make()
    pool = _pool_for(model, patterns)
    attach_pool(model, pool, mode="lorahub", magnitude=True, granularity=granularity)
    fused = {p: m for p, m in model.named_modules() if isinstance(m, LoRAFusionLinear)}
    assert set(fused) == set(pool.layer_names)
    n_groups = len({id(m.coeffs) for m in fused.values()})
    assert n_groups == {"block": n_blocks, "layer": len(fused), "global": 1}[granularity]
    for a in fused:  # same block <=> same coefficients, derived from the path
        for b in fused:
            same = fused[a].coeffs is fused[b].coeffs
            if granularity == "block":
                assert same == (block_key(a) == block_key(b))
    counts = trainable_parameters(model)
    assert counts["coefficients"] == n_groups * 3
    assert counts["magnitudes"] == sum(m.out_features for m in fused.values())
    ids = _ids(40 if make is not _mobilebert else 50)
    if make is _t5:
        loss = model(input_ids=ids, labels=ids).loss
    elif make is _llama:
        loss = model(input_ids=ids, labels=ids).loss
    else:
        loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(m.coeffs.grad is not None and m.coeffs.grad.abs().sum() > 0 for m in fused.values())
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".pool." in n)


def test_attach_pool_on_analog_model_and_mixed_tasks():
    model = convert_to_analog(_bert(), HardwareConfig.preset("ideal"), seed=0)
    pool = _pool_for(model, ("query", "value"))
    attach_pool(model, pool, mode="sum", magnitude=True, num_tasks=2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRAFusionLinear):
                m.coeffs.normal_()
    ids = _ids(50)
    tasks = torch.tensor([1, 0])
    with task_context(model, tasks):
        mixed = model(input_ids=ids).logits
    for b in range(2):
        with task_context(model, tasks[b].expand(2)):
            single = model(input_ids=ids).logits
        torch.testing.assert_close(mixed[b], single[b], rtol=1e-5, atol=1e-6)
    with task_context(model, tasks.flip(0)):
        assert not torch.allclose(model(input_ids=ids).logits, mixed)


def test_attach_pool_mismatch_errors():
    model = _bert()
    bad = LoRAPool({"bert.encoder.layer.0.attention.self.query": (torch.zeros(2, 2, 8), torch.zeros(2, 16, 2))}, alpha=1.0)
    with pytest.raises(ValueError, match=r"is \[16, 16\] but its pool is \[16, 8\]"):
        attach_pool(model, bad)
    missing = LoRAPool({"bert.encoder.layer.9.attention.self.query": (torch.zeros(2, 2, 16), torch.zeros(2, 16, 2))}, alpha=1.0)
    with pytest.raises(ValueError, match="not a module of the model"):
        attach_pool(model, missing)
    with pytest.raises(ValueError, match="granularity"):
        attach_pool(model, missing, granularity="head")


def test_pool_from_trained_loras_reproduces_each_lora():
    loras = []
    for k in range(2):
        model = attach_lora(_bert(), rank=2, alpha=4.0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, LoRALinear):
                    m.lora_B.normal_(generator=torch.Generator().manual_seed(k))
        loras.append(model)
    adapters = [lora_adapter(m)[0] for m in loras]
    pool = LoRAPool.from_adapters(adapters, alpha=4.0, adapter_names=["a", "b"])
    fused = attach_pool(_bert(), pool, mode="sum", magnitude=False, granularity="global", init_coeff=0.0)
    coeffs = next(m.coeffs for m in fused.modules() if isinstance(m, LoRAFusionLinear))
    with torch.no_grad():
        coeffs.copy_(torch.tensor([0.0, 1.0]))
    ids = _ids(50)
    torch.testing.assert_close(fused(input_ids=ids).logits, loras[1](input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_paper_counts_on_flan_t5_large_shape():
    cfg = tf.T5Config(d_model=1024, num_layers=24, num_decoder_layers=24, num_heads=16, d_kv=64, d_ff=2816,
                      feed_forward_proj="gated-gelu")
    with torch.device("meta"):  # shapes only: the counts do not depend on the values
        lora_model = tf.T5Model(cfg)
        fusion_model = tf.T5Model(cfg)
        attach_lora(lora_model, rank=16, alpha=32, targets=targets.QV)
        layers = {p: (torch.empty(20, 16, m.in_features), torch.empty(20, m.out_features, 16))
                  for p, m in fusion_model.named_modules() if isinstance(m, nn.Linear) and p.rsplit(".", 1)[-1] in ("q", "v")}
        attach_pool(fusion_model, LoRAPool(layers, alpha=32), mode="lorahub", magnitude=True, granularity="block")
    assert len(layers) == 144
    fusion, lora = trainable_parameters(fusion_model), trainable_parameters(lora_model)
    assert fusion["total"] == fusion["coefficients"] + fusion["magnitudes"] == 148_416
    assert (fusion["coefficients"], fusion["magnitudes"]) == (20 * 48, 144 * 1024)
    assert lora["total"] == lora["lora"] == 4_718_592
