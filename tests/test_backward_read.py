"""The backward pass as a transposed read of the crossbar (`HardwareConfig.backward`, issue 27):
the config, the kernel against its plain-PyTorch oracle, its noise, and what it leaves alone."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import lorafusion_ext as lf
from lorafusion_ext.hardware import (
    ADC,
    DAC,
    BoundManagement,
    HardwareConfig,
    Mapping_,
    Modifier,
    NoiseManagement,
    Periphery,
    Tiles,
)
from lorafusion_ext.ops import reference
from lorafusion_ext.ops.kwargs import op_kwargs
from lorafusion_ext.ops.tiling import split_sizes

PAPER = HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
QUIET = Periphery(out_noise=0.0)  # 8-bit converters, abs-max, iterative-global, no noise
#: A read with nothing in the way: the GEMM alone, i.e. the ideal backward.
PERFECT = Periphery(DAC(None, None), ADC(None, None), 0.0, NoiseManagement("none"), BoundManagement("none"))


def _weights(n: int, k: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g, dtype=dtype)
    ms = w.abs().amax(1)
    return w / ms[:, None], ms


def _forward_backward(hw, x, wn, ms, grad_y, rng=(5, 3), training=False, noise_weight=None,
                      need_grad_weight=False, sample_rows=0):
    """The raw op's forward (with aux) and backward; returns (grad_x, grad_w, s, mask, out_scales)."""
    layout = lf.nn.TileLayout.of(wn.shape[1], wn.shape[0], hw)
    scales = ms.expand(layout.n_in, -1)[None].contiguous()
    over = {"modifier_sample_rows": sample_rows} if sample_rows else {}
    kw = op_kwargs(hw, **over)
    r = torch.tensor(rng)
    _, s, mask, _, rng_used = torch.ops.lorafusion.crossbar_mvm(x, wn, scales, None, r, None, noise_weight, **kw,
                                                                training=training, need_aux=True)
    gx, gw = torch.ops.lorafusion.crossbar_mvm_backward(grad_y, x, wn, scales, rng_used, s, mask, noise_weight, **kw,
                                                        training=training, need_grad_x=True,
                                                        need_grad_weight=need_grad_weight)
    return gx, gw, s, mask, scales


