"""Weight clipping and remapping with AIHWKIT's semantics: never at conversion, once per tile
after each optimizer step (`post_update_step`), on the tiles' normalised weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Modifier

pytest.importorskip("aihwkit")
from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: E402
from aihwkit.simulator.parameters.enums import WeightClipType, WeightRemapType  # noqa: E402
from aihwkit_harness import aihwkit_layer, noiseless_rpu, freeze_analog_weights, set_alphas, tile_grid  # noqa: E402


def _rpu(clip: str, remap: bool | str, tiles: int = 0, learn: bool = False, columnwise: bool = False,
         fixed: float = -1.0) -> TorchInferenceRPUConfig:
    rpu = noiseless_rpu(tiles, learn, columnwise)
    if clip == "gauss":
        rpu.clip.type = WeightClipType.LAYER_GAUSSIAN
        rpu.clip.sigma = 2.5
        rpu.clip.fixed_value = fixed
    elif clip == "fixed":
        rpu.clip.type = WeightClipType.FIXED_VALUE
        rpu.clip.fixed_value = 0.6
    if remap == "layer":  # LAYERWISE_SYMMETRIC, with one mapping scale per tile
        rpu.remap.type = WeightRemapType.LAYERWISE_SYMMETRIC
        rpu.mapping.weight_scaling_columnwise = False
    elif remap:
        rpu.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC
    return rpu


def _pair(in_f: int, out_f: int, rpu, seed: int = 0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    ours = lf.nn.AnalogLinear.from_linear(lin, lf.HardwareConfig.from_aihwkit(rpu), seed=0)
    ref = aihwkit_layer(lin, rpu)
    return lin, ours, ref


def _equal(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert torch.equal(a, b), f"{what}: {(a == b).float().mean().item():.4f} equal, max |diff| {(a - b).abs().max().item()}"


def test_issue_example_layer_gaussian_is_not_applied_at_conversion():
    # 300 -> 90, LAYER_GAUSSIAN sigma 2.5, deterministic eval: AIHWKIT does not clip on conversion.
    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise = 0.0
    rpu.clip.type = WeightClipType.LAYER_GAUSSIAN
    rpu.clip.sigma = 2.5
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.mapping.clip_when == "update" and hw.mapping.clip_sigma == 2.5
    lin, ours, ref = _pair(300, 90, rpu)
    assert torch.equal(ours.weight, lin.weight)
    x = torch.randn(16, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _equal(ours.eval()(x), ref.eval()(x), "eval after conversion")


CASES = {
    "gauss": dict(clip="gauss", remap=False),
    "gauss_capped": dict(clip="gauss", remap=False, fixed=0.5),
    "fixed": dict(clip="fixed", remap=False),
    "remap": dict(clip="none", remap=True),
    "gauss_remap": dict(clip="gauss", remap=True),
    "gauss_remap_tiled": dict(clip="gauss", remap=True, tiles=64),
    "gauss_tiled_learned": dict(clip="gauss", remap=False, tiles=64, learn=True),
    "paper_tiled": dict(clip="gauss", remap=True, tiles=64, learn=True, columnwise=True),
    "layer_remap": dict(clip="none", remap="layer"),
    "gauss_layer_remap_tiled_learned": dict(clip="gauss", remap="layer", tiles=64, learn=True),
    "gauss_layer_remap_tiled_learned_columnwise": dict(clip="gauss", remap="layer", tiles=64, learn=True,
                                                       columnwise=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_post_update_steps_match_aihwkit(case):
    rpu = _rpu(**CASES[case])
    _, ours, ref = _pair(150, 90, rpu, seed=2)
    if ours.out_scaling is not None:
        alpha = 0.5 + torch.rand(ours.out_scaling.shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            ours.out_scaling.copy_(alpha)
        set_alphas(ref, alpha, rpu.mapping.out_scaling_columnwise)
    ours.weight.requires_grad_(False)
    freeze_analog_weights(ref)
    opt_o = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.05)
    opt_r = torch.optim.SGD(
        [p for p in ref.parameters() if p.requires_grad and type(p).__name__ != "AnalogContext"], lr=0.05
    )
    tiles = [t for row in tile_grid(ref) for t in row]
    g = torch.Generator().manual_seed(4)
    for step in range(3):
        x = torch.randn(12, 150, generator=g)
        target = torch.randn(12, 90, generator=g)
        opt_o.zero_grad(), opt_r.zero_grad()
        yo, yr = ours.train()(x), ref.train()(x)
        _equal(yo, yr, f"step {step} forward")
        ((yo - target) ** 2).mean().backward()
        ((yr - target) ** 2).mean().backward()
        opt_o.step(), opt_r.step()
        ours.post_update_step()
        for tile in tiles:
            tile.post_update_step()  # what AIHWKIT's analog optimizers do after each step
    x = torch.randn(20, 150, generator=g)
    with torch.no_grad():
        _equal(ours.eval()(x), ref.eval()(x), "eval after 3 steps")
    if rpu.remap.type == WeightRemapType.NONE and rpu.clip.type != WeightClipType.NONE:
        assert ours.held_weight is not None  # AIHWKIT kept the mapping: the tiles are held
    # The conditioned layer survives a state_dict round trip.
    clone = lf.nn.AnalogLinear(150, 90, hardware=ours.hardware, seed=0)
    clone.load_state_dict(ours.state_dict())
    with torch.no_grad():
        _equal(clone.eval()(x), ours(x), "reloaded")


def test_clip_after_steps_hook_conditions_the_model():
    rpu = _rpu("fixed", remap=False)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    model = nn.Sequential(lf.nn.AnalogLinear(20, 10, hardware=hw, seed=0))
    with torch.no_grad():
        model[0].weight.mul_(5.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = lf.nn.clip_after_steps(opt, model)
    model(torch.randn(3, 20)).sum().backward()
    opt.step()
    handle.remove()
    w, _ = model[0].tile_weights()
    assert w.abs().max() <= 0.6


def test_weight_training_with_clip_stays_close_to_aihwkit():
    # Weights trained too: AIHWKIT updates normalised tile weights (gradient / scale^2 hook),
    # this package the target weights; the two agree up to rounding of the weights.
    from aihwkit.optim import AnalogSGD

    rpu = _rpu("gauss", remap=True)
    _, ours, ref = _pair(64, 32, rpu, seed=5)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.01)
    lf.nn.clip_after_steps(opt_o, ours)
    opt_r = AnalogSGD(ref.parameters(), lr=0.01)
    opt_r.regroup_param_groups(ref)
    g = torch.Generator().manual_seed(6)
    for _ in range(3):
        x = torch.randn(16, 64, generator=g)
        for layer, opt in ((ours, opt_o), (ref, opt_r)):
            opt.zero_grad()
            layer.train()(x).square().mean().backward()
            opt.step()
    x = torch.randn(32, 64, generator=g)
    with torch.no_grad():
        a, b = ours.eval()(x), ref.eval()(x)
    # Seen: 62 % of the outputs equal, the rest within 2.4e-7 of outputs up to 2.3 (a rounding
    # of the weights, never an ADC step).
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * b.abs().max().item())


def test_remap_needs_the_matching_mapping():
    rpu = _rpu("gauss", "layer")
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.mapping.remap and hw.mapping.weight_scaling == "layer"
    assert hw.to_aihwkit().remap.type == WeightRemapType.LAYERWISE_SYMMETRIC
    rpu.mapping.weight_scaling_columnwise = True  # per-row mapping, per-tile remap: not modelled
    with pytest.raises(ValueError, match="LAYERWISE_SYMMETRIC.*weight_scaling_columnwise = False"):
        lf.HardwareConfig.from_aihwkit(rpu)
