"""Learned input ranges (HardwareConfig.input_range) against AIHWKIT 1.1's torch tile
(`pre_post.input_range`: `InputRangeForward`, `TorchInferenceTile.pre_forward`,
`TileWithPeriphery.apply_input_range` / `post_forward`).

With the noise off, outputs, input gradients and the ranges themselves are bit-exact at every
step of a plain-SGD run (data initialisation included), on one tile and on tiled layers, with
and without bound management. With output noise on they agree statistically.
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import (
    BoundManagement,
    InputRange,
    Mapping_,
    Modifier,
    NoiseManagement,
    Tiles,
)

pytest.importorskip("aihwkit")
from aihwkit_harness import aihwkit_clamp, aihwkit_layer, freeze_analog_weights, tile_grid  # noqa: E402

DET = lf.HardwareConfig.preset("pcm_paper").replace(
    out_noise=0.0, modifier=Modifier("none"), mapping=Mapping_("row", 1.0),
    noise_management=NoiseManagement("none"), bound_management=BoundManagement("none"),
)


def _hw(tiles: Tiles = Tiles(None, None), ir: InputRange | None = None, **changes) -> lf.HardwareConfig:
    return DET.replace(tiles=tiles, input_range=ir or InputRange(init_from_data=2), **changes)


def _pair(in_f: int, out_f: int, hw: lf.HardwareConfig, seed: int = 0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0)
    ref = aihwkit_layer(lin, hw.to_aihwkit())
    return ours, ref


def _ref_ranges(ref: nn.Module) -> torch.Tensor:
    """AIHWKIT's per-tile ranges as [n_in_tiles, n_out_tiles]."""
    return torch.stack([torch.cat([t.input_range.detach().reshape(1) for t in row]) for row in tile_grid(ref)])


def _set_ranges(ours: lf.nn.AnalogLinear, ref: nn.Module, ranges: torch.Tensor) -> None:
    with torch.no_grad():
        ours.input_range.copy_(ranges)
        for i, row in enumerate(tile_grid(ref)):
            for o, tile in enumerate(row):
                tile.input_range.data = ranges[i, o].reshape(1).clone()


def _ref_params(ref: nn.Module) -> list[nn.Parameter]:
    # Digital parameters only (AIHWKIT's AnalogContext stands for the frozen tile weights); the
    # data-initialisation counters are Parameters too (that never get a gradient).
    return [p for name, p in ref.named_parameters() if p.requires_grad and type(p).__name__ != "AnalogContext"
            and not name.endswith("input_range_update_idx")]


CASES = [
    (Tiles(None, None), 150, 90),
    (Tiles(64, None), 150, 90),
    (Tiles(64, 40), 150, 90),
    (Tiles(None, 40), 150, 90),
]
IDS = ["one_tile", "3_in_tiles", "3x3_tiles", "3_out_tiles"]
MANAGEMENT = [
    (NoiseManagement("none"), BoundManagement("none")),
    (NoiseManagement("none"), BoundManagement("iterative_global")),
]
MANAGEMENT_IDS = ["no_management", "bound_management"]


# ------------------------------------------------------------------------------------------------ config


def test_defaults_are_aihwkits():
    from aihwkit.simulator.parameters.pre_post import InputRangeParameter

    ref = InputRangeParameter()
    ours = InputRange()
    for name in ("learn_input_range", "init_value", "init_from_data", "init_std_alpha", "decay",
                 "input_min_percentage", "manage_output_clipping", "output_min_percentage", "gradient_scale",
                 "gradient_relative"):
        assert getattr(ours, name) == getattr(ref, name), name
    assert lf.HardwareConfig().input_range is None


@pytest.mark.parametrize("field,value", [
    ("init_value", 0.0), ("init_value", float("nan")), ("init_from_data", -1), ("init_from_data", 1.5),
    ("init_std_alpha", 0.0), ("decay", -0.1), ("input_min_percentage", 1.5), ("output_min_percentage", -0.1),
    ("gradient_scale", float("inf")), ("learn_input_range", 1), ("gradient_relative", "yes"),
    ("manage_output_clipping", None),
])
def test_bad_fields_raise_naming_them(field, value):
    with pytest.raises(ValueError, match=f"input_range.{field}"):
        InputRange(**{field: value})


