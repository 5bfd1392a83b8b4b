"""AnalogLinear / crossbar_mvm against AIHWKIT 1.1's torch inference tile (the reference).

Deterministic path (no output noise, no modifier): bit-exact. Noisy path: bit-exact when
AIHWKIT is fed our noise; statistically equal with each simulator's own RNG.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import ADC, DAC, BoundManagement, Mapping_, Modifier, Tiles

pytest.importorskip("aihwkit")
from aihwkit_harness import aihwkit_layer, injected_noise, split_count  # noqa: E402

PAPER_DET = lf.HardwareConfig.preset("pcm_paper").replace(
    out_noise=0.0, mapping=Mapping_("row", 1.0), modifier=Modifier("none")
)
SIX_BIT = PAPER_DET.replace(dac=DAC(6, 1.0), adc=ADC(6, 10.0))


def _pair(in_f: int, out_f: int, hw: lf.HardwareConfig, seed: int = 0, bias: bool = True):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw).eval()
    ref = aihwkit_layer(lin, hw.to_aihwkit()).eval()
    return lin, ours, ref


def _assert_bit_exact(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == b.shape
    assert torch.equal(a, b), f"max |diff| = {(a - b).abs().max().item()}"


@pytest.mark.parametrize("hw", [PAPER_DET, SIX_BIT], ids=["paper", "6bit"])
@pytest.mark.parametrize("shape", [(1, 1), (77, 1000), (384, 96)])
def test_deterministic_path_is_bit_exact(hw, shape):
    in_f, out_f = shape
    _, ours, ref = _pair(in_f, out_f, hw)
    x = torch.randn(13, in_f, generator=torch.Generator().manual_seed(1))
    _assert_bit_exact(ours, ref, x)


def test_three_d_input_and_zero_rows_are_bit_exact():
    _, ours, ref = _pair(40, 24, PAPER_DET)
    x = torch.randn(3, 7, 40, generator=torch.Generator().manual_seed(2))
    x[0, 2] = 0.0
    x[2, :3] = 0.0
    _assert_bit_exact(ours, ref, x)


def test_all_zero_input_gives_bias_only():
    _, ours, ref = _pair(16, 8, PAPER_DET.replace(out_noise=0.04))
    x = torch.zeros(5, 16)
    _assert_bit_exact(ours, ref, x)
    with torch.no_grad():
        assert torch.equal(ours(x), ours.bias.expand(5, 8))


def test_global_bound_management_is_bit_exact_and_takes_several_passes():
    torch.manual_seed(3)
    lin = nn.Linear(384, 64)
    with torch.no_grad():
        lin.weight.copy_(lin.weight.abs())  # all-positive: large outputs saturate the ADC
    ours = lf.nn.AnalogLinear.from_linear(lin, PAPER_DET).eval()
    ref = aihwkit_layer(lin, PAPER_DET.to_aihwkit()).eval()
    x = torch.rand(32, 384, generator=torch.Generator().manual_seed(4))
    _assert_bit_exact(ours, ref, x)
    w, scales = ours.tile_weights()
    _, aux = lf.ops.crossbar_mvm(
        x, w.detach().contiguous(), scales[None].contiguous(), None, torch.tensor([0, 0]), PAPER_DET,
        return_aux=True,
    )
    assert int(aux.passes.max()) > 1


@pytest.mark.parametrize("max_in,max_out", [(32, 48), (77, 30), (20, 1000)])
def test_tile_splitting_is_bit_exact(max_in, max_out):
    hw = PAPER_DET.replace(tiles=Tiles(max_in, max_out))
    _, ours, ref = _pair(77, 100, hw)
    assert ours.layout.n_in == split_count(77, max_in)
    x = torch.randn(9, 77, generator=torch.Generator().manual_seed(5)) * 3
    _assert_bit_exact(ours, ref, x)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("tiles", [Tiles(None, None), Tiles(32, 40)], ids=["one_tile", "tiled"])
def test_noisy_path_with_injected_noise_is_bit_exact(training, tiles):
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0), tiles=tiles)
    torch.manual_seed(6)
    lin = nn.Linear(77, 90)
    with torch.no_grad():
        lin.weight[:5].abs_()
    ours = lf.nn.AnalogLinear.from_linear(lin, hw).train(training)
    ref = aihwkit_layer(lin, hw.to_aihwkit()).train(training)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(11, 77, generator=g) * 2
    tin = split_count(77, tiles.max_in)
    noise_out = torch.randn(hw.max_passes, tin, 11, 90, generator=g)
    noise_w = torch.randn(90, 77, generator=g)
    w, scales = ours.tile_weights()
    with torch.no_grad():
        a = lf.ops.crossbar_mvm(
            x, w.contiguous(), scales[None].contiguous(), ours.bias, torch.tensor([0, 0]), hw,
            training=training, noise_out=noise_out, noise_weight=noise_w,
        )
        with injected_noise(ref, noise_out, noise_w if training else None):
            b = ref(x)
    assert torch.equal(a, b), f"max |diff| = {(a - b).abs().max().item()}"


def test_noisy_path_statistics_match_aihwkit():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
    torch.manual_seed(8)
    lin = nn.Linear(128, 96)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=123).eval()
    ref = aihwkit_layer(lin, hw.to_aihwkit()).eval()
    x = torch.randn(256, 128, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        exact = lin(x)
        torch.manual_seed(10)
        err_ref = (ref(x) - exact).flatten()
        err_ours = (ours(x) - exact).flatten()
    assert abs(err_ours.mean() - err_ref.mean()) < 3e-3
    assert abs(err_ours.std() / err_ref.std() - 1) < 0.02
    assert stats.ks_2samp(err_ours.numpy(), err_ref.numpy()).pvalue > 1e-3


def test_modifier_statistics_match_aihwkit():
    hw = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0), out_noise=0.0)
    torch.manual_seed(11)
    lin = nn.Linear(64, 64)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=5).train()
    ref = aihwkit_layer(lin, hw.to_aihwkit()).train()
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(12))
    errs_o, errs_r = [], []
    with torch.no_grad():
        exact = lin(x)
        torch.manual_seed(13)
        for _ in range(20):
            errs_o.append((ours(x) - exact).flatten())
            errs_r.append((ref(x) - exact).flatten())
    eo, er = torch.cat(errs_o), torch.cat(errs_r)
    assert abs(eo.std() / er.std() - 1) < 0.05
    assert stats.ks_2samp(eo.numpy(), er.numpy()).pvalue > 1e-3


def test_ideal_equals_linear():
    torch.manual_seed(14)
    lin = nn.Linear(50, 30, bias=False)
    ideal = lf.nn.AnalogLinear.from_linear(lin, lf.HardwareConfig.preset("ideal")).eval()
    x = torch.randn(4, 6, 50)
    with torch.no_grad():
        assert torch.equal(ideal(x), nn.functional.linear(x, lin.weight))
    lin_b = nn.Linear(50, 30)
    ideal_b = lf.nn.AnalogLinear.from_linear(lin_b, lf.HardwareConfig.preset("ideal"))
    with torch.no_grad():
        torch.testing.assert_close(ideal_b(x), lin_b(x), rtol=1e-6, atol=1e-6)


def test_from_aihwkit_round_trip():
    for hw in (PAPER_DET, SIX_BIT, PAPER_DET.replace(tiles=Tiles(64, 32)),
               lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))):
        assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw.replace(
            device=lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()).device
        )


def test_from_aihwkit_rejects_unmodelled_fields():
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise_std = 0.1
    with pytest.raises(ValueError, match="forward.out_noise_std"):
        lf.HardwareConfig.from_aihwkit(rpu)
    with pytest.raises(ValueError, match="TorchInferenceRPUConfig"):
        lf.HardwareConfig.from_aihwkit(object())


def test_from_aihwkit_default_config():
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    hw = lf.HardwareConfig.from_aihwkit(TorchInferenceRPUConfig())
    assert hw.dac.bits == 7 and hw.adc.bits == 9 and hw.out_noise == pytest.approx(0.06)
    assert hw.tiles == Tiles(512, 512) and hw.mapping.weight_scaling == "none"
    assert hw.bound_management == BoundManagement("iterative_global")
