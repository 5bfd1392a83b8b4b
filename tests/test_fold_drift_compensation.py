"""`fold_drift_compensation` (lorafusion_ext.nn.deploy): after program + drift, train mode reads
the compensated crossbar that eval mode reads, in the forward and the gradient; folding twice is
folding once; a later drift compensates relative to the folded scales; bad input is refused
before anything changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import BoundManagement, Device, InputRange, Modifier, NoiseManagement, Tiles, WeightMapping
from lorafusion_ext.nn import AnalogLinear
from lorafusion_ext.nn.tile_state import programmed_state

ONE_DAY = 86400.0
TEN_YEARS = 315360000.0
# Several input and output tiles (α differs per tile), no read noise and no training noise, so
# that train mode and eval mode compute the same thing but for α.
HW = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(24, 16), out_noise=0.0, modifier=Modifier("none"))
# Learned input ranges (kept fixed: no data initialisation) take their own forward, which reads
# the mapping scales per tile.
RANGED = HW.replace(input_range=InputRange(init_from_data=0), noise_management=NoiseManagement("none"),
                    bound_management=BoundManagement("none"))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(hw: lf.HardwareConfig = HW) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 36), nn.ReLU(), nn.Linear(36, 20))
    model[0] = AnalogLinear.from_linear(model[0], hw, seed=1)
    model[2] = AnalogLinear.from_linear(model[2], hw, seed=2)
    return model


def _drifted(t: float = ONE_DAY, hw: lf.HardwareConfig = HW) -> nn.Sequential:
    model = _model(hw)
    lf.program(model, _gen(3))
    return lf.drift(model, t, _gen(4))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every tensor of `model`'s state_dict (the layers' extra state is not a tensor)."""
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = _state(model)
    return now.keys() == before.keys() and all(torch.equal(now[k], v) for k, v in before.items())


def _read(model: nn.Module, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, d sum(output²) / dx) of `model` in train or eval mode."""
    model.train(train)
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y**2).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("hw", [HW, RANGED], ids=["plain", "input_ranges"])
def test_train_mode_reads_what_eval_mode_read_before_the_fold(hw):
    x = torch.randn(6, 40, generator=_gen(5))
    plain = _drifted(hw=hw)
    alphas = [layer.drift_alpha.clone() for _, layer in lf.analog_layers(plain)]
    assert all(not torch.all(a == 1) and a.numel() > 1 for a in alphas)  # a day moved each tile's read-out
    y_eval, g_eval = _read(plain, x, train=False)
    y_raw, _ = _read(plain, x, train=True)
    assert not torch.allclose(y_raw, y_eval, rtol=1e-3)  # unfolded, train mode reads W(t) uncompensated

    folded = lf.fold_drift_compensation(_drifted(hw=hw))
    for (_, layer), (_, ref), alpha in zip(lf.analog_layers(folded), lf.analog_layers(plain), alphas):
        assert torch.equal(layer.programmed_weight, ref.programmed_weight)  # the crossbar is untouched
        assert torch.equal(layer.programmed_scales, ref.programmed_scales * alpha[:, layer.layout.row_tiles()])
        assert torch.all(layer.drift_alpha == 1)
    for train in (True, False):
        y, g = _read(folded, x, train=train)
        torch.testing.assert_close(y, y_eval, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, g_eval, rtol=1e-5, atol=1e-6)


def test_folding_twice_is_folding_once():
    model = lf.fold_drift_compensation(_drifted())
    once = _state(model)
    lf.fold_drift_compensation(model)
    assert _unchanged(model, once)


def test_a_later_drift_compensates_relative_to_the_folded_scales():
    x = torch.randn(6, 40, generator=_gen(5))
    folded = lf.fold_drift_compensation(_drifted(ONE_DAY))
    plain = _drifted(ONE_DAY)
    # The same crossbar read ten years on, with the same draws (the folded model drew nothing).
    lf.drift(folded, TEN_YEARS, _gen(6))
    lf.drift(plain, TEN_YEARS, _gen(6))
    y_eval, _ = _read(plain, x, train=False)
    torch.testing.assert_close(_read(folded, x, train=False)[0], y_eval, rtol=1e-5, atol=1e-6)
    lf.fold_drift_compensation(folded)
    torch.testing.assert_close(_read(folded, x, train=True)[0], y_eval, rtol=1e-5, atol=1e-6)
    # program() starts over: the fold goes with the rest of the programming.
    lf.program(folded, _gen(3))
    lf.program(plain, _gen(3))
    for (_, a), (_, b) in zip(lf.analog_layers(folded), lf.analog_layers(plain)):
        assert torch.equal(a.programmed_scales, b.programmed_scales)
        assert torch.equal(programmed_state(a).readout_baseline, programmed_state(b).readout_baseline)


def test_a_snapshot_of_the_buffers_keeps_the_unfolded_values():
    model = _drifted()
    layer = model[0]
    held = (layer.programmed_scales, layer.drift_alpha, programmed_state(layer).readout_baseline)
    copies = tuple(t.clone() for t in held)
    lf.fold_drift_compensation(model)
    assert all(torch.equal(a, b) for a, b in zip(held, copies))


def test_without_compensation_nothing_changes():
    hw = HW.replace(device=Device("pcm", drift_compensation=False))
    model = _drifted(hw=hw)
    before = _state(model)
    assert lf.fold_drift_compensation(model) is model
    assert _unchanged(model, before)


def test_refusals_leave_the_model_unchanged():
    with pytest.raises(ValueError, match="contains no AnalogLinear"):
        lf.fold_drift_compensation(nn.Sequential(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="expected a torch.nn.Module"):
        lf.fold_drift_compensation("model")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"2 of 2 analog layers are not programmed .*call program"):
        lf.fold_drift_compensation(_model())

    half = _model()
    half[0].program(_gen(3)).drift(ONE_DAY, _gen(4))
    before = _state(half)
    with pytest.raises(RuntimeError, match=r"1 of 2 analog layers are not programmed \(2\)"):
        lf.fold_drift_compensation(half)
    assert _unchanged(half, before)

    # A second layer without mapping scales: its α has nothing to ride on in train mode.
    mixed = _drifted()
    mixed[2].hardware = mixed[2].hardware.replace(mapping=WeightMapping(weight_scaling="none"))
    before = _state(mixed)
    with pytest.raises(ValueError, match=r"layer '2': .*weight_scaling = 'none'"):
        lf.fold_drift_compensation(mixed)
    assert _unchanged(mixed, before)


def test_a_single_layer_and_a_loaded_copy_fold_alike():
    layer = _drifted()[0]
    copy_ = AnalogLinear(40, 36, hardware=HW)
    copy_.load_state_dict(copy.deepcopy(layer.state_dict()))
    lf.fold_drift_compensation(layer)
    lf.fold_drift_compensation(copy_)
    assert torch.equal(layer.programmed_scales, copy_.programmed_scales)
    assert torch.equal(programmed_state(layer).readout_baseline, programmed_state(copy_).readout_baseline)