def test_manage_output_clipping_needs_no_management():
    with pytest.raises(ValueError, match="manage_output_clipping"):
        lf.HardwareConfig.preset("pcm_paper").replace(input_range=InputRange(manage_output_clipping=True))
    _hw(ir=InputRange(manage_output_clipping=True))  # no management: accepted


def test_config_round_trips_through_dict_and_aihwkit():
    ir = InputRange(learn_input_range=False, init_value=2.5, init_from_data=7, init_std_alpha=2.0, decay=0.01,
                    input_min_percentage=0.9, manage_output_clipping=True, output_min_percentage=0.8,
                    gradient_scale=0.5, gradient_relative=False)
    hw = _hw(Tiles(64, 32), ir)
    assert lf.HardwareConfig.from_dict(json.loads(json.dumps(hw.to_dict()))) == hw
    rpu = hw.to_aihwkit()
    p = rpu.pre_post.input_range
    assert p.enable and p.init_value == 2.5 and p.init_from_data == 7 and not p.learn_input_range
    assert lf.HardwareConfig.from_aihwkit(rpu) == hw
    # Off: no input_range in AIHWKIT either, and configs saved before the field load as off.
    assert not DET.to_aihwkit().pre_post.input_range.enable
    d = DET.to_dict()
    d.pop("input_range")
    assert lf.HardwareConfig.from_dict(d).input_range is None


def test_aihwkit_fields_of_a_disabled_range_change_nothing():
    rpu = DET.to_aihwkit()
    rpu.pre_post.input_range.init_value = 5.0
    assert lf.HardwareConfig.from_aihwkit(rpu).input_range is None


def test_aihwkit_calibration_info_is_refused():
    rpu = _hw().to_aihwkit()
    rpu.pre_post.input_range.calibration_info = "quantile"
    with pytest.raises(ValueError, match="calibration_info"):
        lf.HardwareConfig.from_aihwkit(rpu)


# ------------------------------------------------------------------------------------------------ layer


def test_ranges_are_per_tile_parameters_or_buffers():
    layer = lf.nn.AnalogLinear(150, 90, hardware=_hw(Tiles(64, 40)), seed=0)
    assert isinstance(layer.input_range, nn.Parameter) and layer.input_range.shape == (3, 3)
    assert torch.equal(layer.input_range, torch.full((3, 3), 3.0))
    assert "input_range" in dict(layer.named_parameters())
    fixed = lf.nn.AnalogLinear(150, 90, hardware=_hw(Tiles(64, 40), InputRange(learn_input_range=False)), seed=0)
    assert not isinstance(fixed.input_range, nn.Parameter) and "input_range" in dict(fixed.named_buffers())
    off = lf.nn.AnalogLinear(150, 90, hardware=DET, seed=0)
    assert off.input_range is None and "input_range" not in off.state_dict()


@pytest.mark.parametrize("nm,bm", MANAGEMENT + [(NoiseManagement("abs_max"), BoundManagement("iterative_global"))],
                         ids=MANAGEMENT_IDS + ["abs_max_and_bm"])
