"""The LoRA pool on the crossbar (`AnalogPoolLayer`): equal to two AnalogLinear layers with
explicit digital mixing, to the digital `pool_fusion` with ideal hardware, programmed and drifted
like any analog layer, and differentiable through the straight-through backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.evaluation.cost import crossbar_cost_of, programmed_cells
from lorafusion_ext.hardware import BoundManagement, HardwareConfig, Mapping_, Tiles
from lorafusion_ext.nn import AnalogLinear, AnalogPoolLayer, LoRAFusionLinear, LoRAPool
from lorafusion_ext.nn.analog_pool import pool_seeds
from lorafusion_ext.nn.mapping import clip_and_remap
from lorafusion_ext.ops.pool import pool_fusion

D_IN, D_OUT, K, R = 24, 20, 3, 4


def _model(hw: HardwareConfig | None, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("l0", nn.Linear(D_IN, D_OUT, dtype=dtype))
    model.add_module("act", nn.Tanh())
    model.add_module("l1", nn.Linear(D_OUT, D_OUT, dtype=dtype))
    if hw is not None:
        lf.convert_to_analog(model, hw, seed=seed)
    return model


def _square_pool(seed: int = 0, dtype: torch.dtype = torch.float32) -> LoRAPool:
    g = torch.Generator().manual_seed(seed)
    return LoRAPool({
        "l0": (torch.randn(K, R, D_IN, generator=g, dtype=dtype) * 0.3, torch.randn(K, D_OUT, R, generator=g, dtype=dtype) * 0.2),
        "l1": (torch.randn(K, R, D_OUT, generator=g, dtype=dtype) * 0.3, torch.randn(K, D_OUT, R, generator=g, dtype=dtype) * 0.2),
    }, alpha=8.0)


def _reference_delta(layer: LoRAFusionLinear, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Δy from two fresh AnalogLinear layers built from the same A_cat / B_cat and seeds, with the
    mixing written out adapter by adapter."""
    pool: AnalogPoolLayer = layer.pool  # type: ignore[assignment]
    shrink = AnalogLinear(pool.in_features, K * R, bias=False, hardware=pool.hardware, seed=int(pool.shrink.rng_state[0]))
    expand = AnalogLinear(K * R, pool.out_features, bias=False, hardware=pool.hardware, seed=int(pool.expand.rng_state[0]))
    with torch.no_grad():
        shrink.weight.copy_(pool.shrink.weight)
        expand.weight.copy_(pool.expand.weight)
        shrink.rng_state.copy_(pool.shrink.rng_state)
        expand.rng_state.copy_(pool.expand.rng_state)
    shrink.train(layer.training)
    expand.train(layer.training)
    u = shrink(x)
    blocks = [u[..., k * R:(k + 1) * R] for k in range(K)]
    if layer.mode == "sum":
        v = torch.cat([c[..., k:k + 1] * blocks[k] for k in range(K)], -1)
    else:
        mixed = sum(c[..., k:k + 1] * blocks[k] for k in range(K))
        v = torch.cat([c[..., j:j + 1] * mixed for j in range(K)], -1)
    return expand(v) * layer.scale


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("preset", ["pcm_paper", "pcm_tiled"])
def test_analog_pool_equals_two_analog_layers_with_explicit_mixing(mode, training, preset):
    hw = HardwareConfig.preset(preset)
    if preset == "pcm_tiled":
        hw = hw.replace(tiles=Tiles(16, 8))  # several input and output tiles on these small shapes
    model = lf.attach_pool(_model(hw), _square_pool(), mode=mode, magnitude=False)
    layer = model.l0
    assert isinstance(layer, LoRAFusionLinear) and layer.pool_on_crossbar
    with torch.no_grad():
        layer.coeffs.copy_(torch.tensor([0.7, -0.4, 1.3]))
    model.train(training)
    x = torch.randn(5, 7, D_IN, generator=torch.Generator().manual_seed(3))
    expected = _reference_delta(layer, x, layer.coeffs.detach())
    got = layer.pool(x, layer.coeffs.detach(), layer.scale, mode)
    assert torch.equal(got, expected)
    # The layer's output is the analog base plus that Δy (each crossbar with its own counter).
    states = [m.rng_state.clone() for m in (layer.base, layer.pool.shrink, layer.pool.expand)]
    y = layer(x)
    for m, st in zip((layer.base, layer.pool.shrink, layer.pool.expand), states):
        m.rng_state.copy_(st)
    assert torch.equal(y, layer.base(x) + layer.pool(x, layer.coeffs.detach(), layer.scale, mode))
    assert y.shape == (5, 7, D_OUT)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
