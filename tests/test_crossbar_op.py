"""The crossbar_mvm op against its plain-PyTorch reference: forward, noise, backward, torch
integration (gradcheck, opcheck, torch.compile) and bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy import stats
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.ops import reference
from lorafusion_ext.ops.kwargs import op_kwargs
from lorafusion_ext.hardware import (
    ADC,
    DAC,
    BoundManagement,
    Mapping_,
    Modifier,
    NoiseManagement,
    Tiles,
)

PAPER = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
SMOOTH = PAPER.replace(dac=DAC(None, 1.0), adc=ADC(None, None), out_noise=0.0, modifier=Modifier("none"))


def _weights(n: int, k: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g, dtype=dtype)
    ms = w.abs().amax(1)
    return w / ms[:, None], ms


def _call(x, wn, ms, hw, bias=None, rng=(1, 0), **kw):
    layout = lf.nn.TileLayout.of(wn.shape[1], wn.shape[0], hw)
    scales = ms.expand(layout.n_in, -1)[None].contiguous()
    return lf.ops.crossbar_mvm(x, wn, scales, bias, torch.tensor(rng), hw, **kw)


CONFIGS = {
    "paper": PAPER,
    "per_row": PAPER.replace(bound_management=BoundManagement("iterative_per_row")),
    "no_nm": PAPER.replace(noise_management=NoiseManagement("none")),
    "no_bm": PAPER.replace(bound_management=BoundManagement("none")),
    "nm_thres": PAPER.replace(noise_management=NoiseManagement("abs_max", 2.0)),
    "tiled": PAPER.replace(tiles=Tiles(24, 20)),
    "tiled_per_row": PAPER.replace(tiles=Tiles(24, 20), bound_management=BoundManagement("iterative_per_row")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("training", [False, True])
def test_op_equals_reference_with_explicit_noise(name, dtype, training):
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(3)
    wn, ms = _weights(50, 70, 4, dtype)
    with torch.no_grad():
        wn[:3] = wn[:3].abs()  # some saturating outputs
    x = (torch.rand(17, 70, generator=g, dtype=dtype) * 2 - 0.5)
    x[4] = 0
    x[5, :30] = 0
    tin = len(reference.split_sizes(70, hw.tiles.max_in))
    noise_out = torch.randn(hw.max_passes, tin, 17, 50, generator=g, dtype=dtype)
    noise_w = torch.randn(50, 70, generator=g, dtype=dtype)
    bias = torch.randn(50, generator=g, dtype=dtype)
    layout = lf.nn.TileLayout.of(70, 50, hw)
    scales = ms.expand(layout.n_in, -1)[None].contiguous()
    y = lf.ops.crossbar_mvm(x, wn, scales, bias, torch.tensor([0, 0]), hw, training=training,
                            noise_out=noise_out, noise_weight=noise_w)
    ref = reference.crossbar_mvm(x, wn, scales, bias, hw, noise_out, noise_w, training=training)
    assert torch.equal(y, ref), f"max |diff| = {(y - ref).abs().max().item()}"


@pytest.mark.parametrize("n_scales", [0, 1, 2, 3])
@pytest.mark.parametrize("noise", ["philox", "explicit", "none"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_op_equals_reference_for_any_number_of_scale_rows(n_scales, noise, with_bias, training):
    """The single-tile epilogue (output noise, ADC, bound test, every scale row in order, bias)
    gives the reference's bits whatever the number of digital scale rows, with the op's own
    Philox noise, injected noise or none, with and without bias and clamp masks."""
    hw = PAPER.replace(adc=ADC(8, 3.0), out_noise=0.0 if noise == "none" else 0.1)
    m, k, n = 23, 40, 37
    g = torch.Generator().manual_seed(31)
    wn, ms = _weights(n, k, 32)
    x = torch.randn(m, k, generator=g)
    x[3] *= 8.0  # a row that saturates the ADC and takes another pass
    scales = torch.stack([ms] + [torch.rand(n, generator=g) + 0.5 for _ in range(n_scales - 1)])[:n_scales, None]
    scales = scales.contiguous() if n_scales else torch.empty(0, 1, n)
    bias = torch.randn(n, generator=g) if with_bias else None
    rng = (7, 3)
    noise_out, noise_w = _philox_noise(rng, hw, m, n, k)
    x_op = x.clone().requires_grad_(training)
    y = lf.ops.crossbar_mvm(x_op, wn, scales, bias, torch.tensor(rng), hw, training=training,
                            noise_out=noise_out if noise == "explicit" else None,
                            noise_weight=noise_w if training else None)
    ref = reference.crossbar_mvm(x, wn, scales, bias, hw, noise_out, noise_w, training=training)
    assert torch.equal(y.detach(), ref), f"max |diff| = {(y.detach() - ref).abs().max().item()}"
    if training:  # the clamp masks of the accepted pass reach the input gradient
        y.backward(torch.ones_like(y))
        assert x_op.grad is not None and torch.isfinite(x_op.grad).all()


def test_per_row_bound_management_recomputes_only_saturating_rows():
    hw = CONFIGS["per_row"].replace(out_noise=0.0)
    wn, ms = _weights(32, 256, 5)
    wn = wn.abs().contiguous()
    wn[:, ::2] *= -1  # zero-mean rows stay inside the ADC range after abs-max scaling
    x = torch.randn(6, 256, generator=torch.Generator().manual_seed(6))
    x[2] = torch.rand(256).sign() * wn[0].sign()  # aligned with the weights: saturates
    y, aux = _call(x, wn, ms, hw, return_aux=True)
    passes = aux.passes[0]
    assert int(passes[2]) > 1
    assert passes[[0, 1, 3, 4, 5]].eq(1).all()
    # Batch independence: a row alone gives the same passes and (up to GEMM order) values.
    y2, aux2 = _call(x[2:3].contiguous(), wn, ms, hw, return_aux=True)
    assert int(aux2.passes[0, 0]) == int(passes[2])
    torch.testing.assert_close(y2[0], y[2])
    # Global mode re-runs everyone.
    _, aux_g = _call(x, wn, ms, PAPER.replace(out_noise=0.0), return_aux=True)
    assert aux_g.passes.eq(int(passes[2])).all()


def _philox_noise(rng, hw, m, n, k):
    """The op's own noise as explicit tensors: output noise per (pass, input tile) and the
    modifier noise, drawn with philox_normal from the same (seed, offset)."""
    r = torch.tensor(rng)
    tin = len(reference.split_sizes(k, hw.tiles.max_in))
    out = torch.stack([
        torch.stack([torch.ops.lorafusion.philox_normal(r, 0, p, t, 0, m * n).view(m, n) for t in range(tin)])
        for p in range(hw.max_passes)
    ])
    return out, torch.ops.lorafusion.philox_normal(r, 1, 0, 0, 0, n * k).view(n, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["paper", "tiled"])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("excess", [0.5, 1.0, 3.0], ids=["marginal", "just_over", "far_over"])
def test_skipped_passes_of_global_bound_management_change_nothing(name, dtype, training, excess):
    """Global bound management skips a pass whose bound test must fail (decided on a probe of
    the batch). The result, the passes and the clamp masks must be those of running every pass:
    the op with its Philox noise equals the reference fed the same noise as tensors."""
    hw = CONFIGS[name].replace(out_noise=0.1, adc=ADC(8, 3.0))
    m, k, n = 320, 72, 44  # enough rows for the probe
    g = torch.Generator().manual_seed(21)
    wn, ms = _weights(n, k, 22, dtype)
    x = torch.randn(m, k, generator=g, dtype=dtype) * 0.3
    # Rows aligned with weight row 5 reach |y| = excess * 3 (the ADC bound) at scale 1.
    aligned = wn[5].sign()
    reach = (wn[5].abs().sum() if name == "paper" else wn[5, :24].abs().sum()).item()
    for row in (7, 150, 300):
        x[row] = aligned * min(1.0, excess * 3.0 / reach)
        x[row, 0] = aligned[0]  # keeps max|x| = 1, so the aligned sum is not rescaled
    bias = torch.randn(n, generator=g, dtype=dtype)
    layout = lf.nn.TileLayout.of(k, n, hw)
    scales = ms.expand(layout.n_in, -1)[None].contiguous()
    rng = (2**33 + 5, 9)
    x_op = x.clone().requires_grad_(True)
    y, aux = lf.ops.crossbar_mvm(x_op, wn, scales, bias, torch.tensor(rng), hw, training=training, return_aux=True)
    noise_out, noise_w = _philox_noise(rng, hw, m, n, k)
    ref = reference.crossbar_mvm(x, wn, scales, bias, hw, noise_out.to(dtype), noise_w.to(dtype), training=training)
    assert torch.equal(y.detach(), ref), f"max |diff| = {(y.detach() - ref).abs().max().item()}"
    if excess > 1.0:
        assert int(aux.passes.max()) > 1
    # The backward's clamp masks come from the accepted pass.
    y_e, _ = lf.ops.crossbar_mvm(x, wn, scales, bias, torch.tensor(rng), hw, training=training,
                                 noise_out=noise_out.to(dtype), noise_weight=noise_w.to(dtype), return_aux=True)
    assert torch.equal(y.detach(), y_e)


def test_same_seed_same_noise_and_offsets_differ():
    wn, ms = _weights(40, 30, 6)
    x = torch.randn(20, 30)
    a = _call(x, wn, ms, PAPER, rng=(7, 0))
    b = _call(x, wn, ms, PAPER, rng=(7, 0))
    c = _call(x, wn, ms, PAPER, rng=(7, 1))
    d = _call(x, wn, ms, PAPER, rng=(8, 0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_noise_is_independent_of_thread_count():
    # W = 0 leaves only the output noise, so the GEMM's summation order cannot matter.
    hw = PAPER.replace(adc=ADC(None, None))
    x = torch.randn(300, 16)
    wn = torch.zeros(70, 16)
    ms = torch.ones(70)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _call(x, wn, ms, hw, rng=(11, 3))
        torch.set_num_threads(max(2, threads))
        many = _call(x, wn, ms, hw, rng=(11, 3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_output_noise_is_standard_normal_times_sigma():
    hw = PAPER.replace(adc=ADC(None, None), out_noise=0.5)
    x = torch.randn(500, 8).sign()  # max|x| = 1 per row: the output is not rescaled
    y = _call(x, torch.zeros(101, 8), torch.ones(101), hw, rng=(12, 0))
    z = (y / 0.5).flatten().double().numpy()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_modifier_noise_is_shared_by_the_batch_and_redrawn_per_call():
    hw = PAPER.replace(out_noise=0.0, adc=ADC(None, None), dac=DAC(None, 1.0))
    wn, ms = _weights(30, 20, 7)
    x = torch.randn(1, 20).expand(4, 20).contiguous()
    y = _call(x, wn, ms, hw, training=True, rng=(3, 0))
    assert torch.equal(y[0], y[3])
    y2 = _call(x, wn, ms, hw, training=True, rng=(3, 1))
    assert not torch.equal(y, y2)
    clean = _call(x, wn, ms, hw, training=False)
    rel = (y - clean).std() / (x @ (wn * ms[:, None]).T).std()
    assert 0.01 < rel < 0.5


def _clamp_ste(v, bound):
    """Clamp to [-bound, bound] with the documented STE gradient (docs/numerics.md): 1 where
    -bound <= v <= bound (the bound included), 0 beyond it. Written out rather than taken from
    torch.clamp, whose gradient at exactly the bound changed between torch versions."""
    inside = (v.detach() >= -bound) & (v.detach() <= bound)
    return torch.where(inside, v, v.detach().clamp(-bound, bound))


def _ste_reference(x, wn, ms, hw):
    """Autograd through the straight-through estimator (docs/numerics.md), in plain torch."""
    a = x.detach().abs().amax(1, keepdim=True)
    s = 1.0 / torch.where(a == 0, torch.ones_like(a), a)
    if hw.noise_management.mode == "none":
        s = torch.ones_like(s)
    v = x * s
    step = 2 * hw.dac.bound * hw.dac.resolution
    q = v + (torch.round(v / step) * step - v).detach()
    q = _clamp_ste(q, hw.dac.bound)
    y = q @ wn.T
    ostep = 2 * hw.adc.bound * hw.adc.resolution
    y = y + (torch.round(y / ostep) * ostep - y).detach()
    y = _clamp_ste(y, hw.adc.bound)
    return y / s * ms


@pytest.mark.parametrize("nm", ["abs_max", "none"])
def test_backward_is_the_straight_through_estimator(nm):
    hw = PAPER.replace(out_noise=0.0, bound_management=BoundManagement("none"), adc=ADC(8, 3.0),
                       noise_management=NoiseManagement(nm))
    wn, ms = _weights(40, 30, 8, torch.float64)
    # Without noise management inputs beyond the DAC range clamp: their gradient is masked.
    x = (torch.randn(25, 30, dtype=torch.float64) * (1.0 if nm == "abs_max" else 0.8)).requires_grad_(True)
    w = (wn * ms[:, None]).requires_grad_(True)
    g = torch.randn(25, 40, dtype=torch.float64)
    y = _call(x, w / ms[:, None], ms, hw)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    x2, w2 = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    y2 = _ste_reference(x2, w2 / ms[:, None], ms, hw)
    torch.testing.assert_close(y, y2)
    rx, rw = torch.autograd.grad(y2, (x2, w2), g)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    assert (y.detach().abs() >= 3.0 * ms * 0.999).any(), "the test should exercise the ADC clamp"
    if nm == "none":
        assert (x.detach().abs() > 1).any() and (gx[x.detach().abs() > 1.01] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ste_gradient_at_exactly_the_bound(dtype):
    """DAC and ADC clamps pass the gradient at exactly +-bound and block it beyond (AIHWKIT 1.1's
    torch tile under the torch it was released with: clamp's gradient is 1 on the closed range).
    Inputs and outputs are built to sit exactly on the bounds, so the expected gradients are
    written down, not taken from any torch version's clamp."""
    hw = PAPER.replace(dac=DAC(None, 1.0), adc=ADC(None, 2.0), out_noise=0.0, modifier=Modifier("none"),
                       noise_management=NoiseManagement("none"), bound_management=BoundManagement("none"))
    above = 1.0 + 2.0 ** -10  # exactly representable in both dtypes
    # Column k of x: at +1 / -1 (the DAC bound, gradient passes), beyond it (blocked), inside.
    x = torch.tensor([[1.0, -1.0, above, 0.5],
                      [-1.0, 1.0, -above, -1.0],
                      [1.0, 1.0, 0.25, 0.0]], dtype=dtype, requires_grad=True)
    # Outputs (DAC-clamped x times W^T): row 0: [2, 0.5, 2.125]; row 1: [-2, -0.5, -2.25];
    # row 2: [0, 0.5, 1.25]. +-2 is the ADC bound (gradient passes), +-2.125 and beyond clamp.
    w = torch.tensor([[1.0, -1.0, 0.0, 0.0],
                      [0.5, 0.0, 0.0, 0.0],
                      [1.0, 0.0, 1.0, 0.25]], dtype=dtype, requires_grad=True)
    ms = torch.ones(3, dtype=dtype)
    xq = x.detach().clamp(-1.0, 1.0)
    y_exact = xq @ w.detach().T
    assert y_exact[0, 0] == 2.0 and y_exact[1, 0] == -2.0 and y_exact[0, 2] > 2.0 and y_exact[1, 2] < -2.0
    y = _call(x, w, ms, hw)
    torch.testing.assert_close(y, y_exact.clamp(-2.0, 2.0), rtol=0, atol=0)
    g = torch.arange(1.0, 10.0, dtype=dtype).reshape(3, 3)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    adc_pass = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=dtype)
    dac_pass = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1]], dtype=dtype)
    ga = g * adc_pass
    torch.testing.assert_close(gx, (ga @ w.detach()) * dac_pass, rtol=0, atol=0)
    torch.testing.assert_close(gw, ga.T @ xq, rtol=0, atol=0)
    assert (gx[:2, :2] != 0).all(), "the gradient at exactly the DAC bound passes"
    assert gx[0, 2] == 0 and gx[1, 2] == 0, "the gradient beyond the DAC bound is blocked"
    # dL/dW[0, 0] = g[0, 0] x[0, 0] + g[1, 0] x[1, 0] + g[2, 0] x[2, 0]: both outputs at the
    # ADC bound contribute.
    assert gw[0, 0] == g[0, 0] * 1.0 + g[1, 0] * -1.0 + g[2, 0] * 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stage", ["dac", "adc"])