@pytest.mark.parametrize("tiles,in_f,out_f", CASES, ids=IDS)
def test_eval_forward_is_aihwkit(tiles, in_f, out_f, nm, bm):
    hw = _hw(tiles, noise_management=nm, bound_management=bm)
    ours, ref = _pair(in_f, out_f, hw)
    ranges = 0.5 + 2 * torch.rand(ours.input_range.shape, generator=torch.Generator().manual_seed(1))
    _set_ranges(ours, ref, ranges)
    ours.eval(), ref.eval()
    x = torch.randn(4, 7, in_f, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(a, b), f"max |diff| = {(a - b).abs().max().item()}"
    a2 = ours(x)  # with gradients: the per-tile path, the same values
    assert a2.requires_grad and torch.equal(a2.detach(), b)
    assert torch.equal(ours.input_range.detach(), ranges)  # eval does not initialise from data


def _sgd_run(hw: lf.HardwareConfig, in_f: int, out_f: int, steps: int, x_scale: float = 2.0, lr: float = 0.05,
             check_x_grad: bool = True) -> None:
    ours, ref = _pair(in_f, out_f, hw, seed=4)
    ours.weight.requires_grad_(False)
    freeze_analog_weights(ref)
    ours.train(), ref.train()
    params = [p for p in ours.parameters() if p.requires_grad]
    ref_params = _ref_params(ref)
    learned = hw.input_range.learn_input_range
    assert len(params) == learned + (ours.bias is not None) + (ours.out_scaling is not None)
    assert len(ref_params) == len(params) + (learned + (ours.out_scaling is not None)) * (
        ours.layout.n_in * ours.layout.n_out - 1)
    opt_o = torch.optim.SGD(params, lr=lr)
    opt_r = torch.optim.SGD(ref_params, lr=lr)
    g = torch.Generator().manual_seed(5)
    for step in range(steps):
        x = torch.randn(3, 5, in_f, generator=g) * x_scale
        target = torch.randn(3, 5, out_f, generator=g)
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        opt_o.zero_grad(), opt_r.zero_grad()
        yo, yr = ours(xo), _ref_train_forward(ref, xr)
        assert torch.equal(yo, yr), f"step {step}: max |diff| = {(yo - yr).abs().max().item()}"
        ((yo - target) ** 2).mean().backward()
        ((yr - target) ** 2).mean().backward()
        if check_x_grad:
            assert torch.equal(xo.grad, xr.grad), f"step {step}: x grad max |diff| {(xo.grad - xr.grad).abs().max()}"
        if learned:
            ref_r = _ref_ranges_grad(ref)
            assert torch.equal(ours.input_range.grad, ref_r), (
                f"step {step}: range grad {ours.input_range.grad} vs {ref_r}")
        opt_o.step(), opt_r.step()
        assert torch.equal(ours.input_range.detach(), _ref_ranges(ref)), f"step {step}"
    # The data initialisation ran (counters as AIHWKIT's) and the ranges moved.
    idx = torch.stack([torch.cat([t.input_range_update_idx.detach().reshape(1) for t in row]) for row in tile_grid(ref)])
    assert torch.equal(ours.input_range_update_idx, idx)
    ours.eval(), ref.eval()
    x = torch.randn(5, in_f, generator=g) * x_scale
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("nm,bm", MANAGEMENT, ids=MANAGEMENT_IDS)
@pytest.mark.parametrize("tiles,in_f,out_f", CASES, ids=IDS)
def test_sgd_steps_are_aihwkit(tiles, in_f, out_f, nm, bm):
    _sgd_run(_hw(tiles, noise_management=nm, bound_management=bm), in_f, out_f, steps=5)


@pytest.mark.parametrize("ir", [
    InputRange(init_from_data=0, init_value=1.0, decay=0.0),
    InputRange(init_from_data=1, gradient_relative=False, decay=0.05, input_min_percentage=0.5),
    InputRange(init_from_data=3, init_std_alpha=1.0, gradient_scale=3.0, decay=0.01),
    InputRange(init_from_data=2, learn_input_range=False),
], ids=["no_init", "absolute_gradient", "scaled_gradient", "not_learned"])
def test_every_gradient_field_is_aihwkit(ir):
    _sgd_run(_hw(Tiles(64, None), ir), 150, 40, steps=4, x_scale=3.0, lr=0.2)


def test_learned_out_scaling_and_layer_mapping_with_ranges_are_aihwkit():
    hw = _hw(Tiles(64, 40)).replace(mapping=Mapping_("layer", 1.0, learn_out_scaling=True))
    _sgd_run(hw, 150, 90, steps=3)
    hw = _hw(Tiles(64, None)).replace(mapping=Mapping_("none"))
    _sgd_run(hw, 150, 90, steps=3)


@pytest.fixture
def nm_scale_detached(monkeypatch):
    """AIHWKIT's torch tile with its noise-management scale detached: the straight-through
    convention of this package (docs/aihwkit.md, gradients), where AIHWKIT differentiates
    through max|x| as well."""
    from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

    original = AnalogMVM._compute_noise_management.__func__

    def detached(cls, *args, **kwargs):
        value = original(cls, *args, **kwargs)
        return value.detach() if isinstance(value, torch.Tensor) else value

    monkeypatch.setattr(AnalogMVM, "_compute_noise_management", classmethod(detached))


@pytest.mark.parametrize("tiles,in_f,out_f", CASES[:3], ids=IDS[:3])
def test_abs_max_noise_management_is_aihwkit_with_the_scale_straight_through(tiles, in_f, out_f, nm_scale_detached):
    # Outputs stay bit-exact; the input gradient (so the ranges' gradients) differ by rounding:
    # AIHWKIT multiplies the gradient by 1/s before the MVM and by s after it, the
    # straight-through backward here lets the two cancel.
    hw = _hw(tiles, noise_management=NoiseManagement("abs_max"), bound_management=BoundManagement("iterative_global"))
    ours, ref = _pair(in_f, out_f, hw, seed=4)
    ours.weight.requires_grad_(False)
    freeze_analog_weights(ref)
    ours.train(), ref.train()
    opt_o = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.05)
    opt_r = torch.optim.SGD(_ref_params(ref), lr=0.05)
    g = torch.Generator().manual_seed(5)
    for step in range(4):
        x = torch.randn(3, 5, in_f, generator=g) * 2
        target = torch.randn(3, 5, out_f, generator=g)
        opt_o.zero_grad(), opt_r.zero_grad()
        yo, yr = ours(x), _ref_train_forward(ref, x)
        if step == 0:
            assert torch.equal(yo, yr)
        torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)
        ((yo - target) ** 2).mean().backward()
        ((yr - target) ** 2).mean().backward()
        torch.testing.assert_close(ours.input_range.grad, _ref_ranges_grad(ref), rtol=1e-4, atol=1e-7)
        opt_o.step(), opt_r.step()
        torch.testing.assert_close(ours.input_range.detach(), _ref_ranges(ref), rtol=1e-6, atol=0)