def _inputs(m, k, n, seed, dtype=torch.float32, outliers=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=dtype)
    gy = torch.randn(m, n, generator=g, dtype=dtype)
    if outliers:  # a few large gradient columns: the backward ADC saturates and bound management acts
        gy[:, :3] *= 40.0
        gy[: m // 4] *= 8.0
    return x, gy


# ---------------------------------------------------------------------------------------- config


def test_backward_defaults_to_none_and_packs_todays_params():
    hw = HardwareConfig()
    assert hw.backward is None
    p = hw.op_params()
    assert p["bwd_read"] is False
    read = hw.replace(backward=QUIET).op_params()
    # Only the backward-read entries differ: the forward's parameters are untouched.
    assert {k for k in p if p[k] != read[k]} <= {k for k in p if k.startswith("bwd_")}
    assert read["bwd_read"] is True


def test_forward_periphery_is_the_forward_fields():
    hw = PAPER.replace(noise_management=NoiseManagement("abs_max", 3.0))
    fp = hw.forward_periphery
    assert (fp.dac, fp.adc, fp.out_noise, fp.noise_management, fp.bound_management) == (
        hw.dac, hw.adc, hw.out_noise, hw.noise_management, hw.bound_management)
    same = hw.replace(backward=fp)
    assert same.op_params()["bwd_max_passes"] == hw.max_passes
    assert same.op_params()["bwd_inp_res"] == hw.op_params()["inp_res"]
    assert same.op_params()["bwd_out_noise"] == hw.op_params()["out_noise"]


def test_hardware_with_backward_round_trips_through_dict():
    hw = PAPER.replace(backward=Periphery.with_bits(6, QUIET))
    assert HardwareConfig.from_dict(hw.to_dict()) == hw
    assert HardwareConfig.from_dict(PAPER.to_dict()).backward is None


@pytest.mark.parametrize("bits, field", [(1, "backward.dac.bits"), (17, "backward.dac.bits"), (True, "backward.dac.bits")])
def test_backward_bits_out_of_range_name_the_field(bits, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Periphery.with_bits(bits)


@pytest.mark.parametrize("make, field", [
    (lambda: Periphery(dac=DAC(8, -1.0)), "dac.bound"),
    (lambda: Periphery(adc=ADC(8, 0.0)), "adc.bound"),
    (lambda: Periphery(out_noise=-0.1), "backward.out_noise"),
    (lambda: Periphery(dac=DAC(asymmetry=0.1)), "backward.dac.asymmetry"),
    (lambda: Periphery(dac=DAC(noise=0.1)), "backward.dac.noise"),
    (lambda: Periphery(adc=ADC(sto_round=True)), "backward.adc.sto_round"),
    (lambda: Periphery(dac="8 bit"), "backward.dac"),
    (lambda: HardwareConfig(backward="same"), "hardware.backward"),
    (lambda: HardwareConfig.from_dict({"backward": {"bits": 8}}), "backward.bits"),
])
def test_bad_backward_configs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


@pytest.mark.parametrize("name, value", [("bwd_inp_res", 1.5), ("bwd_out_bound", -1.0), ("bwd_max_passes", 0),
                                         ("bwd_noise_management", 7), ("bwd_out_noise", -0.5)])
def test_kernel_rejects_bad_backward_params_by_name(name, value):
    hw = PAPER.replace(backward=QUIET)
    wn, ms = _weights(6, 5, 0)
    x, gy = _inputs(4, 5, 6, 1)
    kw = op_kwargs(hw, **{name: value})
    scales = ms[None, None].contiguous()
    with pytest.raises(RuntimeError, match=name):
        torch.ops.lorafusion.crossbar_mvm_backward(gy, x, wn, scales, torch.tensor([1, 0]), torch.ones(1, 4),
                                                   torch.ones(1, 4, 6, dtype=torch.bool), **kw, training=False,
                                                   need_grad_x=True, need_grad_weight=False)


# ------------------------------------------------------------------------- kernel against oracle

BACKWARDS = {
    "quiet": QUIET,
    "per_row": Periphery(out_noise=0.0, bound_management=BoundManagement("iterative_per_row")),
    "no_bm": Periphery(out_noise=0.0, bound_management=BoundManagement("none")),
    "no_nm": Periphery(out_noise=0.0, noise_management=NoiseManagement("none")),
    "max_nm": Periphery(out_noise=0.0, noise_management=NoiseManagement("max")),
    "constant_nm": Periphery(out_noise=0.0, noise_management=NoiseManagement("constant", 4.0)),
    "thres_nm": Periphery(out_noise=0.0, noise_management=NoiseManagement("abs_max", 2.0)),
    "6bit_tight": Periphery(DAC(6, 1.0), ADC(6, 3.0), 0.0),
    "no_adc": Periphery(DAC(8, 1.0), ADC(None, None), 0.0, bound_management=BoundManagement("none")),
    "perfect": PERFECT,
}
FORWARDS = {
    "paper": PAPER,
    "tiled": PAPER.replace(tiles=Tiles(24, 20)),
    "tiled_per_row": PAPER.replace(tiles=Tiles(24, 20), bound_management=BoundManagement("iterative_per_row")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fwd", sorted(FORWARDS))
@pytest.mark.parametrize("bwd", sorted(BACKWARDS))
@pytest.mark.parametrize("outliers", [False, True])
def test_backward_read_equals_oracle_bit_exact(fwd, bwd, dtype, outliers):
    hw = FORWARDS[fwd].replace(backward=BACKWARDS[bwd], out_noise=0.0)
    wn, ms = _weights(50, 70, 4, dtype)
    x, gy = _inputs(33, 70, 50, 7, dtype, outliers)
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy)
    want = reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask)
    assert torch.equal(gx, want)


@pytest.mark.parametrize("modifier, sample_rows", [("add_normal", 0), ("mult_normal", 0), ("discretize", 0),
                                                   ("add_normal", 11)])
def test_backward_read_uses_the_forward_weights_in_training(modifier, sample_rows):
    mod = Modifier(modifier, 0.05 if modifier != "discretize" else 0.0, res=0.02 if modifier == "discretize" else 0.0,
                   per_batch_sample=sample_rows > 0)
    hw = PAPER.replace(out_noise=0.0, modifier=mod, tiles=Tiles(40, 30), backward=Periphery(out_noise=0.0))
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(33, 70, 50, 7, outliers=True)
    g = torch.Generator().manual_seed(9)
    nw = None
    if modifier != "discretize":
        nw = torch.randn(*((33 // 11,) if sample_rows else ()), 50, 70, generator=g)
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy, training=True, noise_weight=nw,
                                               sample_rows=sample_rows)
    want = reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask, noise_weight=nw, training=True)
    assert torch.equal(gx, want)


@pytest.mark.parametrize("fwd", sorted(FORWARDS))
def test_backward_none_is_the_ideal_straight_through_backward(fwd):
    hw = FORWARDS[fwd]
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(33, 70, 50, 7, outliers=True)
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy)
    assert torch.equal(gx, reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask))
    # A periphery with nothing in the way is the same GEMM: the same bits.
    gx_perfect, *_ = _forward_backward(hw.replace(backward=PERFECT), x, wn, ms, gy)
    assert torch.equal(gx_perfect, gx)


@pytest.mark.parametrize("fwd", ["paper", "tiled"])
def test_backward_read_changes_only_grad_x(fwd):
    hw = FORWARDS[fwd]
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(33, 70, 50, 7, outliers=True)
    gx0, gw0, s0, m0, _ = _forward_backward(hw, x, wn, ms, gy, need_grad_weight=True)
    gx1, gw1, s1, m1, _ = _forward_backward(hw.replace(backward=Periphery.with_bits(4)), x, wn, ms, gy,
                                            need_grad_weight=True)
    assert torch.equal(s0, s1) and torch.equal(m0, m1)  # the forward ignores the backward periphery
    assert torch.equal(gw0, gw1)
    assert not torch.equal(gx0, gx1)


def test_error_shrinks_as_bits_grow():
    wn, ms = _weights(64, 96, 4)
    x, gy = _inputs(128, 96, 64, 7)
    ideal, *_ = _forward_backward(PAPER, x, wn, ms, gy)
    errors = []
    for bits in (4, 6, 8, 10, 12, 14, 16):
        gx, *_ = _forward_backward(PAPER.replace(backward=Periphery.with_bits(bits, QUIET)), x, wn, ms, gy)
        errors.append(float((gx - ideal).norm() / ideal.norm()))
    # Two more bits quarter the rounding error (measured: 0.48, 0.11, 0.027, ... 1.0e-4).
    assert all(a > 3.0 * b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 2e-4 and errors[0] > 0.1


@pytest.mark.parametrize("fwd", ["paper", "tiled"])
def test_backward_read_with_the_bound_test_probe_equals_oracle(fwd):
    """Calls of 256 tokens or more with iterative-global bound management run the kernel's
    bound-test probe (which may skip a pass that must fail): the result is the oracle's."""
    hw = FORWARDS[fwd].replace(out_noise=0.0, backward=QUIET)
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(300, 70, 50, 7, outliers=True)
    gy[:, 3:6] *= 400.0  # far over the ADC bound: several passes fail
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy)
    assert torch.equal(gx, reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask))


