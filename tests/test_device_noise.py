"""Device noise from the extension's Philox streams (draws="philox", docs/numerics.md, "Device
noise streams") and the fused PCM passes (lorafusion::pcm_program / pcm_drift).

* the fused passes match their plain-PyTorch oracle (the PCMLikeModel arithmetic fed with the
  same Philox normals through PhiloxNoise) to a few ulps: the only differences are log and pow
  (the C library's here, torch's vectorised Sleef versions there);
* the Philox draws have AIHWKIT's distributions: per device family, the programmed and drifted
  weights with Philox normals against the same model with torch.normal_ draws (bit-equal with
  AIHWKIT, tests/test_devices.py), moments and two-sample KS p > 1e-3;
* the streams are reproducible across thread counts, seeded by the generator or by
  torch.manual_seed, and independent across layers, tiles and purposes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.devices import (
    CustomDriftPCMLikeModel,
    HermesModel,
    PCMLikeModel,
    ReRAMModel,
    ReRamCMOModel,
    StateIndependentModel,
)
from lorafusion_ext.hardware import Tiles
from lorafusion_ext.nn import AnalogLinear, tile_state
from lorafusion_ext.ops.device import DRIFT_PURPOSE, PhiloxNoise, device_normals, fused_drift, fused_program

DAY = 86400.0


def _weights(out_f: int, in_f: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed)) * 0.1


def _layer(in_f: int, out_f: int, hw: lf.HardwareConfig, seed: int = 0) -> AnalogLinear:
    torch.manual_seed(seed)
    return AnalogLinear.from_linear(nn.Linear(in_f, out_f), hw, seed=seed + 1).eval()


# ------------------------------------------------------------------------------------------------
# Fused PCM passes against their oracle
# ------------------------------------------------------------------------------------------------

# Tolerance of fused vs oracle, in units of the tile's weight scale (max|W| / g_max per µS): the
# conductances differ by at most a few ulps of g_max = 25 µS (log and pow of different libraries,
# amplified at most by the slope of the drift power law and the read-noise factor).
ULP_TOL = 8


@pytest.mark.parametrize("shape", [(64, 48), (300, 211)])
@pytest.mark.parametrize("model", [PCMLikeModel(), PCMLikeModel(g_max=40.0, prog_noise_scale=0.5, drift_scale=1.5)])
def test_fused_pcm_matches_oracle(shape, model):
    w = _weights(*shape)
    fused = fused_program(model, w, PhiloxNoise(123, 0))
    assert fused is not None
    oracle = model.program(w, generator=PhiloxNoise(123, 0), keep_conductances=False)
    assert torch.equal(fused.scale, oracle.scale)
    unit = float(w.abs().max()) / model.g_max * torch.finfo(torch.float32).eps * model.g_max
    assert float((fused.weights - oracle.weights).abs().max()) <= ULP_TOL * unit
    # ν = |μ + σ z| · drift_scale: ulps of the terms (|μ| <= 0.1, |σ z| <= 0.045 · 5.77), so an
    # absolute bound; where the sum cancels the relative difference is large.
    nu_unit = (0.1 + 0.045 * 5.77) * model.drift_scale * torch.finfo(torch.float32).eps
    assert float((fused.nu - oracle.nu).abs().max()) <= ULP_TOL * nu_unit
    for t in (0.0, 3600.0, 31536000.0):
        d_fused = fused_drift(model, oracle, t, PhiloxNoise(77, DRIFT_PURPOSE))
        d_oracle = model.drift(oracle, t, generator=PhiloxNoise(77, DRIFT_PURPOSE))
        unit = float(oracle.weights.abs().max()) * torch.finfo(torch.float32).eps
        assert float((d_fused - d_oracle).abs().max()) <= ULP_TOL * unit, t


def test_fused_only_where_it_applies():
    w = _weights(8, 6)
    assert fused_program(CustomDriftPCMLikeModel(g_lst=(0.0, 25.0), nu_mean_lst=(0.05, 0.05), nu_std_lst=(0.01, 0.01)),
                         w, PhiloxNoise(1)) is None
    assert fused_program(PCMLikeModel(), w, torch.Generator()) is None
    assert fused_program(PCMLikeModel(), w.double(), PhiloxNoise(1)) is None
    used = PhiloxNoise(1)
    used.normal(w)
    assert fused_program(PCMLikeModel(), w, used) is None  # its purposes are no longer the kernel's


def test_fused_op_checks_its_inputs():
    with pytest.raises(RuntimeError, match="weights"):
        torch.ops.lorafusion.pcm_program(torch.ones(3), 1.0, [1.0], 25.0, 1.0, 1.0, 1.0, 0)
    with pytest.raises(RuntimeError, match="scale"):
        torch.ops.lorafusion.pcm_program(torch.ones(2, 2), 0.0, [1.0], 25.0, 1.0, 1.0, 1.0, 0)
    with pytest.raises(RuntimeError, match="nu"):
        torch.ops.lorafusion.pcm_drift(torch.ones(2, 2), torch.ones(2, 2), 1.0, 25.0, 1.0, False, 0.1, 1.0, 0)


# ------------------------------------------------------------------------------------------------
# Distributions against AIHWKIT's draws, per device family
# ------------------------------------------------------------------------------------------------

_FAMILIES = {
    "pcm": PCMLikeModel(),
    "pcm_custom_drift": CustomDriftPCMLikeModel(g_lst=(0.0, 10.0, 25.0), nu_mean_lst=(0.1, 0.06, 0.05),
                                                nu_std_lst=(0.02, 0.01, 0.01)),
    "state_independent": StateIndependentModel(),
    "hermes": HermesModel(),
    "reram": ReRAMModel(),
    "reram_cmo": ReRamCMOModel(),
}


def _ks_and_moments(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a64, b64 = a.double().flatten(), b.double().flatten()
    p = stats.ks_2samp(a64.numpy(), b64.numpy()).pvalue
    assert p > 1e-3, f"{what}: KS p = {p:.2e}"
    sa, sb = float(a64.std()), float(b64.std())
    assert abs(sa - sb) <= 0.05 * max(sa, sb) + 1e-12, f"{what}: std {sa} vs {sb}"
    n = a64.numel()
    assert abs(float(a64.mean() - b64.mean())) <= 5 * max(sa, sb) / np.sqrt(n) + 1e-12, f"{what}: means"


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_philox_draws_have_aihwkit_distributions(family):
    model = _FAMILIES[family]
    w = _weights(200, 150, seed=3)
    torch_state = model.program(w, generator=torch.Generator().manual_seed(5))
    philox_state = model.program(w, generator=PhiloxNoise(99, 0))
    _ks_and_moments(philox_state.weights - w, torch_state.weights - w, f"{family} programmed")
    if family == "reram":
        return  # its drift draws the same polynomial noise as programming (time policy aside)
    t = 30 * DAY
    d_torch = model.drift(torch_state, t, generator=torch.Generator().manual_seed(6))
    d_philox = model.drift(philox_state, t, generator=PhiloxNoise(98, DRIFT_PURPOSE))
    _ks_and_moments(d_philox - w, d_torch - w, f"{family} drifted")


def test_device_normals_are_standard_normal():
    z = device_normals(2024, 3, 200_000).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 0.01


# ------------------------------------------------------------------------------------------------
# Reproducibility and independence
# ------------------------------------------------------------------------------------------------


def _programmed(hw: lf.HardwareConfig, threads: int, t: float = DAY, draws: str = "philox") -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = _layer(300, 250, hw)  # 75 000 weights: several parallel grains of 16384
        layer.program(torch.Generator().manual_seed(0), draws=draws).drift(t, torch.Generator().manual_seed(1), draws=draws)
        return layer.programmed_weight.clone()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device", ["pcm", "hermes"])
def test_philox_draws_same_at_1_and_2_threads(device):
    hw = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=0.0)
    hw = hw.replace(device=hw.device.__class__(name=device, drift_compensation=True))
    assert torch.equal(_programmed(hw, 1), _programmed(hw, 2))
    z1 = device_normals(5, 0, 100_003)
    torch.set_num_threads(2)
    try:
        assert torch.equal(z1, device_normals(5, 0, 100_003))
    finally:
        torch.set_num_threads(1)


def test_torch_manual_seed_controls_philox_draws():
    hw = lf.HardwareConfig.preset("pcm_paper")
    runs = []
    for seed in (0, 0, 1):
        layer = _layer(40, 30, hw)
        torch.manual_seed(seed)
        runs.append(layer.program().programmed_weight.clone())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_streams_independent_across_layers_tiles_and_purposes():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(tiles=Tiles(64, 64))
    layer = _layer(128, 64, hw)  # two input tiles
    a = tile_state.device_noise(layer, 7, 0, 0).normal(torch.empty(64, 64))
    b = tile_state.device_noise(layer, 7, 1, 0).normal(torch.empty(64, 64))  # next tile
    c = PhiloxNoise(tile_state.device_noise(layer, 7, 0, 0).seed, 1).normal(torch.empty(64, 64))  # next purpose
    other = _layer(128, 64, hw, seed=5)  # another layer seed
    d = tile_state.device_noise(other, 7, 0, 0).normal(torch.empty(64, 64))
    e = tile_state.device_noise(layer, 8, 0, 0).normal(torch.empty(64, 64))  # another call
    for name, x in (("tile", b), ("purpose", c), ("layer", d), ("call", e)):
        r = float(np.corrcoef(a.flatten().numpy(), x.flatten().numpy())[0, 1])
        assert abs(r) < 5 / 64, f"{name}: correlation {r}"
        assert not torch.equal(a, x)
    # Two programmings of the same layer draw from two call seeds.
    w1 = layer.program(torch.Generator().manual_seed(0)).programmed_weight.clone()
    w2 = layer.program(torch.Generator().manual_seed(1)).programmed_weight.clone()
    assert not torch.equal(w1, w2)


def test_draws_option_selects_the_stream_and_is_checked():
    hw = lf.HardwareConfig.preset("pcm_paper")
    layer = _layer(40, 30, hw)
    philox = layer.program(torch.Generator().manual_seed(0)).programmed_weight.clone()
    aihwkit = layer.program(torch.Generator().manual_seed(0), draws="aihwkit").programmed_weight.clone()
    assert not torch.equal(philox, aihwkit)
    # draws="aihwkit" is the device model itself drawing torch.normal_ from the generator.
    model = tile_state.device_model_of(hw)
    w_norm, _ = layer.tile_weights()
    expected = model.program(w_norm.detach(), generator=torch.Generator().manual_seed(0)).weights
    assert torch.equal(aihwkit, expected)
    with pytest.raises(ValueError, match="draws"):
        layer.program(draws="numpy")
    with pytest.raises(ValueError, match="draws"):
        lf.drift(nn.Sequential(layer), 1.0, draws="torch")


# ------------------------------------------------------------------------------------------------
# The identity read-out without the GEMM
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_noise", [0.0, 0.04])
@pytest.mark.parametrize("adc_bound", [12.0, 0.3])  # 0.3: bound management runs more passes
@pytest.mark.parametrize("shape", [(48, 40), (300, 260)])  # 260 >= 256 rows: the bound-test probe runs
def test_identity_readout_equals_full_gemm(out_noise, adc_bound, shape):
    """The CPU kernel skips the GEMM for one-hot input rows (eye(K)): the read-out equals the
    same read-out forced through the GEMM bit for bit. The GEMM is forced by one extra input
    column of ones against an extra weight column of zeros: the same noise-management scales
    (abs-max 1), the same output shape (hence the same Philox output noise) and exact zero
    products, but two non-zeros per row."""
    from lorafusion_ext.hardware import ADC
    from lorafusion_ext.ops.crossbar import crossbar_mvm

    hw = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=out_noise)
    hw = hw.replace(adc=ADC(bits=hw.adc.bits, bound=adc_bound))
    n, k = shape
    w = _weights(n, k, seed=11)
    w = w / w.abs().max()
    rng = torch.tensor([12345, 7], dtype=torch.int64)
    scales = w.new_empty((0, 1, n))
    eye = torch.eye(k)
    with torch.no_grad():
        fast, aux = crossbar_mvm(eye, w, scales, None, rng, hw, return_aux=True)
        x_full = torch.cat([eye, torch.ones(k, 1)], dim=1)
        w_full = torch.cat([w, torch.zeros(n, 1)], dim=1)
        full, aux_full = crossbar_mvm(x_full, w_full, scales, None, rng, hw, return_aux=True)
    assert torch.equal(fast, full)
    assert torch.equal(aux.passes, aux_full.passes)
    if adc_bound < 1.0:
        assert int(aux.passes.max()) > 1  # bound management ran again
    # And through the layer's read-out (β0 = max(1e-4, mean |F(I)|)).
    assert torch.equal(tile_state.readout(w, hw, rng), torch.clamp(full.abs().mean(), min=1e-4))