def _ref_train_forward(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """AIHWKIT's training forward with its converters' `clamp` given gradient 1 on the closed
    range, on any torch. A clipped input lands exactly on the DAC bound, so a learned range's
    gradient is made of exactly the elements where torch 2.14 changed clamp's gradient to 0
    (docs/numerics.md, "The straight-through estimator at exactly the bound"): AIHWKIT 1.1 on
    torch >= 2.14 no longer learns its ranges from the clipped inputs. On torch <= 2.13 this is
    AIHWKIT's plain forward."""
    with aihwkit_clamp(ref, closed_range=True):
        return ref(x)


def _ref_ranges_grad(ref: nn.Module) -> torch.Tensor:
    return torch.stack([torch.cat([t.input_range.grad.reshape(1) for t in row]) for row in tile_grid(ref)])


def test_manage_output_clipping_follows_aihwkits_post_backward():
    # AIHWKIT's torch tile raises NotImplementedError here; the only implementation is its
    # TileWithPeriphery.post_backward: g -= (1 - p) * r * [p < output_min_percentage], with
    # p = 1 - (clipped outputs) / (the tile input gradient's numel), before the decay term.
    base = dict(init_from_data=0, init_value=0.5, decay=0.0)
    hw_off = _hw(ir=InputRange(**base)).replace(adc=lf.hardware.ADC(8, 1.0), mapping=Mapping_("none"))
    hw_on = hw_off.replace(input_range=InputRange(**base, manage_output_clipping=True, output_min_percentage=0.99))
    torch.manual_seed(0)
    lin = nn.Linear(40, 30, bias=False)
    with torch.no_grad():
        lin.weight.mul_(4)
    x = torch.randn(8, 40, generator=torch.Generator().manual_seed(1)) * 3
    grads, outs = [], []
    for hw in (hw_off, hw_on):
        layer = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0).train()
        y = layer(x)
        y.square().sum().backward()
        grads.append(layer.input_range.grad.clone())
        outs.append(y.detach())
        r = layer.input_range.detach()
    assert torch.equal(outs[0], outs[1])
    # y = y_t * r, and r = 0.5 (a power of 2): y / r is the tile's ADC output exactly.
    y_t = outs[0] / r[0, 0]
    clipped = int(((y_t >= 1.0) | (y_t <= -1.0)).count_nonzero())
    assert 0 < clipped < y_t.numel()
    p = 1.0 - clipped / x.numel()
    assert p < 0.99
    expected = grads[0] - (1.0 - p) * r[0, 0] * (p < 0.99)
    assert torch.equal(grads[1], expected.reshape(grads[1].shape))


