"""AIHWKIT-Lightning 2.1: config mapping (every field, and the refusals), model round trips, and
training side by side with Lightning's PyTorch path (docs/aihwkit.md, the Lightning column)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

pytest.importorskip("aihwkit_lightning", reason="aihwkit-lightning is not installed (`make install` adds it)")
pytest.importorskip("aihwkit", reason="aihwkit is not installed (`make install` adds it)")

from aihwkit_lightning.nn import AnalogConv1d  # noqa: E402
from aihwkit_lightning.nn import AnalogLinear as LLinear  # noqa: E402
from aihwkit_lightning.nn import AnalogSequential as LSequential  # noqa: E402
from aihwkit_lightning.nn.conversion import convert_to_analog as lightning_convert  # noqa: E402
from aihwkit_lightning.optim import AnalogOptimizer  # noqa: E402
from aihwkit_lightning.simulator.configs import (  # noqa: E402
    TorchInferenceRPUConfig,
    WeightClipType,
    WeightModifierType,
    WeightNoiseInjectionType,
    WeightQuantizationType,
)
from scipy import stats  # noqa: E402

import lorafusion_ext as lf  # noqa: E402
from lorafusion_ext import hardware as hw  # noqa: E402
from lorafusion_ext.nn import AnalogLinear  # noqa: E402

from aihwkit_harness import set_field  # noqa: E402

RES8 = 1 / 254


def rpu(*, inp_res=-1.0, out_res=-1.0, out_bound=0.0, out_noise=0.0, per_channel=False, max_in=-1,
        ir=True, dynamic=False, learn=True, init_value=3.0, init_from_data=100, alpha=3.0, decay=0.001,
        min_pct=0.95, clip=WeightClipType.NONE, sigma=-1.0, noise=WeightNoiseInjectionType.NONE, std=0.0):
    """A Lightning TorchInferenceRPUConfig with the given fields."""
    c = TorchInferenceRPUConfig()
    f = c.forward
    f.inp_res, f.out_res, f.out_bound, f.out_noise, f.out_noise_per_channel = inp_res, out_res, out_bound, out_noise, per_channel
    c.mapping.max_input_size = max_in
    p = c.pre_post.input_range
    p.enable, p.dynamic, p.learn_input_range, p.init_value = ir, dynamic, learn, init_value
    p.init_from_data, p.init_std_alpha, p.decay, p.input_min_percentage = init_from_data, alpha, decay, min_pct
    c.clip.type, c.clip.sigma = clip, sigma
    c.modifier.noise_type, c.modifier.std_dev = noise, std
    return c


# ---------------------------------------------------------------------------------- config
def test_default_config_is_ideal_linear() -> None:
    h = hw.HardwareConfig.from_aihwkit(TorchInferenceRPUConfig())
    assert h.dac == hw.DAC(None, None) and h.adc == hw.ADC(None, None)
    assert h.out_noise == 0 and h.input_range is None and h.modifier.kind == "none"
    assert h.noise_management.mode == "none" and h.bound_management.mode == "none"
    assert h.mapping.weight_scaling == "none" and h.tiles == hw.Tiles(None, None)


def test_every_field_maps() -> None:
    c = rpu(inp_res=RES8, out_res=254, out_bound=10.0, out_noise=0.04, max_in=64, learn=False, init_value=2.5,
            init_from_data=7, alpha=2.0, decay=0.01, min_pct=0.9, noise=WeightNoiseInjectionType.ADD_NORMAL, std=0.03)
    c.pre_post.input_range.act_range_momentum = 0.5  # read by fast_mode only: changes nothing here
    c.modifier.enable_during_test = True  # deprecated; Lightning's layers reset it to False
    h = hw.HardwareConfig.from_aihwkit(c)
    assert h.dac == hw.DAC(8, 1.0)  # forward.inp_res: the DAC quantises the range [-r, r]
    assert h.adc == hw.ADC(8, 10.0)  # forward.out_res (states or resolution), out_bound
    assert (h.out_noise, h.out_noise_in_eval, h.out_noise_split) == (0.04, False, True)  # forward.out_noise
    assert h.mapping.weight_scaling == "layer"  # per-tensor out noise, weight noise, out bound
    assert h.modifier == hw.Modifier("add_normal", 0.03)  # modifier.noise_type, std_dev
    assert h.tiles == hw.Tiles(64, None)  # mapping.max_input_size
    assert h.noise_management.mode == "none" and h.bound_management.mode == "none"
    assert h.input_range == hw.InputRange(
        learn_input_range=False, init_value=2.5, init_from_data=7, init_std_alpha=2.0, decay=0.01,
        input_min_percentage=0.9, gradient_relative=True, gradient_scale=1.0, manage_output_clipping=False,
        scaling_gradient=False)
    # per channel: out_noise_per_channel and ADD_NORMAL_PER_CHANNEL are the "row" mapping
    h = hw.HardwareConfig.from_aihwkit(rpu(out_noise=0.1, per_channel=True,
                                           noise=WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL, std=0.02))
    assert h.mapping.weight_scaling == "row" and h.modifier == hw.Modifier("add_normal", 0.02)
    # dynamic: the abs-max of each input row is the op's abs-max noise management
    h = hw.HardwareConfig.from_aihwkit(rpu(inp_res=RES8, dynamic=True))
    assert h.input_range is None and h.noise_management.mode == "abs_max" and h.dac == hw.DAC(8, 1.0)
    # clip LAYER_GAUSSIAN: sigma * std of the layer after each optimizer step, tiled or not
    h = hw.HardwareConfig.from_aihwkit(rpu(clip=WeightClipType.LAYER_GAUSSIAN, sigma=2.5, max_in=16))
    assert h.mapping == hw.Mapping_("layer", 1.0, clip_sigma=2.5, remap=True, clip_when="update", clip_scope="layer")
    # LAYER_GAUSSIAN_PER_CHANNEL: of each row; the ADC bound is then per channel ("row")
    h = hw.HardwareConfig.from_aihwkit(rpu(clip=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL, sigma=2.0, out_bound=9.0,
                                           out_noise=0.1, per_channel=True))
    assert h.mapping == hw.Mapping_("row", 1.0, clip_sigma=2.0, remap=True, clip_when="update", clip_scope="channel")
    # the deprecated modifier.type, as Lightning's deprecation_adjustment reads it
    # fast_mode, act_range_momentum: running min/max ranges, the clamp's gradient
    c = rpu(init_from_data=4)
    c.pre_post.input_range.fast_mode, c.pre_post.input_range.act_range_momentum = True, -1.0
    ir = hw.HardwareConfig.from_aihwkit(c).input_range
    assert ir.fast_mode and ir.act_range_momentum == -1.0 and ir.init_from_data == 4 and not ir.scaling_gradient
    c = rpu(std=0.05)
    c.modifier.type = WeightModifierType.ADD_NORMAL_PER_CHANNEL
    assert hw.HardwareConfig.from_aihwkit(c).modifier == hw.Modifier("add_normal", 0.05)
    c.modifier.type, c.modifier.res = WeightModifierType.DISCRETIZE_ADD_NORMAL, 1 / 30
    h = hw.HardwareConfig.from_aihwkit(c)
    assert (h.modifier, h.weight_res, h.mapping.weight_scaling) == (hw.Modifier("add_normal", 0.05), 1 / 30, "layer")
    # quantization_type, res: the weights rounded in training and eval, per tensor or per channel
    c = rpu()
    c.modifier.quantization_type, c.modifier.res = WeightQuantizationType.DISCRETIZE_PER_CHANNEL, 2**6 - 2
    h = hw.HardwareConfig.from_aihwkit(c)
    assert (h.weight_res, h.mapping.weight_scaling, h.modifier.kind) == (62, "row", "none")


REFUSALS = [
    (set_field("modifier.quantization_type", WeightQuantizationType.DISCRETIZE), "modifier.res"),
    (lambda c: set_field("modifier.res", RES8)(set_field("modifier.quantization_type", WeightQuantizationType.DISCRETIZE)(
        set_field("forward.out_noise_per_channel", True)(set_field("forward.out_noise", 0.1)(c)))), "modifier.quantization_type"),
    (set_field("clip.type", WeightClipType.LEARNABLE_PER_CHANNEL), "clip.type"),
    (set_field("clip.type", WeightClipType.LAYER_GAUSSIAN), "clip.sigma"),
    (lambda c: set_field("forward.out_bound", 10.0)(set_field("clip.sigma", 2.0)(
        set_field("clip.type", WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL)(set_field("forward.out_noise", 0.1)(c)))),
     "forward.out_noise_per_channel"),
    (lambda c: set_field("pre_post.input_range.fast_mode", True)(set_field("pre_post.input_range.dynamic", True)(c)),
     "pre_post.input_range.fast_mode"),
    (lambda c: set_field("pre_post.input_range.fast_mode", True)(set_field("pre_post.input_range.act_range_momentum", 1.5)(c)),
     "input_range.act_range_momentum"),
    (lambda c: set_field("forward.inp_res", RES8)(set_field("pre_post.input_range.enable", False)(c)), "forward.inp_res"),
    (lambda c: set_field("forward.out_noise", 0.1)(set_field("pre_post.input_range.enable", False)(c)), "forward.out_noise"),
    (set_field("forward.out_res", RES8), "forward.out_res"),
    (set_field("forward.inp_res", 0.3), "forward.inp_res"),
    (set_field("pre_post.input_range.init_value", -1.0), "input_range.init_value"),
    (set_field("pre_post.input_range.init_from_data", 2.5), "input_range.init_from_data"),
    (lambda c: set_field("forward.out_noise_per_channel", True)(set_field("forward.out_noise", 0.1)(
        set_field("forward.out_bound", 10.0)(c))), "forward.out_noise_per_channel"),
    (lambda c: set_field("modifier.noise_type", WeightNoiseInjectionType.ADD_NORMAL)(set_field("modifier.std_dev", 0.1)(
        set_field("forward.out_noise_per_channel", True)(set_field("forward.out_noise", 0.1)(c)))), "modifier.noise_type"),
    (set_field("forward.ir_drop", 1.0), "forward.ir_drop"),
]


@pytest.mark.parametrize("edit,field", REFUSALS, ids=[f for _, f in REFUSALS])
def test_refusals_name_the_field(edit, field: str) -> None:
    c = edit(rpu())
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        hw.HardwareConfig.from_aihwkit(c)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        lf.convert_to_analog(nn.Sequential(nn.Linear(8, 4)), c)


def test_not_a_lightning_config_class() -> None:
    class Sub(TorchInferenceRPUConfig):
        pass

    with pytest.raises(ValueError, match="expected AIHWKIT-Lightning's TorchInferenceRPUConfig"):
        hw.HardwareConfig.from_aihwkit(Sub())


def _quant(c, kind=WeightQuantizationType.DISCRETIZE, res: float = 1 / 30):
    c.modifier.quantization_type, c.modifier.res = kind, res
    return c


def _fast(c, momentum: float = 0.95):
    c.pre_post.input_range.fast_mode = True
    c.pre_post.input_range.act_range_momentum = momentum
    return c


ROUND_TRIP = [
    rpu(),
    _fast(rpu(inp_res=RES8, max_in=16, init_from_data=3), 0.8),
    _quant(rpu(inp_res=RES8, noise=WeightNoiseInjectionType.ADD_NORMAL, std=0.02)),
    _quant(rpu(out_bound=9.0, clip=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL, sigma=2.0),
           WeightQuantizationType.DISCRETIZE_PER_CHANNEL, 2**6 - 2),
    rpu(inp_res=RES8, out_res=RES8, out_bound=12.0, out_noise=0.04, max_in=32, init_from_data=3,
        noise=WeightNoiseInjectionType.ADD_NORMAL, std=0.02),
    rpu(inp_res=RES8, out_noise=0.1, per_channel=True, noise=WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL, std=0.05),
    rpu(inp_res=RES8, out_res=RES8, out_bound=8.0, dynamic=True),
    rpu(inp_res=RES8, learn=False, clip=WeightClipType.LAYER_GAUSSIAN, sigma=3.0),
    rpu(inp_res=RES8, out_res=RES8, out_bound=9.0, out_noise=0.04, per_channel=True, max_in=64,
        clip=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL, sigma=2.5, noise=WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL,
        std=0.02),
]


@pytest.mark.parametrize("c", ROUND_TRIP)
def test_config_round_trip(c) -> None:
    h = hw.HardwareConfig.from_aihwkit(c)
    back = h.to_aihwkit(flavour="lightning")
    assert hw.HardwareConfig.from_aihwkit(back) == h
    assert hw.HardwareConfig.from_dict(h.to_dict()) == h


def test_lightning_only_fields_have_no_aihwkit_equivalent() -> None:
    h = hw.HardwareConfig.from_aihwkit(rpu(out_noise=0.1))
    with pytest.raises(ValueError, match="out_noise_in_eval"):
        h.to_aihwkit()
    h = hw.HardwareConfig.from_aihwkit(rpu())
    assert h.input_range is not None
    with pytest.raises(ValueError, match="scaling_gradient"):
        h.to_aihwkit()
    with pytest.raises(ValueError, match="bound_management"):
        hw.HardwareConfig.preset("pcm_paper").to_aihwkit(flavour="lightning")
    with pytest.raises(ValueError, match="flavour"):
        h.to_aihwkit(flavour="other")


# ---------------------------------------------------------------------------------- training
def _pair(c, shape=(40, 12), seed=0):
    """A Lightning AnalogLinear and this package's, same weights (convert_to_analog of one nn.Linear)."""
    torch.manual_seed(seed)
    lin = nn.Linear(*shape)
    ours = lf.convert_to_analog(nn.Sequential(copy.deepcopy(lin)), c)[0]
    theirs = LLinear.from_digital(lin, copy.deepcopy(c))
    assert isinstance(ours, AnalogLinear)
    return ours, theirs


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    a, b = a.detach(), b.detach()
    err = float((a - b).abs().max())
    assert err <= rel * float(b.abs().max()), f"max |diff| {err:.3g} vs max |y| {float(b.abs().max()):.3g}"


