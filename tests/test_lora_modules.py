"""Tests of LoRALinear, LoRAPool and LoRAFusionLinear (plain LoRA equivalence, DoRA parity with
peft, mixed tasks, save/load)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lorafusion_ext.hardware import HardwareConfig
from lorafusion_ext.nn.analog_linear import AnalogLinear
from lorafusion_ext.nn.fusion import LoRAFusionLinear
from lorafusion_ext.nn.lora import LoRALinear
from lorafusion_ext.nn.pool import LoRAPool

DT = torch.float64


def _linear(d_in=12, d_out=10, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out, dtype=DT)


def _pool(K=3, r=4, d_in=12, d_out=10, seed=1, names=("lin",)):
    g = torch.Generator().manual_seed(seed)
    layers = {n: (torch.randn(K, r, d_in, generator=g, dtype=DT) * 0.3, torch.randn(K, d_out, r, generator=g, dtype=DT) * 0.3) for n in names}
    return LoRAPool(layers, alpha=8.0)


def test_lora_linear_init_as_peft_and_exact_base_at_start():
    base = _linear()
    lora = LoRALinear(base, rank=4, alpha=8.0)
    x = torch.randn(5, 12, dtype=DT)
    torch.testing.assert_close(lora(x), base(x), rtol=0, atol=0)
    assert torch.count_nonzero(lora.lora_B) == 0
    bound = 1 / math.sqrt(12)  # kaiming_uniform(a=√5) bound = 1/√fan_in
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.std() > bound / 4
    assert not base.weight.requires_grad and lora.lora_A.requires_grad
    assert lora.weight is base.weight and lora.in_features == 12 and lora.out_features == 10


def test_lora_linear_forward_and_delta_weight():
    lora = LoRALinear(_linear(), rank=4, alpha=8.0)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(2, 3, 12, dtype=DT)
    torch.testing.assert_close(lora(x), x @ (lora.base.weight + lora.delta_weight()).t() + lora.base.bias)


def test_lora_linear_on_analog_base_trains_through_the_crossbar():
    torch.manual_seed(0)
    base = AnalogLinear.from_linear(nn.Linear(16, 8), HardwareConfig.preset("pcm_paper"), seed=3)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(4, 16)
    lora(x).square().sum().backward()
    assert lora.lora_A.grad is not None and lora.lora_B.grad.abs().sum() > 0
    assert base.weight.grad is None


@pytest.mark.parametrize("bad", [dict(rank=0), dict(alpha=float("nan")), dict(dropout=1.0)])
def test_lora_linear_bad_arguments(bad):
    kw = dict(rank=2, alpha=4.0, dropout=0.0) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoRALinear(_linear(), **kw)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
def test_fusion_single_adapter_unit_coefficient_is_plain_lora(mode):
    base, pool = _linear(), _pool(K=1)
    fused = LoRAFusionLinear(base, pool.layer("lin"), pool.scaling, nn.Parameter(torch.ones(1, dtype=DT)), mode)
    lora = LoRALinear(base, rank=4, alpha=8.0)
    with torch.no_grad():
        lora.lora_A.copy_(pool.layer("lin").A[0])
        lora.lora_B.copy_(pool.layer("lin").B[0])
    x = torch.randn(3, 5, 12, dtype=DT)
    torch.testing.assert_close(fused(x), lora(x))


@pytest.mark.parametrize("bias", [True, False])
def test_magnitude_path_equals_peft_dora(bias):
    peft = pytest.importorskip("peft")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 10, bias=bias, dtype=DT)

        def forward(self, x):
            return self.lin(x)

    torch.manual_seed(0)
    net = Net()
    ref = peft.get_peft_model(Net(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["lin"], use_dora=True))
    ref.base_model.model.lin.base_layer.load_state_dict(net.lin.state_dict())
    pool = _pool(K=1)
    mag = torch.rand(10, dtype=DT) + 0.5
    peft_lin = ref.base_model.model.lin
    with torch.no_grad():
        peft_lin.lora_A["default"].weight.copy_(pool.layer("lin").A[0])
        peft_lin.lora_B["default"].weight.copy_(pool.layer("lin").B[0])
        peft_lin.lora_magnitude_vector["default"].weight.copy_(mag)
    ours = LoRAFusionLinear(net.lin, pool.layer("lin"), pool.scaling, nn.Parameter(torch.ones(1, dtype=DT)), "sum", magnitude=True)
    with torch.no_grad():
        ours.magnitude.copy_(mag)
    x = torch.randn(6, 12, dtype=DT, requires_grad=True)
    y_ref, y = ref(x), ours(x)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    gx_ref, gm_ref = torch.autograd.grad(y_ref, (x, peft_lin.lora_magnitude_vector["default"].weight), g)
    gx, gm = torch.autograd.grad(y, (x, ours.magnitude), g)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gm, gm_ref)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
def test_weight_norm_matches_dense_formula_and_magnitude_init(mode):
    base, pool = _linear(), _pool(K=3)
    c = nn.Parameter(torch.tensor([0.3, -1.2, 0.7], dtype=DT))
    fused = LoRAFusionLinear(base, pool.layer("lin"), pool.scaling, c, mode, magnitude=True)
    A, B = pool.layer("lin").A, pool.layer("lin").B
    if mode == "sum":
        dw = pool.scaling * torch.einsum("k,kor,kri->oi", c, B, A)
    else:
        dw = pool.scaling * torch.einsum("k,kor->or", c, B) @ torch.einsum("k,kri->ri", c, A)
    torch.testing.assert_close(fused.weight_norm(), torch.linalg.vector_norm(base.weight + dw, dim=1))
    # DoRA's initialisation: m = ‖W0 + ΔW‖, so the layer starts at exactly (W0 + ΔW) x + b.
    torch.testing.assert_close(fused.magnitude.detach(), torch.linalg.vector_norm(base.weight + dw, dim=1))
    x = torch.randn(4, 12, dtype=DT)
    torch.testing.assert_close(fused(x), x @ (base.weight + dw).t() + base.bias)
    with torch.no_grad():
        fused.magnitude.mul_(torch.linspace(0.5, 1.5, 10, dtype=DT))
    expected = fused.magnitude / fused.weight_norm() * (x @ (base.weight + dw).t()) + base.bias
    torch.testing.assert_close(fused(x), expected)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
def test_fusion_mixed_tasks_equal_per_task_runs(mode):
    base, pool = _linear(), _pool(K=3)
    table = nn.Parameter(torch.randn(2, 3, dtype=DT))
    fused = LoRAFusionLinear(base, pool.layer("lin"), pool.scaling, table, mode, magnitude=True)
    with torch.no_grad():
        fused.magnitude.mul_(torch.rand(2, 10, dtype=DT) + 0.5)
    x = torch.randn(4, 5, 12, dtype=DT)
    ids = torch.tensor([1, 0, 0, 1])
    fused.task_ids = ids
    y = fused(x)
    for t in range(2):
        single = LoRAFusionLinear(base, pool.layer("lin"), pool.scaling, nn.Parameter(table[t].detach().clone()), mode, magnitude=True)
        with torch.no_grad():
            single.magnitude.copy_(fused.magnitude[t])
        torch.testing.assert_close(y[ids == t], single(x[ids == t]))
    fused.task_ids = None
    with pytest.raises(ValueError, match="per-task table; expected task_ids"):
        fused(x)


def test_fusion_trains_coefficients_and_magnitude_only():
    base, pool = _linear(), _pool(K=3)
    pool.requires_grad_(False)
    fused = LoRAFusionLinear(base, pool.layer("lin"), pool.scaling, nn.Parameter(torch.full((3,), 1 / 3, dtype=DT)), "lorahub", magnitude=True)
    fused(torch.randn(4, 12, dtype=DT)).square().sum().backward()
    assert fused.coeffs.grad.abs().sum() > 0 and fused.magnitude.grad.abs().sum() > 0
    assert pool.layer("lin").A.grad is None and base.weight.grad is None


def test_fusion_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="expected the same \\[d_out, d_in\\]"):
        LoRAFusionLinear(_linear(d_in=12, d_out=9), _pool().layer("lin"), 1.0, nn.Parameter(torch.ones(3, dtype=DT)))
    with pytest.raises(ValueError, match="coeffs has shape"):
        LoRAFusionLinear(_linear(), _pool().layer("lin"), 1.0, nn.Parameter(torch.ones(4, dtype=DT)))


def test_pool_save_load_round_trip_is_exact(tmp_path):
    pool = _pool(K=3, names=("enc.0.q", "enc.0.v", "dec.1.q"))
    pool.adapter_names = ["cola", "sst2", "mrpc"]
    loaded = LoRAPool.load(pool.save(tmp_path / "pool"))
    assert loaded.config() == pool.config()
    for n in pool.layer_names:
        assert torch.equal(loaded.layer(n).A, pool.layer(n).A) and torch.equal(loaded.layer(n).B, pool.layer(n).B)
        assert loaded.layer(n).A.dtype == DT


def test_pool_construction_errors(tmp_path):
    A, B = torch.zeros(3, 4, 12), torch.zeros(3, 10, 4)
    with pytest.raises(ValueError, match="expected K=3, r=4 like the first layer"):
        LoRAPool({"a": (A, B), "b": (A[:, :2].contiguous(), B[:, :, :2].contiguous())}, alpha=1.0)
    with pytest.raises(ValueError, match="same K and r"):
        LoRAPool({"a": (A, B[:2])}, alpha=1.0)
    with pytest.raises(ValueError, match="expected the same targets"):
        LoRAPool.from_adapters([{"a": (A[0], B[0])}, {"b": (A[0], B[0])}], alpha=1.0)
    with pytest.raises(ValueError, match="expected one rank"):
        LoRAPool.from_adapters([{"a": (A[0], B[0])}, {"a": (A[0, :2], B[0, :, :2])}], alpha=1.0)
    with pytest.raises(FileNotFoundError, match="pool_config.json is missing"):
        LoRAPool.load(tmp_path)
