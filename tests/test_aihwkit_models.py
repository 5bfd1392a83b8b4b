"""One-call conversion: AIHWKIT configs wherever a HardwareConfig is accepted, and whole
models AIHWKIT -> lorafusion_ext -> AIHWKIT with identical deterministic outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf

pytest.importorskip("aihwkit")
from aihwkit.nn import AnalogLinear as AihwkitLinear  # noqa: E402
from aihwkit.nn import AnalogSequential  # noqa: E402
from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: E402
from aihwkit_harness import noiseless_rpu  # noqa: E402
from aihwkit.simulator.parameters.enums import WeightClipType, WeightRemapType  # noqa: E402


def _rpu(tiles: int = 32, learn: bool = True) -> TorchInferenceRPUConfig:
    rpu = noiseless_rpu(tiles, learn)
    rpu.clip.type = WeightClipType.LAYER_GAUSSIAN
    rpu.clip.sigma = 2.5
    rpu.remap.type = WeightRemapType.NONE
    return rpu


def _aihwkit_model(rpu, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = AnalogSequential(
        AihwkitLinear(40, 48, rpu_config=rpu), nn.ReLU(), AihwkitLinear(48, 10, bias=False, rpu_config=rpu)
    )
    g = torch.Generator().manual_seed(seed + 1)
    for tile in model.analog_tiles():
        if tile.get_learned_out_scales() is not None:
            tile.set_learned_out_scales(0.5 + torch.rand(tile.get_learned_out_scales().shape, generator=g))
    return model


def _train_aihwkit(model: nn.Module, steps: int = 2) -> None:
    from aihwkit.optim import AnalogSGD

    opt = AnalogSGD(model.parameters(), lr=0.05)
    opt.regroup_param_groups(model)
    g = torch.Generator().manual_seed(11)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 40, generator=g)).square().mean().backward()
        opt.step()  # weights, alphas, bias; then clip per tile (mapping kept)


def test_convert_to_analog_accepts_an_rpu_config():
    rpu = _rpu()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 5))
    lf.convert_to_analog(model, rpu, seed=0)
    assert isinstance(model[0], lf.AnalogLinear) and model[0].hardware == lf.HardwareConfig.from_aihwkit(rpu)
    layer = lf.nn.AnalogLinear(8, 4, hardware=rpu, seed=0)
    assert layer.layout.n_in == 1 and layer.hardware.mapping.learn_out_scaling
    bad = TorchInferenceRPUConfig()
    bad.forward.w_noise = 0.1
    with pytest.raises(ValueError, match="forward.w_noise"):
        lf.convert_to_analog(nn.Sequential(nn.Linear(4, 4)), bad)


def test_exports():
    for name in ("from_aihwkit_model", "to_aihwkit_model", "convert_to_analog"):
        assert name in lf.__all__


@pytest.mark.parametrize("trained", [False, True], ids=["converted", "trained"])
def test_round_trip_aihwkit_ours_aihwkit(trained):
    model = _aihwkit_model(_rpu())
    if trained:
        _train_aihwkit(model)
    model.eval()
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    ours = lf.from_aihwkit_model(model, seed=0)
    assert isinstance(ours, nn.Sequential) and not isinstance(ours, AnalogSequential)
    assert all(isinstance(ours[i], lf.AnalogLinear) for i in (0, 2))
    with torch.no_grad():
        got = ours(x)
    assert torch.equal(got, ref), f"max |diff| {(got - ref).abs().max().item()}"
    back = lf.to_aihwkit_model(ours)
    assert all(isinstance(back[i], AihwkitLinear) for i in (0, 2))
    with torch.no_grad():
        again = back.eval()(x)
    assert torch.equal(again, ref), f"max |diff| {(again - ref).abs().max().item()}"


def test_programmed_and_drifted_state_is_carried():
    rpu = _rpu(tiles=32, learn=False)
    rpu.clip.type = WeightClipType.NONE
    model = _aihwkit_model(rpu, seed=3)
    model.eval()
    torch.manual_seed(4)
    model.program_analog_weights()
    model.drift_analog_weights(3600.0)
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
    ours = lf.from_aihwkit_model(model, seed=0)
    assert ours[0].programmed_weight is not None and ours[0].drift_alpha is not None
    with torch.no_grad():
        assert torch.equal(ours(x), ref)
    back = lf.to_aihwkit_model(ours).eval()
    with torch.no_grad():
        assert torch.equal(back(x), ref)


def test_ours_to_aihwkit_to_ours():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=0.0, tiles=lf.hardware.Tiles(32, 32),
                                                       modifier=lf.hardware.Modifier("none"))
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(70, 30), nn.Tanh(), nn.Linear(30, 9))
    lf.convert_to_analog(model, hw, seed=1)
    model.eval()
    x = torch.randn(4, 70, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x)
        aihw = lf.to_aihwkit_model(model).eval()
        assert torch.equal(aihw(x), ref)
        back = lf.from_aihwkit_model(aihw, seed=1).eval()
        assert torch.equal(back(x), ref)
