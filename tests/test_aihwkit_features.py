"""Forward features of AIHWKIT 1.1's torch inference tile beyond the defaults: MAX and CONSTANT
noise management, ITERATIVE_WORST_CASE bound management, the MULT_NORMAL and DISCRETIZE
modifiers, and a clear error for every field that is not modelled."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.ops import reference

pytest.importorskip("aihwkit")
from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: E402
from aihwkit.simulator.parameters.enums import (  # noqa: E402
    BoundManagementType,
    NoiseManagementType,
    WeightClipType,
    WeightModifierType,
    WeightRemapType,
)
from aihwkit_harness import (aihwkit_input_gradients, aihwkit_layer, assert_input_gradient,  # noqa: E402
                             injected_noise, set_field)
from scipy import stats  # noqa: E402


def _det_rpu(nm, bm, tiles: int = 0, nm_thres: float = 0.0) -> TorchInferenceRPUConfig:
    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise = 0.0
    rpu.forward.noise_management = nm
    rpu.forward.bound_management = bm
    rpu.forward.nm_thres = nm_thres
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = tiles
    rpu.mapping.max_output_size = tiles
    return rpu


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 96, generator=g) * 2
    x[3] = -x[3].abs()        # a row whose max is negative: scale 1 (AIHWKIT: a <= 0 -> 1)
    x[5] = 0.0                # an all-zero row
    x[7, :10] = 40.0          # saturates the ADC: several bound-management passes
    return x


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
@pytest.mark.parametrize("nm_thres", [0.0, 1.5], ids=["no_thres", "thres"])
@pytest.mark.parametrize(
    "nm,bm",
    [
        (NoiseManagementType.MAX, BoundManagementType.ITERATIVE),
        (NoiseManagementType.MAX, BoundManagementType.NONE),
        (NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE_WORST_CASE),
        (NoiseManagementType.MAX, BoundManagementType.ITERATIVE_WORST_CASE),
    ],
    ids=["max_iterative", "max_none", "absmax_worst_case", "max_worst_case"],
)
def test_noise_and_bound_management_are_bit_exact(nm, bm, nm_thres, tiles):
    rpu = _det_rpu(nm, bm, tiles, nm_thres)
    torch.manual_seed(0)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = _inputs()
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"


def test_max_noise_management_all_non_positive_input_gives_bias():
    # AIHWKIT: every row's max == 0 -> exact zeros (the bias only).
    rpu = _det_rpu(NoiseManagementType.MAX, BoundManagementType.ITERATIVE)
    torch.manual_seed(2)
    lin = nn.Linear(16, 8)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = -torch.rand(4, 16)
    x[:, 0] = 0.0
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        assert torch.equal(ours(x), lin.bias.detach().expand(4, 8))


def test_max_noise_management_trains_through_the_dac_mask():
    rpu = _det_rpu(NoiseManagementType.MAX, BoundManagementType.ITERATIVE)
    layer = lf.nn.AnalogLinear(12, 6, hardware=rpu, seed=0)
    x = torch.randn(5, 12, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and layer.weight.grad is not None


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
@pytest.mark.parametrize("inp_asym,out_asym", [(0.1, 0.0), (0.0, 0.2), (-0.15, 0.3)], ids=["inp", "out", "both"])
def test_asymmetries_are_bit_exact(inp_asym, out_asym, tiles):
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, tiles)
    rpu.forward.inp_asymmetry = inp_asym
    rpu.forward.out_asymmetry = out_asym
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert (hw.dac.asymmetry, hw.adc.asymmetry) == (inp_asym, out_asym)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(3)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = _inputs()
    with torch.no_grad():
        a, b = ours(x), ref(x)
        assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
        # The readable reference (lorafusion_ext.ops.reference) agrees too.
        w, scales = ours.tile_weights()
        r = reference.crossbar_mvm(x, w, scales[None], lin.bias, hw)
        assert torch.equal(r, a)


def test_input_asymmetry_gradient_matches_aihwkit():
    # Noise management NONE: with ABS_MAX AIHWKIT's autograd also differentiates through the
    # scale 1/max|x| (at each row's arg-max), which the straight-through backward here treats
    # as a constant, with or without asymmetry.
    rpu = _det_rpu(NoiseManagementType.NONE, BoundManagementType.NONE)
    rpu.forward.inp_asymmetry = 0.3
    torch.manual_seed(4)
    lin = nn.Linear(32, 16)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).train()
    ref = aihwkit_layer(lin, rpu).train()
    x1 = torch.randn(8, 32, generator=torch.Generator().manual_seed(5)) * 0.7  # some clamp at the DAC
    g = torch.randn(8, 16, generator=torch.Generator().manual_seed(6))
    _, theirs, ste, on_bound = aihwkit_input_gradients(ref, x1, g)
    x1.requires_grad_(True)
    ours(x1).backward(g)
    # Inputs that quantise to exactly the DAC bound: AIHWKIT's gradient there is torch's clamp's
    # (version-dependent); ours is the straight-through value (docs/numerics.md).
    assert_input_gradient(x1.grad, theirs, ste, on_bound, exact=True)


def test_output_asymmetry_refuses_gradients():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(adc=lf.hardware.ADC(8, 12.0, asymmetry=0.1))
    layer = lf.nn.AnalogLinear(8, 4, hardware=hw, seed=0)
    with pytest.raises(ValueError, match="adc.asymmetry .*inference"):
        layer(torch.randn(2, 8))
    with torch.no_grad():
        assert layer(torch.randn(2, 8)).shape == (2, 4)


UNSUPPORTED = [
    ("forward.out_noise_std", 0.1),
    ("forward.is_perfect", True),
    ("forward.w_noise", 0.01),
    ("forward.ir_drop", 1.0),
    ("forward.noise_management", NoiseManagementType.AVERAGE_ABS_MAX),
    ("forward.bound_management", BoundManagementType.SHIFT),
    ("modifier.type", WeightModifierType.DISCRETIZE_ADD_NORMAL),
    ("modifier.type", WeightModifierType.PCM_NOISE),
    ("modifier.pdrop", 0.1),
    ("clip.type", WeightClipType.AVERAGE_CHANNEL_MAX),
    ("pre_post.input_range.calibration_info", "quantile"),  # learned input ranges are modelled (test_input_range.py)
    ("mapping.digital_bias", False),
]


@pytest.mark.parametrize("path,value", UNSUPPORTED, ids=[f"{p}={v}" for p, v in UNSUPPORTED])
def test_unmodelled_fields_raise_naming_the_field(path, value):
    rpu = TorchInferenceRPUConfig()
    set_field(path, value)(rpu)
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        lf.HardwareConfig.from_aihwkit(rpu)


def test_unmodelled_noise_model_raises():
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

    class UserNoise(PCMLikeNoiseModel):
        """A user's own noise model: its behaviour is unknown, so it must not convert as PCM."""

    rpu = TorchInferenceRPUConfig()
    rpu.noise_model = UserNoise()
    with pytest.raises(ValueError, match="noise_model = UserNoise; expected one of"):
        lf.HardwareConfig.from_aihwkit(rpu)