# Ranges at 1.5 std (a good share of the inputs clip) and an ADC bound that some outputs reach, so
# that each gradient term and each clamp acts.
TRAIN = {
    "learned_ranges_8bit_tiled": rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=2,
                                     alpha=1.5, decay=0.01),
    "learned_ranges_unquantised": rpu(max_in=16, init_from_data=2, alpha=1.5, decay=0.01, min_pct=0.5),
    "fast_mode_8bit_tiled": _fast(rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=3), 0.9),
    "fast_mode_running_extremes": _fast(rpu(inp_res=RES8, max_in=16, init_from_data=3), -1.0),
    "weight_quantization_tiled": _quant(rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=2,
                                            alpha=1.5)),
    "weight_quantization_per_channel": _quant(
        rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=2, alpha=1.5,
            clip=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL, sigma=1.5), WeightQuantizationType.DISCRETIZE_PER_CHANNEL),
    "dynamic_8bit_tiled": rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, dynamic=True),
    "gaussian_clip_tiled": rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=2, alpha=1.5,
                               clip=WeightClipType.LAYER_GAUSSIAN, sigma=1.5),
    "gaussian_clip_per_channel_tiled": rpu(inp_res=RES8, out_res=RES8, out_bound=3.0, max_in=16, init_from_data=2,
                                           alpha=1.5, clip=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL, sigma=1.5),
}


