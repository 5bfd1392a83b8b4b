"""HardwareConfig: presets, validation with clear messages, serialisation."""

from __future__ import annotations

import pytest

import lorafusion_ext as lf
from lorafusion_ext.hardware import ADC, DAC, BoundManagement, Mapping_, Modifier, NoiseManagement, Tiles


def test_presets():
    paper = lf.HardwareConfig.preset("pcm_paper")
    assert paper.dac.resolution == pytest.approx(1 / 254) and paper.adc.bound == 12.0
    assert paper.out_noise == 0.04 and paper.modifier == Modifier("add_normal", 0.067)
    assert paper.max_passes == 6  # reductions 1..32: 32 > 0.25 / (2/254)
    assert lf.HardwareConfig.preset("ideal").is_ideal
    assert lf.HardwareConfig.preset("pcm_tiled").tiles == Tiles(512, 512)
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        lf.HardwareConfig.preset("nope")


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: DAC(bits=0), r"dac.bits = 0; expected an integer in 2..16"),
        (lambda: ADC(bits=17), r"adc.bits = 17; expected an integer in 2..16"),
        (lambda: DAC(bits=8, bound=-1.0), r"dac.bound = -1.0; expected a value > 0"),
        (lambda: ADC(bits=8, bound=None), r"adc.bound = None with bits = 8"),
        (lambda: lf.HardwareConfig(out_noise=-0.1), r"hardware.out_noise = -0.1; expected a value >= 0"),
        (lambda: lf.HardwareConfig(out_noise=float("nan")), r"hardware.out_noise = nan; expected a finite number"),
        (lambda: BoundManagement("sometimes"), r"bound_management.mode = 'sometimes'"),
        (lambda: NoiseManagement("abs_max", -1.0), r"noise_management.threshold = -1.0"),
        (lambda: Mapping_("column"), r"mapping.weight_scaling = 'column'"),
        (lambda: Tiles(0, 4), r"tiles.max_in = 0; expected a positive integer or None"),
        (lambda: Modifier("add_normal", -0.1), r"modifier.std = -0.1"),
        (lambda: lf.HardwareConfig(dac="8bit"), r"hardware.dac = '8bit'; expected a DAC"),
    ],
)
def test_invalid_values_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dict_round_trip():
    for name in ("pcm_paper", "pcm_tiled", "ideal"):
        hw = lf.HardwareConfig.preset(name)
        assert lf.HardwareConfig.from_dict(hw.to_dict()) == hw
    with pytest.raises(ValueError, match="unknown field 'bogus'"):
        lf.HardwareConfig.from_dict({"bogus": 1})


def test_max_passes_follow_aihwkit_termination():
    hw = lf.HardwareConfig.preset("pcm_paper")
    assert hw.replace(bound_management=BoundManagement("none")).max_passes == 1
    # Without a DAC only max_factor limits: 1, 2, ..., 1024 > 1000.
    assert hw.replace(dac=DAC(None, 1.0)).max_passes == 11
    assert hw.replace(dac=DAC(6, 1.0)).max_passes == 4  # 0.25 / (2/62) = 7.75: reductions 1..8