def test_quantisers_round_values_next_to_a_half_step_as_the_division_does(dtype, stage):
    """The converters divide by the step, as AIHWKIT's torch.round(v / step) does: values a few
    ulps either side of a half step, where a multiply by fl(1/step) would round some of them the
    other way (dozens per dtype here), come out exactly as torch.round(v / step) * step, and so
    do rows far from any tie."""
    plain = PAPER.replace(out_noise=0.0, modifier=Modifier("none"), noise_management=NoiseManagement("none"),
                          bound_management=BoundManagement("none"))
    if stage == "dac":
        hw = plain.replace(dac=DAC(7, 1.0), adc=ADC(None, None))
        step, bound = 2.0 * hw.dac.bound * hw.dac.resolution, hw.dac.bound
    else:
        hw = plain.replace(dac=DAC(None, None), adc=ADC(9, 12.0))
        step, bound = 2.0 * hw.adc.bound * hw.adc.resolution, hw.adc.bound
    step_t = torch.tensor(step, dtype=dtype)  # the kernel rounds the double step to T once
    half = (torch.arange(-int(bound / step) - 2, int(bound / step) + 2, dtype=dtype) + 0.5) * step_t
    near = [half]
    up, down = half.clone(), half.clone()
    for _ in range(4):
        up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
        near += [up, down]
    near = torch.cat(near)
    g = torch.Generator().manual_seed(0)
    n = 64
    far = (torch.rand(8 * n, generator=g, dtype=dtype) * 2 - 1) * bound
    values = torch.cat([near, far])
    values = values[torch.randperm(values.numel(), generator=g)]
    rows = -(-values.numel() // n)
    x = torch.zeros(rows * n, dtype=dtype)
    x[: values.numel()] = values
    x = x.reshape(rows, n)
    x[-3:] = far[: 3 * n].reshape(3, n)  # whole rows far from any tie
    eye = torch.eye(n, dtype=dtype)
    y = _call(x, eye, torch.ones(n, dtype=dtype), hw)
    expected = (torch.round(x / step_t) * step_t).clamp(-bound, bound)
    assert torch.equal(y, expected), f"{(y != expected).sum().item()} values differ"


def test_philox_vector_path_equals_the_scalar_header():
    rng = torch.tensor([2**40 + 123, 7])
    # Counts cover every path: 32-, 16- and 8-block vector steps, scalar tails, partial first and
    # last blocks, a single element; the last two cases wrap the low word of the block counter
    # (the last one inside a 32-block step).
    cases = ((0, 4099), (3, 1001), (1, 4 * 27), (2, 1), (5, 2), (0, 4 * 16 + 4 * 8), (4 * (2**32 - 5), 97),
             (4 * (2**32 - 12) + 1, 4 * 40))
    for start, count in cases:
        fast = torch.ops.lorafusion.philox_normal(rng, 0, 2, 1, start, count, True)
        slow = torch.ops.lorafusion.philox_normal(rng, 0, 2, 1, start, count, False)
        assert torch.equal(fast, slow)
    z = torch.ops.lorafusion.philox_normal(rng, 1, 0, 0, 0, 200000).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("hw", [SMOOTH, SMOOTH.replace(tiles=Tiles(7, 5)), lf.HardwareConfig.preset("ideal")],
                         ids=["smooth", "smooth_tiled", "ideal"])
def test_gradcheck_float64(hw):
    wn, ms = _weights(9, 13, 9, torch.float64)
    x = torch.randn(6, 13, dtype=torch.float64, requires_grad=True)
    w = wn.clone().requires_grad_(True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    layout = lf.nn.TileLayout.of(13, 9, hw)
    scales = ms.expand(layout.n_in, -1)[None].contiguous()

    def f(x, w, b):
        return lf.ops.crossbar_mvm(x, w, scales, b, torch.tensor([0, 0]), hw)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_opcheck():
    wn, ms = _weights(9, 13, 10, torch.float64)
    x = torch.randn(6, 13, dtype=torch.float64, requires_grad=True)
    for hw, training in ((SMOOTH, False), (PAPER, True), (PAPER.replace(tiles=Tiles(5, 4)), False)):
        layout = lf.nn.TileLayout.of(13, 9, hw)
        args = (x, wn, ms.expand(layout.n_in, -1)[None].contiguous(), torch.zeros(9, dtype=torch.float64),
                torch.tensor([5, 1]))
        kwargs = dict(op_kwargs(hw), training=training, need_aux=True)
        torch.library.opcheck(torch.ops.lorafusion.crossbar_mvm.default, args, kwargs)


def _model(hw):
    torch.manual_seed(0)
    return nn.Sequential(
        lf.nn.AnalogLinear(24, 48, hardware=hw, seed=1), nn.ReLU(), lf.nn.AnalogLinear(48, 8, hardware=hw, seed=2)
    )


@pytest.mark.parametrize("training", [False, True])
def test_torch_compile_fullgraph_matches_eager(training):
    torch._dynamo.reset()
    eager = _model(PAPER).train(training)
    compiled_src = copy.deepcopy(eager)
    compiled = torch.compile(compiled_src, fullgraph=True)
    x = torch.randn(2, 5, 24, requires_grad=training)
    for _ in range(2):  # the second call checks the RNG state advances the same way
        ye, yc = eager(x), compiled(x)
        assert torch.equal(ye, yc)
        if training:
            ge = torch.autograd.grad(ye.sum(), x)[0]
            gc = torch.autograd.grad(yc.sum(), x)[0]
            assert torch.equal(ge, gc)
    assert torch.equal(eager[0].rng_state, compiled_src[0].rng_state)


def test_nan_and_inf_inputs_give_nan_rows_without_hanging():
    wn, ms = _weights(10, 12, 11)
    x = torch.randn(5, 12)
    x[1, 3] = float("nan")
    x[3, 0] = float("inf")
    for mode in ("iterative_global", "iterative_per_row"):
        hw = PAPER.replace(bound_management=BoundManagement(mode))
        y, aux = _call(x, wn, ms, hw, return_aux=True)
        assert y[1].isnan().all() and y[3].isnan().all()
        assert int(aux.passes.max()) == hw.max_passes
        if mode == "iterative_per_row":
            assert y[[0, 2, 4]].isfinite().all()


class TestBadInput:
    wn, ms = _weights(10, 12, 12)

    def call(self, x=None, wn=None, ms=None, hw=PAPER, **kw):
        x = torch.randn(4, 12) if x is None else x
        return _call(x, self.wn if wn is None else wn, self.ms if ms is None else ms, hw, **kw)

    def test_half_and_integer_dtypes(self):
        # The compiled op takes float32 / float64 only; the wrapper computes half types in float32.
        scales = self.ms[None, None].half()
        with pytest.raises(RuntimeError, match="x has dtype Half; expected float32 or float64 .*lorafusion_ext.ops"):
            torch.ops.lorafusion.crossbar_mvm(torch.randn(4, 12).half(), self.wn.half(), scales, None,
                                              torch.tensor([1, 0]), **op_kwargs(PAPER), training=False,
                                              need_aux=False)
        with pytest.raises(ValueError, match="weight has dtype torch.float64 but x has dtype torch.float16"):
            self.call(x=torch.randn(4, 12).half(), wn=self.wn.double(), ms=self.ms.half())
        with pytest.raises(RuntimeError, match="x has dtype Long"):
            self.call(x=torch.ones(4, 12, dtype=torch.long))

    def test_dtype_mismatch(self):
        with pytest.raises(RuntimeError, match="weight has dtype Double but x has dtype Float"):
            self.call(wn=self.wn.double())

    def test_shape_mismatch(self):
        with pytest.raises(RuntimeError, match=r"x has shape \[4, 11\]; expected dim 1 \(in_features of weight\) to be 12"):
            self.call(x=torch.randn(4, 11))
        with pytest.raises(RuntimeError, match="bias has shape"):
            self.call(bias=torch.zeros(3))

    def test_non_contiguous(self):
        with pytest.raises(RuntimeError, match="x is not contiguous"):
            self.call(x=torch.randn(12, 4).t())

    def test_empty_batch(self):
        with pytest.raises(RuntimeError, match="x has an empty batch"):
            self.call(x=torch.randn(0, 12))

    def test_device_mismatch(self):
        with pytest.raises(ValueError, match="weight is on meta; expected the device of x"):
            self.call(wn=self.wn.to("meta"))

    def test_bad_rng(self):
        with pytest.raises(RuntimeError, match="rng must be a contiguous int64 tensor of 2 elements"):
            lf.ops.crossbar_mvm(torch.randn(4, 12), self.wn, self.ms[None, None].contiguous(), None,
                                torch.tensor([1.0, 2.0]), PAPER)

    def test_raw_op_rejects_bad_config_values(self):
        args = (torch.randn(4, 12), self.wn, self.ms[None, None].contiguous(), None, torch.tensor([0, 0]))
        for key, value, msg in (("out_noise", -1.0, "out_noise = -1"), ("inp_bound", float("nan"), "inp_bound = nan"),
                                ("max_passes", 0, "max_passes = 0"), ("bound_management", 7, "bound_management = 7"),
                                ("max_in", 1.5, "max_in = 1.5; expected a whole number"),
                                ("per_input_tile", 2, "per_input_tile = 2; expected 0 or 1")):
            with pytest.raises(RuntimeError, match=msg):
                torch.ops.lorafusion.crossbar_mvm(*args, **op_kwargs(PAPER, **{key: value}), training=False, need_aux=False)
        with pytest.raises(RuntimeError, match="params has 3 values; expected"):
            torch.ops.lorafusion.crossbar_mvm(*args, params=[0.0, 1.0, 0.0], training=False, need_aux=False)
        with pytest.raises(ValueError, match="unknown crossbar parameter 'inp_rez'"):
            op_kwargs(PAPER, inp_rez=0.1)


@pytest.mark.parametrize("name", ["paper", "per_row", "no_nm", "no_bm", "nm_thres", "max_nm", "saturating", "asym"])
def test_identity_readout_equals_the_general_path(name):
    # The drift-compensation read-out feeds eye(K) (M = K rows, one tile), which the kernel
    # quantises without reading its K^2 entries. One extra zero row turns that shortcut off
    # and leaves the first K rows' noise keys, scales and passes as they were: the rows must
    # agree bit for bit, in every configuration the shortcut takes.
    hw = {"max_nm": PAPER.replace(noise_management=NoiseManagement("max")),
          "saturating": PAPER.replace(adc=ADC(8, 0.6)),  # the identity's outputs saturate: several passes
          "asym": PAPER.replace(dac=DAC(8, 1.0, asymmetry=0.1))}.get(name) or CONFIGS[name]
    k, n = 300, 40
    wn, ms = _weights(n, k, 3)
    eye = torch.eye(k)
    fast = _call(eye, wn, ms, hw, rng=(11, 4))
    general = _call(torch.cat([eye, torch.zeros(1, k)]), wn, ms, hw, rng=(11, 4))[:k]
    assert torch.equal(fast, general)