@pytest.mark.parametrize("nm", [NoiseManagementType.ABS_MAX, NoiseManagementType.NONE], ids=["absmax", "none"])
@pytest.mark.parametrize("inp_bound,out_bound", [(0.8, 8.0), (2.0, 20.0), (1.0, -1.0)], ids=["small", "large", "no_adc_clamp"])
def test_non_default_converter_bounds_are_bit_exact(inp_bound, out_bound, nm):
    rpu = _det_rpu(nm, BoundManagementType.ITERATIVE if out_bound > 0 else BoundManagementType.NONE, 40)
    rpu.forward.inp_bound = inp_bound
    rpu.forward.out_bound = out_bound
    if out_bound <= 0:
        rpu.forward.out_res = -1.0
    torch.manual_seed(7)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = _inputs() * 0.5  # with NONE, some inputs beyond the DAC range: clamped
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"


@pytest.mark.parametrize("res", [1 / 62, 20.0], ids=["resolution", "states"])
@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
def test_discretize_modifier_is_bit_exact_in_training(res, tiles):
    rpu = _det_rpu(NoiseManagementType.NONE, BoundManagementType.NONE, tiles)
    rpu.modifier.type = WeightModifierType.DISCRETIZE
    rpu.modifier.res = res
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.modifier == lf.hardware.Modifier("discretize", res=res)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(8)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).train()
    ref = aihwkit_layer(lin, rpu).train()
    x1 = _inputs() * 0.4
    x2 = x1.clone()
    x1.requires_grad_(True)
    a = ours(x1)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(9))
    b, theirs, ste, on_bound = aihwkit_input_gradients(ref, x2, g)
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
    a.backward(g)
    assert_input_gradient(x1.grad, theirs, ste, on_bound, exact=True)
    with torch.no_grad():  # eval: no modifier
        assert torch.equal(ours.eval()(x1), ref.eval()(x2))
    w, scales = ours.tile_weights()
    r = reference.crossbar_mvm(x1.detach(), w.detach(), scales[None], lin.bias.detach(), hw, training=True)
    assert torch.equal(r, a.detach())


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
@pytest.mark.parametrize("bm", [BoundManagementType.NONE, BoundManagementType.ITERATIVE], ids=["no_bm", "iterative"])
@pytest.mark.parametrize("nm_thres", [0.0, 1.5, 3.7, 0.3], ids=["unit", "thres_1.5", "thres_3.7", "thres_0.3"])
def test_constant_noise_management_is_bit_exact(nm_thres, bm, tiles):
    rpu = _det_rpu(NoiseManagementType.CONSTANT, bm, tiles, nm_thres)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.noise_management == lf.hardware.NoiseManagement("constant", nm_thres)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(12)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x1 = _inputs() * 0.5  # some inputs beyond the DAC range once scaled by 1 / nm_thres
    x2 = x1.clone()
    x1.requires_grad_(True)
    a = ours(x1)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(13))
    b, theirs, ste, on_bound = aihwkit_input_gradients(ref, x2, g)
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
    a.backward(g)
    assert_input_gradient(x1.grad, theirs, ste, on_bound, rtol=1e-5, atol=1e-6)
    w, scales = ours.tile_weights()
    r = reference.crossbar_mvm(x1.detach(), w.detach(), scales[None], lin.bias.detach(), hw)
    assert torch.equal(r, a.detach())