@pytest.mark.parametrize("name", TRAIN)
def test_trains_side_by_side_with_lightning(name: str) -> None:
    """Noise off, plain SGD, the same batches: outputs within 1e-5 (relative to max |y|) at every
    step and in eval; the ranges and weights follow."""
    c = TRAIN[name]
    ours, theirs = _pair(c)
    gen = torch.Generator().manual_seed(1)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_theirs = AnalogOptimizer(torch.optim.SGD, theirs.analog_layers, theirs.parameters(), lr=0.1)
    for _ in range(8):
        x = torch.randn(8, 40, generator=gen) * 2
        target = torch.randn(8, 12, generator=gen)
        y_ours, y_theirs = ours(x), theirs(x)
        _close(y_ours, y_theirs)
        for model, y, opt in ((ours, y_ours, opt_ours), (theirs, y_theirs, opt_theirs)):
            opt.zero_grad()
            ((y - target) ** 2).mean().backward()
            opt.step()
        ours.post_update_step()  # Lightning's AnalogOptimizer clips in its step hook
        _close(ours.weight, theirs.weight)
        if theirs.input_range is not None:
            _close(ours.input_range.reshape(-1), theirs.input_range)
            assert torch.equal(ours.input_range_update_idx.reshape(-1), theirs.input_range_update_idx)
        if ours.input_range_x_min is not None:
            _close(ours.input_range_x_min.reshape(-1), theirs.x_min)
            _close(ours.input_range_x_max.reshape(-1), theirs.x_max)
    ours.eval(), theirs.eval()
    x = torch.randn(16, 40, generator=gen) * 2
    with torch.no_grad():
        _close(ours(x), theirs(x))
    _close(ours(x), theirs(x))  # the graph path of eval too