# ---------------------------------------------------------------------------------------- noise

NOISY = Periphery(DAC(8, 1.0), ADC(None, None), 0.05, bound_management=BoundManagement("none"))


@pytest.mark.parametrize("tiles", [Tiles(None, None), Tiles(40, 30)])
def test_backward_output_noise_is_its_own_philox_stream(tiles):
    hw = PAPER.replace(tiles=tiles, backward=NOISY)
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(33, 70, 50, 7)
    rng = (11, 4)
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy, rng=rng)
    k_sizes, n_sizes = split_sizes(70, tiles.max_in), split_sizes(50, tiles.max_out)
    noise = torch.zeros(1, len(k_sizes) * len(n_sizes), 33, 70)
    k0, index = 0, 0
    for kt in k_sizes:
        for _ in n_sizes:
            for m in range(33):
                noise[0, index, m, k0 : k0 + kt] = torch.ops.lorafusion.philox_normal(
                    torch.tensor(rng), 6, 0, index, m * 70 + k0, kt)
            index += 1
        k0 += kt
    want = reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask, noise_backward=noise)
    torch.testing.assert_close(gx, want, rtol=1e-5, atol=1e-5)
    clean = reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask)
    assert not torch.allclose(gx, clean, rtol=1e-4, atol=1e-4)