def _off_scale_argmax(x: torch.Tensor, tiles: int, signed: bool = False) -> torch.Tensor:
    """Mask of x [rows, in] without each row's arg-max element per input tile (of |x|, or of x
    with MAX noise management): where AIHWKIT also differentiates its input scale."""
    keep = torch.ones_like(x, dtype=torch.bool)
    k0 = 0
    for kt in reference.split_sizes(x.shape[1], tiles or None):
        part = x[:, k0 : k0 + kt]
        keep[torch.arange(x.shape[0]), k0 + (part if signed else part.abs()).argmax(dim=1)] = False
        k0 += kt
    return keep


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
@pytest.mark.parametrize("nm,nm_thres", [(NoiseManagementType.ABS_MAX, 0.0), (NoiseManagementType.NONE, 0.0),
                                         (NoiseManagementType.MAX, 0.0), (NoiseManagementType.CONSTANT, 1.7)],
                         ids=["abs_max", "nm_none", "max", "constant"])
@pytest.mark.parametrize("bm", [BoundManagementType.NONE, BoundManagementType.ITERATIVE], ids=["no_bm", "iterative"])
@pytest.mark.parametrize("out_scale", [0.37, 2.5, -1.3])
def test_out_scale_is_bit_exact(out_scale, bm, nm, nm_thres, tiles):
    # forward.out_scale multiplies the output after the ADC: AIHWKIT's `output *= out_scale / scale`.
    rpu = _det_rpu(nm, bm, tiles, nm_thres)
    rpu.forward.out_scale = out_scale
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.out_scale == out_scale and not hw.is_ideal
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    assert lf.HardwareConfig.from_dict(hw.to_dict()) == hw
    torch.manual_seed(14)
    lin = nn.Linear(96, 50)
    for training in (False, True):
        ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).train(training)
        ref = aihwkit_layer(lin, rpu).train(training)
        x1 = _inputs() * 0.5
        x2 = x1.clone()
        x1.requires_grad_(True)
        a = ours(x1)
        g = torch.randn(a.shape, generator=torch.Generator().manual_seed(15))
        b, theirs, ste, on_bound = aihwkit_input_gradients(ref, x2, g)
        assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
        a.backward(g)
        # AIHWKIT also differentiates its ABS_MAX / MAX input scale at each row's arg-max element
        # of each input tile (docs/aihwkit.md, gradients); every other element agrees, those on
        # a converter bound with the straight-through value (aihwkit_harness.assert_input_gradient).
        keep = (_off_scale_argmax(x1.detach(), tiles, signed=nm == NoiseManagementType.MAX)
                if nm in (NoiseManagementType.ABS_MAX, NoiseManagementType.MAX)
                else torch.ones_like(x1, dtype=torch.bool))
        assert_input_gradient(x1.grad, theirs, ste, on_bound, keep, rtol=1e-5, atol=1e-6)
    w, scales = ours.tile_weights()
    r = reference.crossbar_mvm(x1.detach(), w.detach(), scales[None], lin.bias.detach(), hw)
    assert torch.equal(r, ours.eval()(x1).detach())