# ---------------------------------------------------------------------------------- noise
def _noise(layer, x: torch.Tensor, calls: int) -> torch.Tensor:
    """The training output minus the (noise-free) eval output, `calls` times: [calls, M, N]."""
    layer.eval()
    with torch.no_grad():
        clean = layer(x)
    layer.train()
    with torch.no_grad():
        return torch.stack([layer(x) - clean for _ in range(calls)])


NOISE = {
    "out_noise_per_channel": (rpu(out_noise=0.2, per_channel=True, max_in=16, init_value=1.5, init_from_data=0), 10),
    "out_noise_per_tensor": (rpu(out_noise=0.2, max_in=16, init_value=1.5, init_from_data=0), 10),
    "weight_noise_per_channel": (rpu(noise=WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL, std=0.05,
                                     max_in=16, init_value=1.5, init_from_data=0), 100),
    "weight_noise_per_tensor": (rpu(noise=WeightNoiseInjectionType.ADD_NORMAL, std=0.05, max_in=16,
                                    init_value=1.5, init_from_data=0), 100),
}


@pytest.mark.parametrize("name", NOISE)
def test_noise_agrees_statistically(name: str) -> None:
    """Per-channel std within 2 % and a two-sample KS test p > 1e-3 on the pooled noise. The
    weight noise is read through the identity (one draw of every weight per call)."""
    c, calls = NOISE[name]
    ours, theirs = _pair(c, shape=(40, 12))
    torch.manual_seed(3)
    ours.manual_seed(4)
    weight = "weight" in name
    x = torch.eye(40) if weight else torch.randn(4000, 40, generator=torch.Generator().manual_seed(5))
    n_ours, n_theirs = _noise(ours, x, calls), _noise(theirs, x, calls)
    std_ours = n_ours.reshape(-1, 12).std(dim=0)
    std_theirs = n_theirs.reshape(-1, 12).std(dim=0)
    assert float((std_ours / std_theirs - 1).abs().max()) < 0.02, (std_ours / std_theirs)
    p = stats.ks_2samp(n_ours.flatten().numpy(), n_theirs.flatten().numpy()).pvalue
    assert p > 1e-3, p
    # Lightning draws no output noise in eval; neither does the converted layer.
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), ours(x))