def test_backward_output_noise_statistics():
    """dx - dx(no noise) = sigma * N(0, 1) / s per element, s the row's input scale: std within
    2 %, mean near 0, KS p > 1e-3."""
    hw = PAPER.replace(backward=NOISY)
    wn, ms = _weights(64, 96, 4)
    x, gy = _inputs(256, 96, 64, 7)
    gx, _, s, mask, scales = _forward_backward(hw, x, wn, ms, gy, rng=(21, 0))
    clean = reference.crossbar_mvm_grad_x(gy, x, wn, scales, hw, s, mask)
    g = torch.where(mask[0], gy, torch.zeros(())) * scales[0, 0]
    a = g.abs().amax(1)  # the backward read's abs-max scale: dx's noise is sigma * a per row
    z = ((gx - clean) / (0.05 * a[:, None])).double().flatten()
    assert abs(float(z.std()) - 1.0) < 0.02
    assert abs(float(z.mean())) < 0.02
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3


def test_backward_noise_is_reproducible_and_independent_of_threads():
    hw = PAPER.replace(backward=Periphery(out_noise=0.04), tiles=Tiles(40, 30))
    wn, ms = _weights(50, 70, 4)
    x, gy = _inputs(300, 70, 50, 7, outliers=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, *_ = _forward_backward(hw, x, wn, ms, gy)
        torch.set_num_threads(2)
        two, *_ = _forward_backward(hw, x, wn, ms, gy)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    other, *_ = _forward_backward(hw, x, wn, ms, gy, rng=(5, 4))
    assert not torch.equal(one, other)


# ------------------------------------------------------------------------------ layers and models


def _layer(hw, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(24, 16)
    return lf.nn.AnalogLinear.from_linear(lin, hw).manual_seed(3)


def test_layer_digital_gradients_are_unchanged_by_the_backward_read():
    x = torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(1))
    grads = {}
    for name, back in (("ideal", None), ("read", Periphery.with_bits(4))):
        layer = _layer(PAPER.replace(backward=back)).train()
        xi = x.clone().requires_grad_(True)
        layer(xi).square().sum().backward()
        grads[name] = (xi.grad, layer.weight.grad, layer.bias.grad)
    assert torch.equal(grads["ideal"][1], grads["read"][1])
    assert torch.equal(grads["ideal"][2], grads["read"][2])
    assert not torch.equal(grads["ideal"][0], grads["read"][0])


def test_pool_on_crossbar_reads_its_gradient_through_the_backward_periphery():
    """The analog pool's tiles take the base layer's backward read: with a perfect periphery the
    coefficients' gradient is the ideal one bit for bit; with 4-bit converters it moves."""
    from lorafusion_ext.nn.convert import attach_pool
    from lorafusion_ext.nn.deploy import set_backward
    from lorafusion_ext.nn.pool import LoRAPool

    g = torch.Generator().manual_seed(2)
    A = torch.randn(3, 4, 24, generator=g) * 0.3
    B = torch.randn(3, 16, 4, generator=g) * 0.3
    x = torch.randn(6, 24, generator=g)
    grads = {}
    for name, back in (("ideal", None), ("perfect", PERFECT), ("4bit", Periphery.with_bits(4))):
        model = torch.nn.Sequential()
        model.add_module("fc", _layer(PAPER))
        pool = LoRAPool({"fc": (A, B)}, alpha=8.0)
        attach_pool(model, pool, pool_on_crossbar=True, magnitude=False)
        set_backward(model, back)
        model.train()
        model(x).square().sum().backward()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(grads["ideal"], grads["perfect"]))
    assert not all(torch.equal(a, b) for a, b in zip(grads["ideal"], grads["4bit"]))