@pytest.mark.parametrize("magnitude", [False, True])
def test_ideal_hardware_equals_the_digital_pool_fusion(mode, magnitude):
    hw = HardwareConfig.preset("ideal")
    pool = _square_pool(dtype=torch.float64)
    analog = lf.attach_pool(_model(hw, torch.float64), pool, mode=mode, magnitude=magnitude)
    digital = lf.attach_pool(_model(hw, torch.float64), pool, mode=mode, magnitude=magnitude, pool_on_crossbar=False)
    assert analog.l0.pool_on_crossbar and not digital.l0.pool_on_crossbar
    g = torch.Generator().manual_seed(1)
    for a, d in ((analog.l0, digital.l0), (analog.l1, digital.l1)):
        c = torch.randn(K, generator=g, dtype=torch.float64)
        with torch.no_grad():
            a.coeffs.copy_(c)
            d.coeffs.copy_(c)
    x = torch.randn(4, 6, D_IN, generator=g, dtype=torch.float64)
    torch.testing.assert_close(analog(x), digital(x), rtol=1e-12, atol=1e-12)
    layer = analog.l0
    delta = layer.pool(x, layer.coeffs.detach(), layer.scale, mode)
    ref = pool_fusion(x, pool.layer("l0").A, pool.layer("l0").B, layer.coeffs.detach(), scale=layer.scale, mode=mode)
    torch.testing.assert_close(delta, ref, rtol=1e-12, atol=1e-12)


def test_default_placement_follows_the_base_and_true_needs_an_analog_base():
    hw = HardwareConfig.preset("pcm_paper")
    model = _model(None)
    model.l0 = AnalogLinear.from_linear(model.l0, hw, seed=5)  # l1 stays digital
    lf.attach_pool(model, _square_pool())
    assert model.l0.pool_on_crossbar and not model.l1.pool_on_crossbar
    assert model.l0.pool.hardware == hw
    assert tuple(int(s) for s in (model.l0.pool.shrink.rng_state[0], model.l0.pool.expand.rng_state[0])) == pool_seeds(5)
    with pytest.raises(ValueError, match="pool_on_crossbar=True but 'l1' is a Linear"):
        m2 = _model(None)
        m2.l0 = AnalogLinear.from_linear(m2.l0, hw, seed=5)
        lf.attach_pool(m2, _square_pool(), pool_on_crossbar=True)
    with pytest.raises(ValueError, match="pool_on_crossbar = 'yes'"):
        lf.attach_pool(_model(hw), _square_pool(), pool_on_crossbar="yes")  # type: ignore[arg-type]


def test_attach_pool_leaves_the_global_rng_alone_and_is_reproducible():
    hw = HardwareConfig.preset("pcm_paper")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    m1 = lf.attach_pool(_model(hw, seed=4), _square_pool())
    torch.manual_seed(123)
    m2 = lf.attach_pool(_model(hw, seed=4), _square_pool())
    torch.manual_seed(123)
    assert torch.equal(torch.get_rng_state(), before)
    x = torch.randn(3, D_IN)
    m1.train()
    m2.train()
    assert torch.equal(m1(x), m2(x))


def test_pool_tiles_hold_the_clip_conditioned_pool_and_are_frozen():
    hw = HardwareConfig.preset("pcm_paper")
    pool = _square_pool()
    model = lf.attach_pool(_model(hw), pool)
    ap = model.l0.pool
    assert ap.A.shape == (K, R, D_IN) and ap.B.shape == (K, D_OUT, R)
    assert torch.equal(ap.shrink.weight, clip_and_remap(pool.layer("l0").A.reshape(K * R, D_IN), ap.shrink.layout, hw))
    assert not any(p.requires_grad for p in ap.parameters())
    counts = lf.trainable_parameters(model)
    assert counts["lora"] == 0 and counts["other"] == 0 and counts["coefficients"] == 2 * K