# ------------------------------------------------------------------------------------------------ noise


def test_noisy_outputs_agree_statistically():
    hw = _hw(Tiles(64, None)).replace(out_noise=0.1, noise_management=NoiseManagement("abs_max"))
    ours, ref = _pair(150, 40, hw)
    ranges = 0.5 + torch.rand(ours.input_range.shape, generator=torch.Generator().manual_seed(1))
    _set_ranges(ours, ref, ranges)
    ours.eval(), ref.eval()
    x = torch.randn(1, 150, generator=torch.Generator().manual_seed(3)).expand(4000, 150).contiguous()
    torch.manual_seed(7)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    # 4000 draws of the same token: the same mean (within 4 standard errors) and the same spread.
    se = float(b.std(0).max()) / 4000**0.5
    assert float((a.mean(0) - b.mean(0)).abs().max()) < 4 * se * 2**0.5
    ratio = a.std(0) / b.std(0)
    assert float((ratio - 1).abs().max()) < 0.1, ratio


# ------------------------------------------------------------------------------------------------ state


def test_state_dict_program_drift_keep_the_ranges():
    hw = _hw(Tiles(64, 40))
    layer = lf.nn.AnalogLinear(150, 90, hardware=hw, seed=0).train()
    layer(torch.randn(6, 150))
    assert int(layer.input_range_update_idx[0, 0]) == 1
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    other = lf.nn.AnalogLinear(150, 90, hardware=hw, seed=1)
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert torch.equal(other.input_range, layer.input_range)
    assert torch.equal(other.input_range_update_idx, layer.input_range_update_idx)
    ranges = layer.input_range.detach().clone()
    layer.eval().program(generator=torch.Generator().manual_seed(0))
    layer.drift(3600.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer.input_range.detach(), ranges)
    with pytest.raises(ValueError, match="input_range"):
        lf.nn.AnalogLinear(150, 90, hardware=DET.replace(tiles=Tiles(64, 40)), seed=0).load_state_dict(
            layer.state_dict(), strict=False)


def test_model_conversion_round_trips_ranges():
    hw = _hw(Tiles(64, 40))
    ours, ref = _pair(150, 90, hw)
    ranges = 0.5 + 2 * torch.rand(ours.input_range.shape, generator=torch.Generator().manual_seed(1))
    _set_ranges(ours, ref, ranges)
    with torch.no_grad():
        ref.analog_module.array[1][2].input_range_update_idx.data.fill_(3.0)
    model = lf.from_aihwkit_model(nn.Sequential(ref).eval(), seed=0)
    back = model[0]
    assert torch.equal(back.input_range.detach(), ranges)
    assert back.input_range_update_idx[1, 2] == 3 and back.input_range_update_idx[0, 0] == 0
    x = torch.randn(5, 150, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(back(x), ours.eval()(x))
    again = lf.to_aihwkit_model(nn.Sequential(back))[0]
    assert torch.equal(_ref_ranges(again), ranges)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), back(x))