def test_set_backward_on_a_model_without_analog_tiles_names_the_field():
    from lorafusion_ext.nn.deploy import set_backward

    with pytest.raises(ValueError, match="backward"):
        set_backward(torch.nn.Linear(4, 4), QUIET)
    layer = _layer(PAPER)
    assert set_backward(layer, QUIET).hardware.backward == QUIET
    assert set_backward(layer, None).hardware.backward is None


# ------------------------------------------------------------------------------- AIHWKIT config


def test_from_aihwkit_maps_the_backward_io_parameters():
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

    rpu = TorchInferenceRPUConfig()
    assert HardwareConfig.from_aihwkit(rpu).backward is None  # AIHWKIT's default: a perfect backward
    b = rpu.backward
    b.is_perfect = False
    b.inp_res = 1 / 62
    b.out_res = 1 / 254
    b.inp_bound = 1.0
    b.out_bound = 10.0
    b.out_noise = 0.02
    b.noise_management = NoiseManagementType.MAX
    b.nm_thres = 3.0
    b.bound_management = BoundManagementType.ITERATIVE
    back = HardwareConfig.from_aihwkit(rpu).backward
    assert back == Periphery(DAC(6, 1.0), ADC(8, 10.0), 0.02, NoiseManagement("max", 3.0),
                             BoundManagement("iterative_per_row"))
    hw = HardwareConfig.from_aihwkit(rpu)
    again = HardwareConfig.from_aihwkit(hw.to_aihwkit())
    assert again.backward == back


@pytest.mark.parametrize("field, value", [("inp_noise", 0.1), ("w_noise", 0.01), ("out_asymmetry", 0.1),
                                          ("inp_sto_round", True)])
def test_from_aihwkit_names_unmodelled_backward_fields(field, value):
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.backward.is_perfect = False
    setattr(rpu.backward, field, value)
    with pytest.raises(ValueError, match=rf"rpu_config\.backward\.{field}"):
        HardwareConfig.from_aihwkit(rpu)


def test_from_aihwkit_rejects_unmodelled_backward_managements():
    pytest.importorskip("aihwkit")
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType

    rpu = TorchInferenceRPUConfig()
    rpu.backward.is_perfect = False
    rpu.backward.bound_management = BoundManagementType.ITERATIVE_WORST_CASE
    with pytest.raises(ValueError, match=r"rpu_config\.backward\.bound_management"):
        HardwareConfig.from_aihwkit(rpu)



def test_to_aihwkit_refuses_a_global_backward_bound_management():
    pytest.importorskip("aihwkit")
    with pytest.raises(ValueError, match=r"hardware\.backward\.bound_management\.mode"):
        PAPER.replace(backward=QUIET).to_aihwkit()


# ----------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("flag, check", [
    ("ideal", lambda hw: hw.backward is None),
    ("same", lambda hw: hw.backward == hw.forward_periphery),
    ("6", lambda hw: hw.backward.dac.bits == 6 and hw.backward.adc.bits == 6
     and hw.backward.out_noise == hw.out_noise),
])
def test_cli_backward_flag(flag, check):
    from lorafusion_ext.apps import cli

    for command in ("hwa-lora", "pool", "fuse"):
        extra = {"hwa-lora": ["--task", "sst2"], "pool": ["--tasks", "sst2"], "fuse": ["--task", "sst2", "--pool", "p"]}
        args = cli.build_parser().parse_args([command, *extra[command], "--out", "o", "--backward", flag])
        assert check(cli._with_backward(cli._hardware(args.hardware), args.backward))


@pytest.mark.parametrize("flag", ["17", "1", "fast"])
def test_cli_bad_backward_flag_names_it(flag):
    from lorafusion_ext.apps import cli

    with pytest.raises(cli.CLIError, match="--backward"):
        cli._with_backward(cli._hardware("pcm_paper"), flag)

