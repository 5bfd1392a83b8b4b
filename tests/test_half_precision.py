"""bfloat16 / float16: the ops and the layers take half tensors, compute in float32 and return
the input's dtype, equal to the float32 path rounded once; gradients come back in each tensor's
own dtype, equal to the float32 gradients rounded once (docs/numerics.md, "Half precision")."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Mapping_, Tiles

HALF = [torch.bfloat16, torch.float16]
PAPER = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
CONFIGS = {"paper": PAPER, "tiled": PAPER.replace(tiles=Tiles(24, 20))}


def _rounded(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], g: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, inputs, g.to(out.dtype)))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("training", [False, True])
def test_crossbar_mvm_half_is_the_float32_path_rounded_once(dtype, name, training):
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 50, generator=g).to(dtype)
    w = (torch.rand(30, 50, generator=g) * 2 - 1).to(dtype)
    layout = lf.nn.TileLayout.of(50, 30, hw)
    scales = (torch.rand(1, layout.n_in, 30, generator=g) + 0.5).to(dtype)
    bias = torch.randn(30, generator=g).to(dtype)
    rng = torch.tensor([11, 4])
    gy = torch.randn(2, 7, 30, generator=g)

    xh, wh, bh = (t.clone().requires_grad_(True) for t in (x, w, bias))
    y = lf.ops.crossbar_mvm(xh, wh, scales, bh, rng, hw, training=training)
    assert y.dtype == dtype
    xf, wf, bf = (t.float().requires_grad_(True) for t in (x, w, bias))
    yf = lf.ops.crossbar_mvm(xf, wf, scales.float(), bf, rng, hw, training=training)
    assert torch.equal(y, _rounded(yf, dtype))

    grads = _grads(y, [xh, wh, bh], gy)
    # The half output's gradient, upcast exactly, is what reaches the float32 path.
    ref = _grads(yf, [xf, wf, bf], gy.to(dtype).float())
    for got, want in zip(grads, ref):
        assert got.dtype == dtype
        assert torch.equal(got, _rounded(want, dtype))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("mode", ["lorahub", "sum"])
def test_pool_fusion_half_is_the_float32_path_rounded_once(dtype, mode):
    g = torch.Generator().manual_seed(2)
    K, r, d_in, d_out = 3, 4, 24, 20
    x = torch.randn(5, d_in, generator=g).to(dtype)
    A = (torch.randn(K, r, d_in, generator=g) * 0.2).to(dtype)
    B = (torch.randn(K, d_out, r, generator=g) * 0.2).to(dtype)
    c = torch.randn(K, generator=g).to(dtype)
    gy = torch.randn(5, d_out, generator=g)
    half = [t.clone().requires_grad_(True) for t in (x, A, B, c)]
    y = lf.ops.pool_fusion(*half, scale=2.0, mode=mode)
    assert y.dtype == dtype
    full = [t.float().requires_grad_(True) for t in (x, A, B, c)]
    yf = lf.ops.pool_fusion(*full, scale=2.0, mode=mode)
    assert torch.equal(y, _rounded(yf, dtype))
    for got, want in zip(_grads(y, half, gy), _grads(yf, full, gy.to(dtype).float())):
        assert got.dtype == dtype and torch.equal(got, _rounded(want, dtype))


def _pair(dtype, seed=0, **kw):
    """An AnalogLinear in `dtype` and its float32 twin holding the same (half-valued) weights."""
    torch.manual_seed(seed)
    half = lf.nn.AnalogLinear.from_linear(nn.Linear(40, 24).to(dtype), PAPER, seed=7, **kw)
    full = copy.deepcopy(half).float()
    assert half.weight.dtype == dtype and full.weight.dtype == torch.float32
    return half, full


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("training", [False, True])
def test_analog_linear_half(dtype, training):
    half, full = _pair(dtype)
    half.train(training), full.train(training)
    for p in (half.weight, full.weight):
        p.requires_grad_(True)
    x = torch.randn(3, 5, 40).to(dtype)
    xh, xf = x.clone().requires_grad_(True), x.float().requires_grad_(True)
    y, yf = half(xh), full(xf)
    assert y.dtype == dtype and torch.equal(y, _rounded(yf, dtype))
    gy = torch.randn(3, 5, 24)
    got = _grads(y, [xh, half.weight, half.bias], gy)
    want = _grads(yf, [xf, full.weight, full.bias], gy.to(dtype).float())
    for a, b in zip(got, want):
        assert a.dtype == dtype and torch.equal(a, _rounded(b, dtype))
    # float32 input to a half layer: the float32 path, unrounded (what the adapters use).
    assert torch.equal(half.eval()(x.float()), full.eval()(x.float()))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_programmed_half_layer_keeps_float32_conductances(dtype):
    half, full = _pair(dtype)
    half.eval(), full.eval()
    half.program(torch.Generator().manual_seed(3)), full.program(torch.Generator().manual_seed(3))
    half.drift(3600.0, torch.Generator().manual_seed(4)), full.drift(3600.0, torch.Generator().manual_seed(4))
    assert half.programmed_weight.dtype == torch.float32
    assert torch.equal(half.programmed_weight, full.programmed_weight)
    x = torch.randn(6, 40).to(dtype)
    assert torch.equal(half(x), _rounded(full(x.float()), dtype))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("analog", [True, False], ids=["analog_base", "digital_base"])
def test_lora_linear_half_rounds_once(dtype, analog):
    half, full = _pair(dtype)
    if not analog:
        half, full = nn.Linear(40, 24).to(dtype), nn.Linear(40, 24)
        with torch.no_grad():
            full.weight.copy_(half.weight.float()), full.bias.copy_(half.bias.float())
    lh, lf32 = lf.nn.LoRALinear(half, rank=4, alpha=8), lf.nn.LoRALinear(full, rank=4, alpha=8)
    with torch.no_grad():
        lh.lora_B.normal_()
        lf32.lora_A.copy_(lh.lora_A.float()), lf32.lora_B.copy_(lh.lora_B.float())
    lh.train(), lf32.train()
    x = torch.randn(2, 6, 40).to(dtype)
    xh, xf = x.clone().requires_grad_(True), x.float().requires_grad_(True)
    y, yf = lh(xh), lf32(xf)
    assert y.dtype == dtype and torch.equal(y, _rounded(yf, dtype))
    gy = torch.randn(2, 6, 24)
    got = _grads(y, [xh, lh.lora_A, lh.lora_B], gy)
    want = _grads(yf, [xf, lf32.lora_A, lf32.lora_B], gy.to(dtype).float())
    for a, b in zip(got, want):
        assert a.dtype == dtype and torch.equal(a, _rounded(b, dtype))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("magnitude", [False, True])
def test_lora_fusion_linear_half_rounds_once(dtype, magnitude):
    half, full = _pair(dtype)
    g = torch.Generator().manual_seed(5)
    A = (torch.randn(3, 4, 40, generator=g) * 0.2).to(dtype)
    B = (torch.randn(3, 24, 4, generator=g) * 0.2).to(dtype)
    ch = nn.Parameter(torch.randn(3, generator=g).to(dtype))
    cf = nn.Parameter(ch.detach().float())
    fh = lf.nn.LoRAFusionLinear(half, lf.nn.PoolLayer(A, B), 2.0, ch, magnitude=magnitude)
    ff = lf.nn.LoRAFusionLinear(full, lf.nn.PoolLayer(A.float(), B.float()), 2.0, cf, magnitude=magnitude)
    if magnitude:
        with torch.no_grad():
            ff.magnitude.copy_(fh.magnitude.float())
    fh.pool.requires_grad_(False), ff.pool.requires_grad_(False)
    fh.eval(), ff.eval()
    x = torch.randn(4, 40).to(dtype)
    y, yf = fh(x), ff(x.float())
    assert y.dtype == dtype and torch.equal(y, _rounded(yf, dtype))
    gy = torch.randn(4, 24)
    params_h = [fh.coeffs] + ([fh.magnitude] if magnitude else [])
    params_f = [ff.coeffs] + ([ff.magnitude] if magnitude else [])
    for a, b in zip(_grads(y, params_h, gy), _grads(yf, params_f, gy.to(dtype).float())):
        assert a.dtype == dtype and torch.equal(a, _rounded(b, dtype))


def test_half_dtype_errors_name_the_argument():
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    w = torch.rand(4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="weight has dtype torch.float64 but x has dtype torch.bfloat16; "
                                         "expected torch.bfloat16 or torch.float32"):
        lf.ops.crossbar_mvm(x, w, w.new_ones(1, 1, 4), None, torch.tensor([0, 0]), PAPER)
    A = torch.randn(2, 3, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match="A has dtype torch.float16 but x has dtype torch.bfloat16"):
        lf.ops.pool_fusion(x, A, torch.randn(2, 4, 3, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16),
                           scale=1.0)
    layer = lf.nn.AnalogLinear(8, 4, dtype=torch.bfloat16, seed=0)
    with pytest.raises(ValueError, match="input dtype torch.float16 differs from the layer's torch.bfloat16; "
                                         "expected torch.bfloat16 or torch.float32"):
        layer(x.half())
    with pytest.raises(ValueError, match="input has dtype torch.float16 but the base weight has dtype torch.bfloat16"):
        lf.nn.LoRALinear(layer, rank=2, alpha=2)(x.half())


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_lora_fusion_linear_half_with_the_pool_on_the_crossbar(dtype):
    half, _ = _pair(dtype)
    g = torch.Generator().manual_seed(6)
    A = (torch.randn(3, 4, 40, generator=g) * 0.2).to(dtype)
    B = (torch.randn(3, 24, 4, generator=g) * 0.2).to(dtype)
    pool = lf.nn.AnalogPoolLayer(A, B, PAPER, (1, 2))
    fh = lf.nn.LoRAFusionLinear(half, pool, 2.0, nn.Parameter(torch.randn(3, generator=g).to(dtype)))
    ff = copy.deepcopy(fh).float()
    fh.eval(), ff.eval()
    x = torch.randn(4, 40).to(dtype)
    y, yf = fh(x), ff(x.float())
    assert y.dtype == dtype and torch.equal(y, _rounded(yf, dtype))
    gy = torch.randn(4, 24)
    (gh,), (gf,) = _grads(y, [fh.coeffs], gy), _grads(yf, [ff.coeffs], gy.to(dtype).float())
    assert gh.dtype == dtype and torch.equal(gh, _rounded(gf, dtype))