# ---------------------------------------------------------------------------------- models
def _lightning_model(c) -> nn.Module:
    torch.manual_seed(7)
    model = LSequential(LLinear(40, 24, rpu_config=copy.deepcopy(c)), nn.ReLU(), LLinear(24, 6, rpu_config=copy.deepcopy(c)))
    opt = AnalogOptimizer(torch.optim.SGD, model.analog_layers, model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(8)
    for _ in range(3):  # trained ranges and counters
        opt.zero_grad()
        model(torch.randn(8, 40, generator=gen)).square().mean().backward()
        opt.step()
    return model


@pytest.mark.parametrize("fast", [False, True], ids=["ranges", "fast_mode"])
def test_model_round_trip(fast: bool) -> None:
    c = rpu(inp_res=RES8, out_res=RES8, out_bound=6.0, max_in=16, init_from_data=5)
    if fast:
        c = _fast(c, 0.9)
    src = _lightning_model(c)
    x = torch.randn(10, 40, generator=torch.Generator().manual_seed(9))
    src.eval()
    with torch.no_grad():
        want = src(x)
    ours = lf.from_aihwkit_model(copy.deepcopy(src), seed=0)
    assert isinstance(ours, nn.Sequential) and isinstance(ours[0], AnalogLinear) and not ours.training
    assert ours[0].layout.in_sizes == (14, 13, 13)
    assert torch.equal(ours[0].input_range.reshape(-1), src[0].input_range.detach())
    assert torch.equal(ours[0].input_range_update_idx.reshape(-1), src[0].input_range_update_idx)
    with torch.no_grad():
        _close(ours(x), want)
    back = lf.to_aihwkit_model(ours, flavour="lightning")
    assert type(back[0]) is LLinear and type(back[2]) is LLinear
    for a, b in zip(back.state_dict().values(), src.state_dict().values()):
        assert torch.equal(a, b)
    assert hw.HardwareConfig.from_aihwkit(back[0].rpu_config) == hw.HardwareConfig.from_aihwkit(c)
    with torch.no_grad():
        _close(back(x), want)


def test_model_refusals() -> None:
    c = rpu()
    with pytest.raises(ValueError, match="AnalogConv1d"):
        lf.from_aihwkit_model(nn.Sequential(AnalogConv1d(2, 3, 3, rpu_config=c)))
    # the AnalogWrapper root of Lightning's convert_to_analog is a container: its layers convert
    wrapped = lightning_convert(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)), c)
    ours = lf.from_aihwkit_model(wrapped)
    assert [type(m) for m in ours if not isinstance(m, nn.ReLU)] == [AnalogLinear, AnalogLinear]
    layer = lf.from_aihwkit_model(nn.Sequential(LLinear(8, 4, rpu_config=c)))
    with pytest.raises(ValueError, match="flavour"):
        lf.to_aihwkit_model(layer, flavour="torch")
    layer[0].program(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="programmed"):
        lf.to_aihwkit_model(layer, flavour="lightning")
    # the default flavour is AIHWKIT 1.1's, unchanged (its own refusal of Lightning's range gradient)
    with pytest.raises(ValueError, match="scaling_gradient"):
        lf.to_aihwkit_model(layer)


