"""The LoRAFusion training recipe (`train_fusion`): the fused model starts at W0 + ΔW of its
initial coefficients (DoRA's magnitude initialisation), and only coefficients, magnitudes and
the head move."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorafusion_ext.nn.convert import attach_pool
from lorafusion_ext.data.tokenize import EncodedDataset
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.pool import LoRAPool
from lorafusion_ext.training.loop import TrainConfig
from lorafusion_ext.training.methods import (FusionConfig, fusion_coefficients, fusion_magnitudes, init_magnitudes,
                                             train_fusion)


class _Net(nn.Module):
    """Two 'blocks' of linear layers and a head; returns an object with .loss/.logits like HF."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 12)
        self.layer = nn.ModuleList([nn.Linear(12, 12) for _ in range(2)])
        self.classifier = nn.Linear(12, 2)

    def forward(self, input_ids, attention_mask=None, labels=None):
        h = self.emb(input_ids).mean(1)
        for lin in self.layer:
            h = torch.tanh(lin(h))
        logits = self.classifier(h)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return type("Out", (), {"loss": loss, "logits": logits})()


def _pool(K: int = 3) -> LoRAPool:
    g = torch.Generator().manual_seed(1)
    layers = {f"layer.{i}": (torch.randn(K, 4, 12, generator=g) * 0.3, torch.randn(K, 12, 4, generator=g) * 0.3)
              for i in range(2)}
    return LoRAPool(layers, alpha=8.0)


def _data(n: int = 32) -> EncodedDataset:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 20, (n, 6), generator=g)
    return EncodedDataset({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, (ids[:, 0] % 2).long())


@pytest.mark.parametrize("mode", ["lorahub", "sum"])
def test_init_magnitudes_makes_the_fused_layer_start_at_w0_plus_delta(mode):
    net = _Net()
    attach_pool(net, _pool(), mode=mode, magnitude=True)  # digital bases: a digital pool
    with torch.no_grad():  # coefficients far from attach_pool's 1/K, as train_fusion's Xavier draw
        for c in fusion_coefficients(net):
            c.copy_(torch.tensor([0.9, -0.7, 0.5]))
    x = torch.randn(5, 12)
    layer = net.layer[0]
    assert isinstance(layer, LoRAFusionLinear)
    init_magnitudes(net)
    # With m = ‖W0 + ΔW‖ the ratio is 1: the output is W0 x + b + Δy exactly.
    mag = layer.magnitude
    layer.magnitude = None
    expected = layer(x)
    layer.magnitude = mag
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_train_fusion_starts_from_w0_plus_delta_and_trains_only_fusion_params():
    net = _Net()
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not n.startswith("classifier")}
    cfg = FusionConfig()
    tcfg = TrainConfig(steps=1, batch_size=8, progress=False)
    # One step at learning rate ~0 leaves the initial state: compare the fused layer with and
    # without its magnitude there.
    train_fusion(net, _pool(), _data(), FusionConfig(coeff_lr=1e-30, magnitude_lr=1e-30, head_lr=1e-30), tcfg)
    layer = net.layer[1]
    x = torch.randn(4, 12)
    mag = layer.magnitude
    with torch.no_grad():
        y = layer(x)
        layer.magnitude = None
        y_plain = layer(x)
        layer.magnitude = mag
    torch.testing.assert_close(y, y_plain, rtol=1e-5, atol=1e-6)
    # A real run moves the coefficients and magnitudes, not the frozen weights.
    net2 = _Net()
    train_fusion(net2, _pool(), _data(), cfg, TrainConfig(steps=3, batch_size=8, progress=False))
    for n, p in net2.named_parameters():
        base_name = n.replace(".base.", ".")
        if base_name in frozen:
            torch.testing.assert_close(p, frozen[base_name], rtol=0, atol=0)
    assert fusion_magnitudes(net2) and all(c.requires_grad for c in fusion_coefficients(net2))