def test_out_scale_scales_the_weight_gradient_once():
    # With a fixed output gradient, the weight gradient of a layer with out_scale c is c times
    # the one without it (the factor is digital, after the ADC; the STE masks are the same).
    torch.manual_seed(16)
    lin = nn.Linear(40, 30)
    hw = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=0.0, modifier=lf.hardware.Modifier("none"),
                                                      mapping=lf.hardware.Mapping_("row", 1.0))
    x = torch.randn(12, 40)
    g = torch.randn(12, 30)
    grads = []
    for c in (1.0, 0.25):  # a power of two: the scaled gradient is exact
        layer = lf.nn.AnalogLinear.from_linear(lin, hw.replace(out_scale=c), seed=0).train()
        (layer(x) * g).sum().backward()
        grads.append(layer.weight.grad)
    assert torch.equal(grads[1], grads[0] * 0.25)


def test_out_scale_must_be_finite():
    with pytest.raises(ValueError, match="out_scale"):
        lf.HardwareConfig(out_scale=float("nan"))


def _mult_rpu(tiles: int) -> TorchInferenceRPUConfig:
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, tiles)
    rpu.modifier.type = WeightModifierType.MULT_NORMAL
    rpu.modifier.std_dev = 0.08
    return rpu


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
def test_mult_normal_modifier_with_injected_noise_is_bit_exact(tiles):
    rpu = _mult_rpu(tiles)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.modifier == lf.hardware.Modifier("mult_normal", 0.08)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(14)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).train()
    ref = aihwkit_layer(lin, rpu).train()
    gen = torch.Generator().manual_seed(15)
    x = _inputs() * 0.4
    noise_w = torch.randn(50, 96, generator=gen)
    w, scales = ours.tile_weights()
    with torch.no_grad():
        a = lf.ops.crossbar_mvm(x, w.contiguous(), scales[None].contiguous(), ours.bias, torch.tensor([0, 0]), hw,
                                training=True, noise_weight=noise_w)
        with injected_noise(ref, None, noise_w):
            b = ref(x)
        r = reference.crossbar_mvm(x, w, scales[None], lin.bias, hw, noise_weight=noise_w, training=True)
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"
    assert torch.equal(a, r)
    with torch.no_grad():  # eval: no modifier
        assert torch.equal(ours.eval()(x), ref.eval()(x))


def test_mult_normal_modifier_statistics_match_aihwkit():
    rpu = _mult_rpu(0)
    torch.manual_seed(16)
    lin = nn.Linear(64, 64)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=3).train()
    ref = aihwkit_layer(lin, rpu).train()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(17)) * 0.3
    with torch.no_grad():
        clean = ours.eval()(x)
        ours.train()
        torch.manual_seed(18)
        # Fresh weight noise each forward (each simulator's own RNG); 24 draws of 4096 outputs.
        err_ours = torch.cat([(ours(x) - clean).flatten() for _ in range(24)])
        err_ref = torch.cat([(ref(x) - clean).flatten() for _ in range(24)])
    assert err_ref.std() > 1e-3  # the modifier is on
    assert abs(err_ours.mean() - err_ref.mean()) < 0.02 * err_ref.std()
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3