def test_programmed_after_conversion_evaluates_with_drift() -> None:
    """The deployment path: a converted Lightning layer programs onto PCM and drifts."""
    c = rpu(inp_res=RES8, out_res=RES8, out_bound=6.0, init_from_data=5)
    model = lf.from_aihwkit_model(_lightning_model(c), seed=0)
    model.eval()
    x = torch.randn(10, 40, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        clean = model(x)
        lf.program(model, generator=torch.Generator().manual_seed(1))
        err = [float((model(x) - clean).norm() / clean.norm())]
        for layer in (model[0], model[2]):
            layer.drift(3600.0 * 24 * 365 * 10, generator=torch.Generator().manual_seed(2))
        err.append(float((model(x) - clean).norm() / clean.norm()))
    assert all(math.isfinite(e) and 0 < e < 1 for e in err), err


def test_the_op_resolves_lightnings_output_noise() -> None:
    """`crossbar_mvm` called with a Lightning config directly: no output noise in eval, and in
    training out_noise / sqrt(3) per tile of a 40-input layer on 16-input tiles (3 tiles), so
    the summed noise has std out_noise."""
    from lorafusion_ext.ops.crossbar import crossbar_mvm

    h = hw.HardwareConfig.from_aihwkit(rpu(out_noise=0.2, max_in=16))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4000, 40, generator=gen) * 2 - 1
    w = torch.rand(12, 40, generator=gen) * 2 - 1
    none = torch.empty(0, 3, 12)
    clean = crossbar_mvm(x, w, none, None, torch.tensor([1, 0]), h.replace(out_noise=0.0))
    assert torch.equal(crossbar_mvm(x, w, none, None, torch.tensor([1, 0]), h), clean)
    noisy = crossbar_mvm(x, w, none, None, torch.tensor([1, 0]), h, training=True)
    assert abs(float((noisy - clean).std()) / 0.2 - 1) < 0.02
