"""Time-dependent IR drop (AIHWKIT 1.1's TorchInferenceRPUConfigIRDropT, ONE_PASS) against
AIHWKIT's own torch implementation: the deterministic forward in inference, its configuration
round trip, that training is unaffected, and a clear error for what is not modelled."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf

pytest.importorskip("aihwkit")
from aihwkit.inference.converter.conductance import SinglePairConductanceConverter  # noqa: E402
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel  # noqa: E402
from aihwkit.simulator.configs import TorchInferenceRPUConfig, TorchInferenceRPUConfigIRDropT  # noqa: E402
from aihwkit.simulator.parameters.enums import AnalogMVType  # noqa: E402
from aihwkit_harness import aihwkit_layer  # noqa: E402
from scripts import REPO, load_file  # noqa: E402


def _rpu(tiles: int = 0, adc: bool = False, adc_quantization: bool = False, integration_sum: bool = False,
         time_scale: float = 1.0, g_min: float = 0.0, ir_drop: float = 1.0) -> TorchInferenceRPUConfigIRDropT:
    rpu = TorchInferenceRPUConfigIRDropT()
    rpu.forward.out_noise = 0.0
    if not adc:
        rpu.forward.out_res = -1.0
    rpu.forward.ir_drop = ir_drop
    rpu.forward.adc_quantization = adc_quantization
    rpu.forward.ir_drop_integration_sum = integration_sum
    rpu.forward.ir_drop_time_step_resolution_scale = time_scale
    rpu.mapping.max_input_size = tiles
    rpu.mapping.max_output_size = tiles
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    if g_min:
        rpu.noise_model = PCMLikeNoiseModel(g_converter=SinglePairConductanceConverter(g_max=25.0, g_min=g_min))
    return rpu


def _inputs(rows: int = 12, saturate: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, 96, generator=g)
    x[2] = 0.0  # an all-zero row: not the bias, v_read (0.4005 V) is off the rows' 0.4 V
    x[4, :20] *= 8.0  # outliers: most inputs then sit on the first levels of the pulse
    if saturate:
        x[5] = 6.0  # saturates the ADC: bound management re-runs the IR-drop pass
    return x


CASES = [
    dict(tiles=0),
    dict(tiles=64),
    dict(tiles=64, integration_sum=True),
    dict(tiles=64, time_scale=0.5),
    dict(tiles=0, adc_quantization=True),
]


@pytest.mark.parametrize("case", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) for c in CASES])
def test_ir_drop_matches_aihwkit(case):
    rpu = _rpu(**case)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.ir_drop.scale == 1.0
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw
    torch.manual_seed(4)
    lin = nn.Linear(96, 40)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    plain = lf.nn.AnalogLinear.from_linear(lin, hw.replace(ir_drop=lf.hardware.IRDrop()), seed=0).eval()
    x = _inputs()
    with torch.no_grad():
        a, b, c = ours(x), ref(x), plain(x)
    effect = (b - c).abs().max().item()
    # Ours sums the Thevenin chain in float64, AIHWKIT in float32: equal to float32 rounding,
    # four orders of magnitude below what the IR drop itself changes.
    tol = 2e-5 * b.abs().max().item()
    assert effect > 100 * tol, f"IR drop changes the output by {effect} only"
    assert (a - b).abs().max().item() < tol, f"max |ours - AIHWKIT| {(a - b).abs().max().item()}, effect {effect}"


def test_ir_drop_with_adc_and_bound_management_matches_aihwkit():
    # Through the 8-bit ADC and iterative bound management: equal but for an output that sits
    # on an ADC rounding boundary, which then differs by one ADC step.
    rpu = _rpu(tiles=64, adc=True, adc_quantization=True)
    torch.manual_seed(5)
    lin = nn.Linear(96, 40)
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = _inputs(saturate=True)
    with torch.no_grad():
        a, b = ours(x), ref(x)
        _, aux = lf.ops.crossbar_mvm(x, *[t.contiguous() for t in (ours.tile_weights()[0],)],
                                     ours.tile_weights()[1][None].contiguous(), None, torch.tensor([0, 0]),
                                     ours.hardware, return_aux=True)
    assert int(aux.passes.max()) > 1  # bound management took more than one pass
    step = 2 * 12.0 / 254 * lin.weight.abs().amax(dim=1).max().item()  # an ADC step in output units, at most
    assert (a != b).float().mean().item() < 0.02
    assert (a - b).abs().max().item() <= 1.01 * step


def test_ir_drop_is_off_in_training():
    rpu = _rpu(tiles=64)
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    torch.manual_seed(6)
    lin = nn.Linear(96, 40)
    with_ir = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0).train()
    without = lf.nn.AnalogLinear.from_linear(lin, hw.replace(ir_drop=lf.hardware.IRDrop()), seed=0).train()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(with_ir(x), without(x))
        assert not torch.equal(with_ir.eval()(x), without.eval()(x))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("forward.mv_type", AnalogMVType.SPLIT_MODE, r"forward\.mv_type"),
        ("forward.mv_type", AnalogMVType.BIT_WISE, r"forward\.mv_type"),
        ("forward.apply_xdep_pcm_read_noise", True, r"forward\.apply_xdep_pcm_read_noise"),
    ],
)
def test_unmodelled_ir_drop_fields_raise_naming_the_field(field, value, match):
    rpu = _rpu()
    setattr(rpu.forward, field.split(".")[1], value)
    with pytest.raises(ValueError, match=match):
        lf.HardwareConfig.from_aihwkit(rpu)


def test_ir_drop_config_errors_are_clear():
    rpu = TorchInferenceRPUConfig()
    rpu.forward.ir_drop = 1.0  # AIHWKIT's plain torch tile rejects IR drop: so do we
    with pytest.raises(ValueError, match=r"forward\.ir_drop"):
        lf.HardwareConfig.from_aihwkit(rpu)
    with pytest.raises(ValueError, match="needs a DAC"):
        lf.HardwareConfig(dac=lf.hardware.DAC(None, None), ir_drop=lf.hardware.IRDrop(scale=1.0))
    with pytest.raises(ValueError, match="does not divide"):
        lf.HardwareConfig(tiles=lf.hardware.Tiles(100, None), ir_drop=lf.hardware.IRDrop(scale=1.0, segments=8))
    with pytest.raises(ValueError, match=r"ir_drop\.integration"):
        lf.hardware.IRDrop(integration="simpson")
    # A layer whose inputs the segments do not divide (one tile: the physical rows are its inputs).
    hw = lf.HardwareConfig.from_aihwkit(_rpu(tiles=0))
    layer = lf.nn.AnalogLinear.from_linear(nn.Linear(90, 8), hw, seed=0).eval()
    with pytest.raises(RuntimeError, match="ir_drop_rows"), torch.no_grad():
        layer(torch.randn(2, 90))


def test_ir_drop_benchmark_runs_and_compares():
    bench = load_file("bench_ir_drop", REPO / "python" / "bench" / "ir_drop.py")
    (result,) = bench.main(["--shapes", "4x64x32", "--reps", "1"])
    assert set(result["ms"]) == {"ours_ir_drop", "ours_no_ir_drop", "aihwkit_ir_drop"}
    assert result["fraction_equal_to_aihwkit"] > 0.95


def test_an_aihwkit_ir_drop_model_converts_both_ways_after_drift():
    from aihwkit.nn import AnalogLinear as AihwkitLinear
    from aihwkit.nn import AnalogSequential

    rpu = _rpu(tiles=32)
    torch.manual_seed(7)
    model = AnalogSequential(AihwkitLinear(40, 48, rpu_config=rpu), nn.ReLU(),
                             AihwkitLinear(48, 10, bias=False, rpu_config=rpu)).eval()
    torch.manual_seed(8)
    model.program_analog_weights()
    model.drift_analog_weights(86400.0)
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(x)
        ours = lf.from_aihwkit_model(model, seed=0).eval()
        assert ours[0].hardware.ir_drop.scale == 1.0 and ours[0].programmed_weight is not None
        got = ours(x)
        back = lf.to_aihwkit_model(ours).eval()
        again = back(x)
    tol = 2e-5 * ref.abs().max().item()
    assert (got - ref).abs().max().item() < tol
    assert all(type(tile.rpu_config) is TorchInferenceRPUConfigIRDropT for tile in back[0].analog_tiles())
    assert (again - ref).abs().max().item() < tol


def test_ir_drop_in_float64_uses_aihwkits_float32_time_grid():
    # AIHWKIT builds the pulse's time grid with torch's default dtype (float32) whatever the
    # input's: a float64 layer compares its inputs with those float32 steps, or about half the
    # DAC levels would get a pulse one step longer or shorter.
    from aihwkit.simulator.parameters.enums import RPUDataType

    rpu = _rpu(tiles=64)
    rpu.runtime.data_type = RPUDataType.DOUBLE
    torch.manual_seed(4)
    lin = nn.Linear(96, 40).double()
    ours = lf.nn.AnalogLinear.from_linear(lin, rpu, seed=0).eval()
    ref = aihwkit_layer(lin, rpu).eval()
    x = _inputs().double()
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.dtype == b.dtype == torch.float64
    # (before the float32 grid: 0.09 on outputs of 5.3; now summation-order differences)
    assert (a - b).abs().max().item() < 1e-6 * b.abs().max().item()


@pytest.mark.parametrize("scale", [0.01, 0.001])
def test_a_pulse_of_fewer_than_two_time_steps_is_refused(scale):
    rpu = _rpu(time_scale=scale)  # int(128 * scale) < 2 steps at 8 bit, fewer at 7
    with pytest.raises(ValueError, match=r"forward\.ir_drop_time_step_resolution_scale"):
        lf.HardwareConfig.from_aihwkit(rpu)
    with pytest.raises(ValueError, match=r"ir_drop\.time_step_scale"):
        lf.HardwareConfig(dac=lf.hardware.DAC(8, 1.0), ir_drop=lf.hardware.IRDrop(scale=1.0, time_step_scale=scale))


def test_adc_quantization_without_a_frequency_is_refused():
    rpu = _rpu(adc_quantization=True)
    rpu.forward.adc_frequency = 0.0  # AIHWKIT divides by it: NaN outputs
    with pytest.raises(ValueError, match=r"forward\.adc_frequency"):
        lf.HardwareConfig.from_aihwkit(rpu)


def test_an_irdropt_config_without_ir_drop_round_trips():
    rpu = _rpu(ir_drop=0.0)
    rpu.forward.ir_drop_segments = 4  # inert without IR drop
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.ir_drop == lf.hardware.IRDrop()
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()) == hw


def test_drift_compensation_reads_out_through_the_physical_tile():
    # 100 inputs on 64-row tiles: two tiles of 50 inputs, each padded to 64 physical rows.
    # The compensation read-out must see the same padded tile as inference (as AIHWKIT's,
    # through tile.forward); 50 rows alone are not a multiple of the 8 segments.
    rpu = _rpu(tiles=64)
    torch.manual_seed(5)
    layer = lf.nn.AnalogLinear.from_linear(nn.Linear(100, 20), rpu, seed=0).eval()
    lf.program(layer, generator=torch.Generator().manual_seed(1))
    lf.drift(layer, 86400.0, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = layer(torch.randn(3, 100, generator=torch.Generator().manual_seed(3)))
    assert torch.isfinite(y).all()