def test_input_noise_statistics_match_aihwkit():
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, 40)
    rpu.forward.inp_noise = 0.05
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.dac.noise == 0.05 and lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(19)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=4).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    clean_rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, 40)
    clean = lf.nn.AnalogLinear.from_linear(lin, clean_rpu, seed=4).eval()
    x = _inputs()
    x[5] = 0.0  # a zero row still gets input noise (AIHWKIT skips its all-zero shortcut then)
    with torch.no_grad():
        y0 = clean(x)
        torch.manual_seed(20)
        # A row's outputs share its input noise: many draws, so that the samples are many.
        err_ours = torch.cat([(ours(x) - y0).flatten() for _ in range(64)])
        err_ref = torch.cat([(ref(x) - y0).flatten() for _ in range(64)])
    assert err_ref.std() > 1e-2
    assert abs(err_ours.mean() - err_ref.mean()) < 0.02 * err_ref.std()
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("nm,bm", [("none", "none"), ("abs_max", "iterative_global"), ("constant", "iterative_per_row")])
def test_input_noise_backward_uses_the_forward_noise(nm, bm):
    # The backward regenerates the input noise of each row's accepted pass: with W = I the
    # forward returns the noisy DAC outputs u themselves, so dL/dW = gᵀ u and, with input
    # asymmetry, dL/dx = (g W) · (1 - asymmetry where u < 0).
    from lorafusion_ext.hardware import ADC, DAC, BoundManagement, NoiseManagement

    k = 48
    hw = lf.HardwareConfig(dac=DAC(bits=None, bound=None, noise=0.2), adc=ADC(bits=None, bound=None), out_noise=0.0,
                           noise_management=NoiseManagement(nm, 2.0 if nm == "constant" else 0.0),
                           bound_management=BoundManagement(bm))
    g = torch.Generator().manual_seed(21)
    x = torch.randn(16, k, generator=g, dtype=torch.float64)
    rng = torch.tensor([5, 9])
    scales = torch.ones(1, 1, k, dtype=torch.float64)
    u = lf.ops.crossbar_mvm(x, torch.eye(k, dtype=torch.float64), scales, None, rng, hw)
    assert (u - x).abs().max() > 0.05  # the noise is on
    w = (torch.randn(k, k, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    gy = torch.randn(16, k, generator=g, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    lf.ops.crossbar_mvm(xg, w, scales, None, rng, hw).backward(gy)
    torch.testing.assert_close(w.grad, gy.t() @ u)
    torch.testing.assert_close(xg.grad, gy @ w.detach())
    asym = hw.replace(dac=DAC(bits=None, bound=None, noise=0.2, asymmetry=0.3))
    xg.grad = None
    lf.ops.crossbar_mvm(xg, w, scales, None, rng, asym).backward(gy)
    torch.testing.assert_close(xg.grad, (gy @ w.detach()) * torch.where(u < 0, 0.7, 1.0).to(u.dtype))


def _assert_weight_gradient_matches_finite_differences(hw, seed: int, rng: list[int], directions: int) -> None:
    """Rows of x accept different bound-management passes (some the last one) on 3 input tiles
    of 16; the loss is linear in W for fixed passes and fixed random draws, so central
    differences of the loss equal <dL/dW, d> up to rounding unless a pass decision flips."""
    k, n = 40, 12
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g, dtype=torch.float64) * 0.4
    x = torch.randn(10, k, generator=g, dtype=torch.float64) * 0.5
    x[2] = torch.sign(w[0]) * 0.9  # aligned with W's rows: saturates, later passes
    x[6] = torch.sign(w[1]) * 0.6
    x[4] = 0.0
    scales = torch.ones(1, 3, n, dtype=torch.float64)
    rng_t = torch.tensor(rng)
    gy = torch.randn(10, n, generator=g, dtype=torch.float64)
    wg = w.clone().requires_grad_(True)
    y, aux = lf.ops.crossbar_mvm(x, wg, scales, None, rng_t, hw, return_aux=True)
    assert int(aux.passes.max()) > 1
    y.backward(gy)
    eps = 1e-6
    for _ in range(directions):
        d = torch.randn(n, k, generator=g, dtype=torch.float64)
        up = (lf.ops.crossbar_mvm(x, w + eps * d, scales, None, rng_t, hw) * gy).sum()
        down = (lf.ops.crossbar_mvm(x, w - eps * d, scales, None, rng_t, hw) * gy).sum()
        fd = float((up - down) / (2 * eps))
        assert fd == pytest.approx(float((wg.grad * d).sum()), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("bm", ["iterative_global", "iterative_per_row"])
@pytest.mark.parametrize("nm", ["abs_max", "constant", "none"])
def test_input_noise_weight_gradient_matches_finite_differences(nm, bm):
    # The backward must regenerate the input noise of each row's accepted pass.
    from lorafusion_ext.hardware import ADC, DAC, BoundManagement, NoiseManagement, Tiles

    hw = lf.HardwareConfig(dac=DAC(bits=8, bound=1.0, noise=0.1), adc=ADC(bits=None, bound=3.0), out_noise=0.0,
                           noise_management=NoiseManagement(nm, 0.7 if nm == "constant" else 0.0),
                           bound_management=BoundManagement(bm), tiles=Tiles(16, None))
    _assert_weight_gradient_matches_finite_differences(hw, seed=22, rng=[3, 11], directions=4)


@pytest.mark.parametrize("which", ["inp", "out", "both"])
def test_stochastic_rounding_statistics_match_aihwkit(which):
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, 40)
    rpu.forward.inp_sto_round = which in ("inp", "both")
    rpu.forward.out_sto_round = which in ("out", "both")
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert (hw.dac.sto_round, hw.adc.sto_round) == (rpu.forward.inp_sto_round, rpu.forward.out_sto_round)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(23)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=6).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    exact = lin(_inputs()).detach()
    with torch.no_grad():
        torch.manual_seed(24)
        err_ours = torch.cat([(ours(_inputs()) - exact).flatten() for _ in range(64)])
        err_ref = torch.cat([(ref(_inputs()) - exact).flatten() for _ in range(64)])
        y_ours = ours(_inputs())
    assert not torch.equal(y_ours, ours(_inputs()))  # fresh rounding offsets per call
    assert abs(err_ours.mean() - err_ref.mean()) < 0.02 * err_ref.std()
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3


def test_stochastic_rounding_weight_gradient_matches_finite_differences():
    # The backward draws the DAC's rounding offsets of each row's accepted pass again.
    from lorafusion_ext.hardware import ADC, DAC, BoundManagement, NoiseManagement, Tiles

    hw = lf.HardwareConfig(dac=DAC(bits=6, bound=1.0, sto_round=True), adc=ADC(bits=None, bound=3.0), out_noise=0.0,
                           noise_management=NoiseManagement("abs_max"),
                           bound_management=BoundManagement("iterative_per_row"), tiles=Tiles(16, None))
    _assert_weight_gradient_matches_finite_differences(hw, seed=25, rng=[4, 2], directions=3)


def _per_sample_rpu(kind: WeightModifierType, tiles: int) -> TorchInferenceRPUConfig:
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, tiles)
    rpu.modifier.type = kind
    rpu.modifier.std_dev = 0.08
    rpu.modifier.per_batch_sample = True
    return rpu