@pytest.mark.parametrize("tiles", [Tiles(None, None), Tiles(3, 2)], ids=["one_tile", "tiled"])
def test_input_gradient_is_one_on_the_closed_range(tiles):
    # An input exactly at +-r passes its gradient (the closed-range rule, docs/numerics.md), one
    # beyond it none, on every torch: torch 2.14's clamp would give 0 at the bound itself.
    layer = lf.nn.AnalogLinear(5, 4, hardware=_hw(tiles, InputRange(init_from_data=0, init_value=1.0)), seed=0).train()
    on = torch.tensor([[1.0, 2.0, -1.0, -2.0, 0.5]], requires_grad=True)
    inside = torch.tensor([[0.999, 2.0, -0.999, -2.0, 0.5]], requires_grad=True)
    g = torch.Generator().manual_seed(3)
    d = torch.randn(1, 4, generator=g)
    layer(on).backward(d)
    layer(inside).backward(d)
    assert on.grad[0, 1] == 0 and on.grad[0, 3] == 0
    assert torch.equal(on.grad, inside.grad) and bool((on.grad[0, [0, 2, 4]] != 0).all())


@pytest.mark.parametrize("mode", ["fast_mode", "no_scaling_gradient"])
def test_lightning_variants_on_tiled_layers_follow_their_formulas(mode):
    # AIHWKIT-Lightning's variants on 3 x 3 tiles (its own tests tile inputs only), against the
    # formulas of docs/numerics.md written out per tile: the input gradient g / r on the closed
    # range; fast_mode's r gradient from the clamp's tensor bound (sum of g over x > r minus over
    # x < -r; with r < 0 every output is the bound r, whose gradient is all of g), and without
    # scaling_gradient InputRangeForward's term alone (here with decay). One range is negative.
    from lorafusion_ext.nn import input_range as ir_ops
    from lorafusion_ext.nn.mapping import TileLayout

    ir = (InputRange(init_from_data=0, fast_mode=True, scaling_gradient=False) if mode == "fast_mode"
          else InputRange(init_from_data=0, scaling_gradient=False, decay=0.01, input_min_percentage=0.5))
    layout = TileLayout.of(150, 90, _hw(Tiles(64, 40), ir))
    assert (layout.n_in, layout.n_out) == (3, 3)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(20, 150, generator=g) * 2).requires_grad_()
    ranges = 0.5 + 2 * torch.rand(3, 3, generator=g)
    ranges[1, 2] = -ranges[1, 2]
    ranges.requires_grad_()
    ds = [torch.randn(20, 150, generator=g) for _ in range(3)]
    outs = ir_ops.scaled_inputs(x, ir_ops.tile_ranges(ranges, layout), layout, ir)
    torch.autograd.backward(outs, ds)
    x_grad = torch.zeros(20, 150)
    r_grad = torch.zeros(3, 3)
    for o in range(3):
        k0 = 0
        for i, kt in enumerate(layout.in_sizes):
            r = ranges[i, o].item()
            x_i, d = x.detach()[:, k0 : k0 + kt], ds[o][:, k0 : k0 + kt] / r
            x_c = x_i.clamp(-r, r) if ir.fast_mode else x_i.clamp(-abs(r), abs(r))
            assert torch.equal(outs[o][:, k0 : k0 + kt].detach(), x_c / ranges[i, o].detach())
            inside = (x_i >= -r) & (x_i <= r) if ir.fast_mode else x_i.abs() <= abs(r)
            x_grad[:, k0 : k0 + kt] += torch.where(inside, d, 0.0)
            if ir.fast_mode:
                r_grad[i, o] = d.sum() if r < 0 else d[x_i > r].sum() - d[x_i < -r].sum()
            else:
                term = d[x_c >= r].clamp(max=0).sum() - d[x_c <= -r].clamp(min=0).sum()
                term = term * r * ir.gradient_scale  # gradient_relative (the default)
                if (x_c.abs() < r).float().mean() > ir.input_min_percentage:
                    term = term + ir.decay * r
                r_grad[i, o] = term
            k0 += kt
    assert torch.allclose(x.grad, x_grad, rtol=1e-6, atol=1e-7)
    assert torch.allclose(ranges.grad, r_grad, rtol=1e-5, atol=1e-6)
    assert bool((r_grad != 0).all())