def test_program_and_drift_reach_the_pool_tiles_and_state_dict_round_trips():
    hw = HardwareConfig.preset("pcm_paper")
    model = lf.attach_pool(_model(hw), _square_pool())
    names = [n for n, _ in lf.analog_layers(model)]
    assert "l0.pool.shrink" in names and "l0.pool.expand" in names and "l1.pool.expand" in names
    model.eval()
    x = torch.randn(6, D_IN, generator=torch.Generator().manual_seed(2))
    lf.program(model, torch.Generator().manual_seed(0))
    shrink = model.l0.pool.shrink
    assert shrink.programmed_weight is not None and not torch.equal(shrink.programmed_weight, shrink.tile_weights()[0])
    programmed = shrink.programmed_weight.clone()
    lf.drift(model, 3600.0, torch.Generator().manual_seed(1))
    assert not torch.equal(shrink.programmed_weight, programmed)
    assert shrink.drift_alpha is not None

    fresh = lf.attach_pool(_model(hw, seed=9), _square_pool(seed=9))
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    for (_, a), (_, b) in zip(lf.analog_layers(model), lf.analog_layers(fresh)):
        assert torch.equal(a.programmed_weight, b.programmed_weight)
        assert torch.equal(a.rng_state, b.rng_state)
    assert torch.equal(model(x), fresh(x))
    lf.unprogram(model)
    assert model.l0.pool.expand.programmed_weight is None


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
def test_gradcheck_float64_noise_off(mode):
    # No noise and no quantisation, so finite differences see what the straight-through backward
    # reports. The DoRA row norm is detached by design, so the pool and coefficients are checked
    # without a magnitude, and x and the magnitude with one.
    hw = HardwareConfig.preset("ideal").replace(mapping=Mapping_("row", 1.0))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, D_IN, dtype=torch.float64, generator=g, requires_grad=True)
    for magnitude in (False, True):
        model = lf.attach_pool(_model(hw, torch.float64), _square_pool(dtype=torch.float64), mode=mode, magnitude=magnitude)
        layer = model.l0
        assert layer.pool_on_crossbar
        c = (torch.randn(K, dtype=torch.float64, generator=g)).requires_grad_(True)
        a = layer.pool.shrink.weight.detach().clone().requires_grad_(not magnitude)
        b = layer.pool.expand.weight.detach().clone().requires_grad_(not magnitude)
        params = {"coeffs": c, "pool.shrink.weight": a, "pool.expand.weight": b}
        if magnitude:
            c.requires_grad_(False)
            params["magnitude"] = (layer.magnitude.detach() * 1.1).requires_grad_(True)
        names = list(params)

        def functional(x, *tensors):
            return torch.func.functional_call(layer, dict(zip(names, tensors)), (x,))

        assert torch.autograd.gradcheck(functional, (x, *params.values()), eps=1e-6, atol=1e-6)


def test_gradients_reach_coefficients_magnitudes_and_an_unfrozen_pool_through_the_crossbar():
    hw = HardwareConfig.preset("pcm_paper")
    model = lf.attach_pool(_model(hw), _square_pool(), mode="sum", magnitude=True)
    model.train()
    x = torch.randn(8, D_IN)
    model(x).square().sum().backward()
    layer = model.l0
    assert layer.coeffs.grad is not None and bool(layer.coeffs.grad.abs().sum() > 0)
    assert layer.magnitude.grad is not None and bool(layer.magnitude.grad.abs().sum() > 0)
    assert layer.pool.shrink.weight.grad is None
    layer.pool.requires_grad_(True)
    model.zero_grad()
    model(x).square().sum().backward()
    assert bool(layer.pool.shrink.weight.grad.abs().sum() > 0) and bool(layer.pool.expand.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
def test_mixed_task_batches_equal_per_task_runs(mode):
    # No noise, per-row bound management: every sample is computed independently of the others.
    hw = HardwareConfig.preset("pcm_paper").replace(out_noise=0.0, bound_management=BoundManagement("iterative_per_row"))
    model = lf.attach_pool(_model(hw), _square_pool(), mode=mode, magnitude=True, num_tasks=3)
    g = torch.Generator().manual_seed(0)
    for layer in (model.l0, model.l1):
        with torch.no_grad():
            layer.coeffs.copy_(torch.randn(3, K, generator=g))
            layer.magnitude.mul_(1 + 0.1 * torch.randn(layer.magnitude.shape, generator=g))
    model.eval()
    x = torch.randn(4, 5, D_IN, generator=g)
    ids = torch.tensor([2, 0, 1, 2])
    with lf.task_context(model, ids):
        y = model(x)
    for i, t in enumerate(ids.tolist()):
        with lf.task_context(model, torch.tensor([t])):
            torch.testing.assert_close(y[i:i + 1], model(x[i:i + 1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"task_ids range over \[0, 3\]; expected values in \[0, 3\)"):
        with lf.task_context(model, torch.tensor([0, 3, 1, 1])):
            model(x)
    with pytest.raises(ValueError, match="task_ids has dtype torch.int32"):
        with lf.task_context(model, ids.int()):
            model(x)
    with pytest.raises(ValueError, match=r"task_ids has shape \(3,\); expected a prefix"):
        with lf.task_context(model, ids[:3]):
            model(x)


def test_cost_cells_equal_the_programmed_cells():
    hw = HardwareConfig.preset("pcm_tiled").replace(tiles=Tiles(16, 8))
    model = lf.attach_pool(_model(hw), _square_pool())
    report = crossbar_cost_of(model)
    lf.program(model, torch.Generator().manual_seed(0))
    fusion = next(m for m in report.methods if m.method.startswith("LoRAFusion"))
    assert fusion.cells_once == programmed_cells(model)
    assert fusion.cells_per_task == 0
    base = next(m for m in report.methods if m.method.startswith("base"))
    assert base.cells_once == 2 * (D_IN * D_OUT + D_OUT * D_OUT)
    # tiles come from the simulated layouts: l0 [20, 24] on 16x8 tiles is 2 x 3, l1 [20, 20] 2 x 3,
    # each pool: shrink [12, d_in] 2 x 2, expand [20, 12] 1 x 3
    assert base.tiles == 6 + 6 and fusion.tiles == 12 + 2 * (4 + 3)