@pytest.mark.parametrize("tiles", [0, 40], ids=["one_tile", "tiled"])
@pytest.mark.parametrize("kind", [WeightModifierType.ADD_NORMAL, WeightModifierType.MULT_NORMAL],
                         ids=["add_normal", "mult_normal"])
def test_per_batch_sample_with_injected_noise_matches_aihwkit(kind, tiles):
    # Each sample of x [B, L, in] through its own noisy weights, forward and input gradient.
    rpu = _per_sample_rpu(kind, tiles)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.modifier.per_batch_sample and lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(30)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).train()
    ref = aihwkit_layer(lin, rpu).train()
    gen = torch.Generator().manual_seed(31)
    x1 = (_inputs() * 0.4).reshape(4, 6, 96)
    noise_w = torch.randn(4, 50, 96, generator=gen)
    w, scales = ours.tile_weights()
    x2 = x1.clone()
    x1.requires_grad_(True)
    a = lf.ops.crossbar_mvm(x1, w.detach().contiguous(), scales[None].detach().contiguous(), ours.bias.detach(),
                            torch.tensor([0, 0]), hw, training=True, noise_weight=noise_w)
    g = torch.randn(a.shape, generator=gen)
    b, theirs, ste, on_bound = aihwkit_input_gradients(ref, x2, g, noise=lambda: injected_noise(ref, None, noise_w))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    r = reference.crossbar_mvm(x1.detach().reshape(24, 96), w.detach(), scales[None].detach(), lin.bias.detach(), hw,
                               noise_weight=noise_w, training=True)
    assert torch.equal(a.detach().reshape(24, 50), r)
    a.backward(g)
    # AIHWKIT also differentiates its abs-max input scale, at the arg-max element of each row of
    # each input tile (docs/aihwkit.md, gradients); every other element is equal, those on a
    # converter bound with the straight-through value (aihwkit_harness.assert_input_gradient).
    keep = _off_scale_argmax(x1.detach().reshape(24, 96), tiles).reshape(x1.shape)
    assert_input_gradient(x1.grad, theirs, ste, on_bound, keep, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="noise_weight has shape"):
        lf.ops.crossbar_mvm(x1.detach(), w.detach().contiguous(), scales[None].detach().contiguous(), None,
                            torch.tensor([0, 0]), hw, training=True, noise_weight=noise_w[0])