def test_a_trainable_bias_gets_its_gradient_with_frozen_ranges_and_weights():
    # Only the bias trains (ranges a buffer, weights frozen, x without gradient): the layer must
    # not take its no-gradient fused call, which would drop the bias's gradient.
    layer = lf.nn.AnalogLinear(150, 90, hardware=_hw(Tiles(64, 40), InputRange(learn_input_range=False)), seed=0)
    layer.weight.requires_grad_(False)
    assert not isinstance(layer.input_range, nn.Parameter) and layer.bias.requires_grad
    x = torch.randn(7, 150, generator=torch.Generator().manual_seed(1))
    y = layer.train()(x)
    assert y.requires_grad
    y.sum().backward()
    assert torch.equal(layer.bias.grad, torch.full((90,), 7.0))


# ------------------------------------------------------------------------------------------------ the fused op


@pytest.mark.parametrize("nm", [NoiseManagement("none"), NoiseManagement("abs_max"), NoiseManagement("max"),
                                NoiseManagement("constant", 2.0), NoiseManagement("abs_max", 0.5)],
                         ids=["none", "abs_max", "max", "constant", "abs_max_thres"])
def test_fused_dac_loop_equals_the_pytorch_graph(nm):
    # Without gradient the CPU kernel clamps and divides in its DAC loop, one call for the layer;
    # with gradients the same values come from PyTorch's clamp and division around the op.
    hw = _hw(Tiles(64, 40), noise_management=nm, bound_management=BoundManagement("iterative_global")).replace(
        mapping=Mapping_("row", 1.0, learn_out_scaling=True))
    torch.manual_seed(0)
    layer = lf.nn.AnalogLinear(150, 90, hardware=hw, seed=0).eval()
    ranges = 0.5 + 2 * torch.rand(layer.input_range.shape, generator=torch.Generator().manual_seed(1))
    ranges[1, 2] = -ranges[1, 2]  # AIHWKIT clamps at |r| and divides by r: the sign cancels
    with torch.no_grad():
        layer.input_range.copy_(ranges)
        layer.out_scaling.uniform_(0.5, 1.5)
    x = torch.randn(33, 150, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        fused = layer(x)
    graph = layer(x)
    assert graph.requires_grad
    assert torch.equal(fused, graph.detach())


def test_fused_input_range_argument_is_checked():
    from lorafusion_ext.ops.crossbar import crossbar_mvm_inference
    from lorafusion_ext.ops.kwargs import op_kwargs

    hw = _hw(Tiles(64, 40))
    x, w = torch.randn(4, 150), torch.rand(90, 150) - 0.5
    scales = torch.ones(1, 3, 90)
    params = op_kwargs(hw)["params"]
    rng = torch.tensor([0, 0])
    crossbar_mvm_inference(x, w, scales, None, rng, params, training=False, input_range=torch.ones(3, 3))
    with pytest.raises(RuntimeError, match=r"input_range has shape \[3, 2\]"):
        crossbar_mvm_inference(x, w, scales, None, rng, params, training=False, input_range=torch.ones(3, 2))
    with pytest.raises(RuntimeError, match="input_range.*dtype"):
        crossbar_mvm_inference(x, w, scales, None, rng, params, training=False,
                               input_range=torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="without gradient"):
        torch.ops.lorafusion.crossbar_mvm(x, w, scales, None, rng, None, None, torch.ones(3, 3), params=params,
                                          training=False, need_aux=True)