@pytest.mark.parametrize("kind", [WeightModifierType.ADD_NORMAL, WeightModifierType.MULT_NORMAL],
                         ids=["add_normal", "mult_normal"])
def test_per_batch_sample_statistics_match_aihwkit(kind):
    # B samples of L identical tokens: one draw per sample (the tokens of a sample agree), and
    # the spread across samples is AIHWKIT's.
    rpu = _per_sample_rpu(kind, 40)
    torch.manual_seed(32)
    lin = nn.Linear(64, 48)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=5).train()
    ref = aihwkit_layer(lin, rpu).train()
    row = torch.randn(64, generator=torch.Generator().manual_seed(33)) * 0.3
    x = row.expand(128, 3, 64).contiguous()
    with torch.no_grad():
        clean = ours.eval()(row)
        ours.train()
        torch.manual_seed(34)
        y_ours, y_ref = ours(x), ref(x)
        assert torch.equal(y_ours[:, 0], y_ours[:, 2]) and torch.equal(y_ref[:, 0], y_ref[:, 2])
        err_ours = torch.cat([(ours(x)[:, 0] - clean).flatten() for _ in range(4)])
        err_ref = torch.cat([(ref(x)[:, 0] - clean).flatten() for _ in range(4)])
    assert err_ref.std() > 1e-3  # the modifier is on
    assert abs(err_ours.mean() - err_ref.mean()) < 0.02 * err_ref.std()
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3
    # A [B, in] input: one draw per row.
    with torch.no_grad():
        y2 = ours(x[:, 0])
    assert not torch.equal(y2[0], y2[1])


def test_per_batch_sample_with_discretize_is_refused():
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE)
    rpu.modifier.type = WeightModifierType.DISCRETIZE
    rpu.modifier.res = 1 / 62
    rpu.modifier.per_batch_sample = True
    with pytest.raises(ValueError, match=r"modifier\.per_batch_sample"):
        lf.HardwareConfig.from_aihwkit(rpu)
    with pytest.raises(ValueError, match=r"modifier\.per_batch_sample"):
        lf.hardware.Modifier("discretize", res=0.1, per_batch_sample=True)
    with pytest.raises(ValueError, match=r"modifier\.sto_round"):
        lf.hardware.Modifier("add_normal", 0.1, sto_round=True)


def test_discretize_stochastic_rounding_statistics_match_aihwkit():
    rpu = _det_rpu(NoiseManagementType.ABS_MAX, BoundManagementType.ITERATIVE, 40)
    rpu.modifier.type = WeightModifierType.DISCRETIZE
    rpu.modifier.res = 1 / 14
    rpu.modifier.sto_round = True
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.modifier == lf.hardware.Modifier("discretize", res=1 / 14, sto_round=True)
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(35)
    lin = nn.Linear(96, 50)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=7).train()
    ref = aihwkit_layer(lin, rpu).train()
    x = _inputs() * 0.4
    with torch.no_grad():
        clean = ours.eval()(x)
        ours.train()
        torch.manual_seed(36)
        err_ours = torch.cat([(ours(x) - clean).flatten() for _ in range(48)])
        err_ref = torch.cat([(ref(x) - clean).flatten() for _ in range(48)])
        assert not torch.equal(ours(x), ours(x))  # fresh rounding offsets per call
    assert abs(err_ours.mean() - err_ref.mean()) < 0.02 * err_ref.std()
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3
    # Straight-through: the input gradient is G @ W~ with the forward's rounded weights W~,
    # which the backward draws again (a linear layer: y(x + d) - y(x) = W~ d before the ADC).
    xg = x.clone().requires_grad_(True)
    rng_before = ours.rng_state.clone()
    y = ours(xg)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(37))
    y.backward(g)
    ours.rng_state.copy_(rng_before)
    xg2 = x.clone().requires_grad_(True)
    ours(xg2).backward(g)
    assert torch.equal(xg.grad, xg2.grad)  # the same draw gives the same gradient
