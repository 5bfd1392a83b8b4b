"""CPU vs CUDA: the same seed gives the same noise (bit for bit), crossbar outputs equal up to the
GEMM's summation order (ADC-level mismatch rate < 1e-4), pool_fusion equal up to GEMM order;
gradcheck, opcheck, torch.compile and CUDA-graph replay on the GPU.

Every test needs a CUDA GPU and an extension built with CUDA (`lf.build_info()["with_cuda"]`);
without them each test is skipped with the reason.
"""

from __future__ import annotations

import copy
import contextlib

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import ADC, DAC, BoundManagement, Mapping_, Modifier, Tiles
from lorafusion_ext.ops.crossbar import crossbar_mvm_inference
from lorafusion_ext.ops.kwargs import op_kwargs
from lorafusion_ext.ops.pool import pool_fusion

_HAS_GPU = torch.cuda.is_available()
_BUILT_CUDA = bool(lf.build_info().get("with_cuda", False))
pytestmark = [
    pytest.mark.skipif(not _HAS_GPU, reason="no CUDA GPU: the CUDA kernels cannot run here"),
    pytest.mark.skipif(
        _HAS_GPU and not _BUILT_CUDA,
        reason="no CUDA GPU kernels in this build (lorafusion_ext built without CUDA: rebuild "
        "with a CUDA torch and nvcc, pip install --no-build-isolation .)",
    ),
]

DEV = "cuda"
PAPER = lf.HardwareConfig.preset("pcm_paper").replace(mapping=Mapping_("row", 1.0))
SMOOTH = PAPER.replace(dac=DAC(None, 1.0), adc=ADC(None, None), out_noise=0.0, modifier=Modifier("none"))
CONFIGS = {
    "paper": PAPER,
    "per_row": PAPER.replace(bound_management=BoundManagement("iterative_per_row")),
    "no_bm": PAPER.replace(bound_management=BoundManagement("none")),
    "tiled": PAPER.replace(tiles=Tiles(96, 80)),
    "tiled_per_row": PAPER.replace(tiles=Tiles(96, 80), bound_management=BoundManagement("iterative_per_row")),
}


@contextlib.contextmanager
def tf32(enabled: bool):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _weights(n, k, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g, dtype=dtype)
    ms = w.abs().amax(1)
    return w / ms[:, None], ms


def _scales(ms, k, hw):
    layout = lf.nn.TileLayout.of(k, ms.shape[0], hw)
    return ms.expand(layout.n_in, -1)[None].contiguous()


def _both(x, wn, ms, hw, rng=(5, 3), bias=None, **kw):
    """The op on the CPU and on the GPU with identical inputs; returns (cpu, cuda-on-cpu) pairs."""
    scales = _scales(ms, wn.shape[1], hw)
    out = []
    for dev in ("cpu", DEV):
        b = None if bias is None else bias.to(dev)
        extra = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        y, aux = lf.ops.crossbar_mvm(x.to(dev), wn.to(dev), scales.to(dev), b, torch.tensor(rng, device=dev),
                                     hw, return_aux=True, **extra)
        out.append((y.cpu(), aux.passes.cpu(), aux.input_scales.cpu()))
    return out


def _adc_mismatch_rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of outputs whose ADC level differs: differences far above GEMM rounding."""
    tol = 1e-4 * max(1.0, float(a.abs().max()))
    return float(((a - b).abs() > tol).float().mean())


# ------------------------------------------------------------------------------- RNG identity
def test_philox_normal_is_bit_identical_on_cpu_and_gpu():
    for rng in ([2**40 + 123, 7], [1, 0], [-5, 2**33 + 9]):
        for stream, p, tile in ((0, 0, 0), (0, 3, 2), (1, 0, 0)):
            for start, count in ((0, 4099), (3, 1001), (1, 2), (4 * (2**32 - 5) + 2, 97)):
                cpu = torch.ops.lorafusion.philox_normal(torch.tensor(rng), stream, p, tile, start, count)
                gpu = torch.ops.lorafusion.philox_normal(torch.tensor(rng, device=DEV), stream, p, tile, start, count)
                assert torch.equal(cpu, gpu.cpu()), (rng, stream, p, tile, start, count)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("training", [False, True])
def test_noise_only_outputs_are_identical(name, training):
    # W = 0: y is pure output noise through the ADC and periphery, no GEMM order involved.
    hw = CONFIGS[name]
    x = torch.randn(67, 200, generator=torch.Generator().manual_seed(1))
    wn, ms = torch.zeros(150, 200), torch.rand(150, generator=torch.Generator().manual_seed(2)) + 0.5
    (yc, pc, sc), (yg, pg, sg) = _both(x, wn, ms, hw, training=training)
    assert torch.equal(pc, pg) and torch.equal(sc, sg)
    assert torch.equal(yc, yg)


def test_modifier_noise_is_identical():
    # Training modifier only (no DAC/ADC/output noise, x = one-hot rows): y reads W~ back.
    hw = SMOOTH.replace(modifier=Modifier("add_normal", 0.067))
    wn, ms = _weights(64, 48, 3)
    x = torch.eye(48)
    (yc, _, _), (yg, _, _) = _both(x, wn, torch.ones(64), hw, training=True)
    assert torch.equal(yc, yg)


# ------------------------------------------------------------------------------- crossbar parity
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_crossbar_cpu_vs_cuda_same_seed(name, training, allow_tf32):
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(7)
    wn, ms = _weights(256, 192, 8)
    x = torch.randn(300, 192, generator=g)
    x[5] = 0
    bias = torch.randn(256, generator=g)
    with tf32(allow_tf32):
        (yc, pc, sc), (yg, pg, sg) = _both(x, wn, ms, hw, bias=bias, training=training)
    assert yg.isfinite().all()
    # Bound management decisions hinge on the bound test: a GEMM-order flip may change a pass
    # count, but only for a handful of rows.
    assert float((pc != pg).float().mean()) < 0.01
    same = (pc == pg).all(0)
    rate = _adc_mismatch_rate(yc[same], yg[same])
    limit = 1e-4 if not allow_tf32 else 5e-2  # TF32 rounds the operands to 10-bit mantissas
    assert rate < limit, f"ADC-level mismatch rate {rate:.2e}"
    if not allow_tf32:
        close = (yc - yg).abs() <= 1e-4 * yc.abs().max()
        torch.testing.assert_close(yg[close], yc[close], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_crossbar_float64_with_injected_noise(name):
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(9)
    wn, ms = _weights(70, 130, 10, torch.float64)
    x = torch.randn(33, 130, generator=g, dtype=torch.float64)
    tin = lf.nn.TileLayout.of(130, 70, hw).n_in
    noise_out = torch.randn(hw.max_passes, tin, 33, 70, generator=g, dtype=torch.float64)
    noise_w = torch.randn(70, 130, generator=g, dtype=torch.float64)
    (yc, pc, _), (yg, pg, _) = _both(x, wn, ms, hw, training=True, noise_out=noise_out, noise_weight=noise_w)
    assert torch.equal(pc, pg)
    assert _adc_mismatch_rate(yc, yg) == 0.0
    torch.testing.assert_close(yg, yc, rtol=1e-12, atol=1e-12)


def test_bound_management_passes_agree():
    hw = CONFIGS["per_row"].replace(out_noise=0.0)
    wn, ms = _weights(32, 256, 5)
    wn = wn.abs().contiguous()
    wn[:, ::2] *= -1
    x = torch.randn(6, 256, generator=torch.Generator().manual_seed(6))
    x[2] = torch.rand(256).sign() * wn[0].sign()  # saturates: several passes
    for mode in ("iterative_per_row", "iterative_global"):
        (yc, pc, sc), (yg, pg, sg) = _both(x, wn, ms, hw.replace(bound_management=BoundManagement(mode)))
        assert int(pc.max()) > 1
        assert torch.equal(pc, pg) and torch.equal(sc, sg)
        torch.testing.assert_close(yg, yc, rtol=1e-5, atol=1e-5)


def _ranged_both(x, wn, ms, hw, ranges, training):
    """The op with learned input ranges fused into the DAC loop (no gradient), CPU and GPU."""
    scales = _scales(ms, wn.shape[1], hw)
    params = op_kwargs(hw)["params"]
    return [crossbar_mvm_inference(x.to(dev), wn.to(dev), scales.to(dev), None, torch.tensor([5, 3], device=dev),
                                   params, training=training, input_range=ranges.to(dev)).cpu()
            for dev in ("cpu", DEV)]


def _tile_ranges(hw, k, n, seed):
    layout = lf.nn.TileLayout.of(k, n, hw)
    r = 0.5 + 2 * torch.rand(layout.n_in, layout.n_out, generator=torch.Generator().manual_seed(seed))
    r[0, -1] = -r[0, -1]  # clamped at |r|, divided by r: the sign cancels
    return r


@pytest.mark.parametrize("name", ["paper", "tiled", "tiled_per_row"])
@pytest.mark.parametrize("training", [False, True])
def test_fused_input_ranges_noise_only_identical(name, training):
    # W = 0: the output is the output noise scaled by the noise management of the ranged input
    # and by the range's periphery factor: no GEMM order, so bit for bit. Rows from 0.05 to 3
    # times a normal: some clip at every range, some at none, so the abs-max reads the range.
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(67, 200, generator=g) * torch.linspace(0.05, 3.0, 67)[:, None]
    wn, ms = torch.zeros(150, 200), torch.rand(150, generator=torch.Generator().manual_seed(2)) + 0.5
    yc, yg = _ranged_both(x, wn, ms, hw, _tile_ranges(hw, 200, 150, 3), training)
    assert torch.equal(yc, yg)


@pytest.mark.parametrize("name", ["paper", "tiled", "tiled_per_row"])
def test_fused_input_ranges_cpu_vs_cuda(name):
    hw = CONFIGS[name]
    g = torch.Generator().manual_seed(7)
    wn, ms = _weights(256, 192, 8)
    x = torch.randn(300, 192, generator=g) * torch.linspace(0.05, 3.0, 300)[:, None]
    with tf32(False):
        yc, yg = _ranged_both(x, wn, ms, hw, _tile_ranges(hw, 192, 256, 4), training=False)
    assert yg.isfinite().all()
    rate = _adc_mismatch_rate(yc, yg)
    assert rate < 1e-3, f"ADC-level mismatch rate {rate:.2e}"


def test_layer_with_ranges_fused_equals_its_graph_on_cuda():
    # AnalogLinear on the GPU: without gradient the ranges run in the CUDA kernel's DAC loop (one
    # call), with gradient in PyTorch around one call per output-tile column: the same values.
    from lorafusion_ext.hardware import InputRange, NoiseManagement

    hw = PAPER.replace(out_noise=0.0, modifier=Modifier("none"), tiles=Tiles(64, 40),
                       noise_management=NoiseManagement("abs_max"), input_range=InputRange(init_from_data=0))
    torch.manual_seed(0)
    layer = lf.nn.AnalogLinear(150, 90, hardware=hw, seed=0).to(DEV).eval()
    with torch.no_grad():
        layer.input_range.copy_(_tile_ranges(hw, 150, 90, 5).to(DEV))
    x = (torch.randn(33, 150, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.05, 3.0, 33)[:, None]).to(DEV)
    with tf32(False):
        with torch.no_grad():
            fused = layer(x)
        graph = layer(x)
    assert graph.requires_grad
    torch.testing.assert_close(fused, graph.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["paper", "tiled", "tiled_per_row"])
def test_backward_cpu_vs_cuda(name):
    hw = CONFIGS[name].replace(out_noise=0.0)
    wn, ms = _weights(60, 120, 11, torch.float64)
    x = torch.randn(40, 120, dtype=torch.float64)
    g = torch.randn(40, 60, dtype=torch.float64)
    grads = []
    for dev in ("cpu", DEV):
        xd = x.to(dev).requires_grad_(True)
        wd = wn.to(dev).requires_grad_(True)
        y = lf.ops.crossbar_mvm(xd, wd, _scales(ms, 120, hw).to(dev), None, torch.tensor([3, 1], device=dev), hw,
                                training=True)
        grads.append([t.cpu() for t in torch.autograd.grad(y, (xd, wd), g.to(dev))])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["paper", "tiled", "tiled_per_row"])
@pytest.mark.parametrize("read", ["same", "per_row_6bit", "no_bm"])
def test_backward_read_cpu_vs_cuda(name, read):
    """The backward read (HardwareConfig.backward): the same draws of its output noise on both
    devices (stream 6), outputs equal up to the GEMMs' summation order (float64)."""
    from lorafusion_ext.hardware import NoiseManagement, Periphery

    base = CONFIGS[name]
    back = {"same": base.forward_periphery,
            "per_row_6bit": Periphery.with_bits(6, Periphery(bound_management=BoundManagement("iterative_per_row"))),
            "no_bm": Periphery(out_noise=0.05, noise_management=NoiseManagement("max"),
                               bound_management=BoundManagement("none"))}[read]
    hw = base.replace(out_noise=0.0, backward=back)
    wn, ms = _weights(60, 120, 11, torch.float64)
    x = torch.randn(40, 120, dtype=torch.float64)
    g = torch.randn(40, 60, dtype=torch.float64)
    g[:, :2] *= 30.0  # saturating columns: bound management acts
    grads = []
    for dev in ("cpu", DEV):
        xd = x.to(dev).requires_grad_(True)
        y = lf.ops.crossbar_mvm(xd, wn.to(dev), _scales(ms, 120, hw).to(dev), None, torch.tensor([3, 1], device=dev),
                                hw, training=True)
        grads.append(torch.autograd.grad(y, xd, g.to(dev))[0].cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------- torch integration
@pytest.mark.parametrize("hw", [SMOOTH, SMOOTH.replace(tiles=Tiles(7, 5)), lf.HardwareConfig.preset("ideal")],
                         ids=["smooth", "smooth_tiled", "ideal"])
def test_gradcheck_cuda_float64(hw):
    wn, ms = _weights(9, 13, 9, torch.float64)
    x = torch.randn(6, 13, dtype=torch.float64, device=DEV, requires_grad=True)
    w = wn.to(DEV).requires_grad_(True)
    b = torch.randn(9, dtype=torch.float64, device=DEV, requires_grad=True)
    scales = _scales(ms, 13, hw).to(DEV)

    def f(x, w, b):
        return lf.ops.crossbar_mvm(x, w, scales, b, torch.tensor([0, 0], device=DEV), hw)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_opcheck_cuda():
    wn, ms = _weights(9, 13, 10, torch.float64)
    x = torch.randn(6, 13, dtype=torch.float64, device=DEV, requires_grad=True)
    for hw, training in ((SMOOTH, False), (PAPER, True), (PAPER.replace(tiles=Tiles(5, 4)), False)):
        args = (x, wn.to(DEV), _scales(ms, 13, hw).to(DEV), torch.zeros(9, dtype=torch.float64, device=DEV),
                torch.tensor([5, 1], device=DEV))
        kwargs = dict(op_kwargs(hw), training=training, need_aux=True)
        torch.library.opcheck(torch.ops.lorafusion.crossbar_mvm.default, args, kwargs)
    xp, A, B, c, ids = _pool_inputs(T=3, dtype=torch.float64, grad=True)
    torch.library.opcheck(torch.ops.lorafusion.pool_fusion.default, (xp, A, B, c, ids),
                          dict(scale=0.5, mode="sum"))


def _model(hw):
    torch.manual_seed(0)
    return nn.Sequential(
        lf.nn.AnalogLinear(24, 48, hardware=hw, seed=1), nn.ReLU(), lf.nn.AnalogLinear(48, 8, hardware=hw, seed=2)
    )


@pytest.mark.parametrize("training", [False, True])
def test_torch_compile_cuda_matches_eager(training):
    torch._dynamo.reset()
    eager = _model(PAPER).to(DEV).train(training)
    compiled_src = copy.deepcopy(eager)
    compiled = torch.compile(compiled_src, fullgraph=True)
    x = torch.randn(2, 5, 24, device=DEV, requires_grad=training)
    for _ in range(2):
        ye, yc = eager(x), compiled(x)
        assert torch.equal(ye, yc)
        if training:
            ge = torch.autograd.grad(ye.sum(), x)[0]
            gc = torch.autograd.grad(yc.sum(), x)[0]
            assert torch.equal(ge, gc)
    assert torch.equal(eager[0].rng_state, compiled_src[0].rng_state)


def test_cuda_graph_replay_draws_fresh_noise():
    # (seed, offset) live in device memory: bumping the offset in place between replays changes
    # the noise, and each replay equals an eager call with the same (seed, offset).
    hw = PAPER
    wn, ms = _weights(64, 96, 12)
    x = torch.randn(32, 96, device=DEV)
    w, scales = wn.to(DEV), _scales(ms, 96, hw).to(DEV)
    rng = torch.tensor([21, 0], device=DEV)
    lf.ops.crossbar_mvm(x, w, scales, None, rng, hw)  # warm-up (workspace in the pool)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = lf.ops.crossbar_mvm(x, w, scales, None, rng, hw)
    outs = []
    for offset in (0, 1, 2):
        rng[1] = offset
        graph.replay()
        torch.cuda.synchronize()
        outs.append(y.clone())
        eager = lf.ops.crossbar_mvm(x, w, scales, None, torch.tensor([21, offset], device=DEV), hw)
        assert torch.equal(outs[-1], eager)
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])


def test_bad_device_inputs():
    wn, ms = _weights(10, 12, 12)
    x = torch.randn(4, 12, device=DEV)
    with pytest.raises(RuntimeError, match="weight is on cpu but x is on cuda"):
        torch.ops.lorafusion.crossbar_mvm(x, wn, _scales(ms, 12, PAPER).to(DEV), None, torch.tensor([0, 0]),
                                          **op_kwargs(PAPER), training=False, need_aux=False)
    with pytest.raises(RuntimeError, match="x is not contiguous"):
        lf.ops.crossbar_mvm(torch.randn(12, 4, device=DEV).t(), wn.to(DEV), _scales(ms, 12, PAPER).to(DEV), None,
                            torch.tensor([0, 0], device=DEV), PAPER)


# ------------------------------------------------------------------------------- pool fusion
def _pool_inputs(M=37, K=5, r=4, d_in=24, d_out=20, T=None, dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d_in, generator=g, dtype=dtype)
    A = torch.randn(K, r, d_in, generator=g, dtype=dtype)
    B = torch.randn(K, d_out, r, generator=g, dtype=dtype)
    c = torch.randn(K if T is None else (T, K), generator=g, dtype=dtype)
    ids = None if T is None else torch.randint(0, T, (M,), generator=g)
    out = [t.to(DEV) for t in (x, A, B, c)] + [None if ids is None else ids.to(DEV)]
    if grad:
        for t in out[:4]:
            t.requires_grad_(True)
    return tuple(out)


@pytest.mark.parametrize("mode", ["sum", "lorahub"])
@pytest.mark.parametrize("tasks", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(37, 5, 4, 24, 20), (130, 3, 5, 37, 29)], ids=["aligned", "odd"])
def test_pool_fusion_cpu_vs_cuda(mode, tasks, dtype, shape):
    M, K, r, d_in, d_out = shape
    inputs = _pool_inputs(M, K, r, d_in, d_out, T=tasks, dtype=dtype)
    cpu_inputs = tuple(None if t is None else t.detach().cpu().requires_grad_(t.requires_grad) for t in inputs)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    results = []
    with tf32(False):
        for x, A, B, c, ids in (inputs, cpu_inputs):
            y = pool_fusion(x, A, B, c, scale=1.3, mode=mode, task_ids=ids)
            g = torch.ones_like(y) + torch.arange(y.numel(), device=y.device, dtype=y.dtype).view_as(y) / y.numel()
            results.append([y.detach().cpu()] + [t.cpu() for t in torch.autograd.grad(y, (x, A, B, c), g)])
    for name, a, b in zip(("y", "x", "A", "B", "coeffs"), results[1], results[0]):
        torch.testing.assert_close(b, a, **tol, msg=lambda m: f"{name}: {m}")


def test_pool_fusion_tf32_close():
    x, A, B, c, ids = _pool_inputs(256, 8, 16, 256, 256, T=4, dtype=torch.float32, grad=False)
    with tf32(True):
        y = pool_fusion(x, A, B, c, scale=0.5, mode="sum", task_ids=ids)
    with tf32(False):
        ref = pool_fusion(x, A, B, c, scale=0.5, mode="sum", task_ids=ids)
    assert float((y - ref).norm() / ref.norm()) < 5e-3


def test_pool_fusion_gradcheck_cuda():
    for mode, tasks in (("sum", 2), ("lorahub", None), ("lorahub", 2)):
        x, A, B, c, ids = _pool_inputs(6, 3, 2, 5, 4, T=tasks)
        assert torch.autograd.gradcheck(lambda x, A, B, c: pool_fusion(x, A, B, c, scale=0.7, mode=mode, task_ids=ids),
                                        (x, A, B, c))


def test_pool_fusion_torch_compile_cuda():
    torch._dynamo.reset()
    x, A, B, c, ids = _pool_inputs(16, 4, 3, 12, 10, T=2, dtype=torch.float32)
    f = torch.compile(lambda x, c: pool_fusion(x, A, B, c, scale=2.0, mode="lorahub", task_ids=ids), fullgraph=True)
    ye = pool_fusion(x, A, B, c, scale=2.0, mode="lorahub", task_ids=ids)
    yc = f(x, c)
    assert torch.equal(ye, yc)
    ge = torch.autograd.grad(ye.sum(), (x, c))
    gc = torch.autograd.grad(yc.sum(), (x, c))
    for a, b in zip(ge, gc):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("training", [False, True])
def test_half_on_cuda_is_the_float32_path_rounded_once(dtype, training):
    """bf16 / fp16 through the CUDA path: the float32 CUDA kernel, rounded once (exactly), and the
    CPU's float32 path rounded once up to the GEMM-order ADC mismatch; gradients in the dtype."""
    hw = CONFIGS["paper"]
    g = torch.Generator().manual_seed(12)
    wn, ms = _weights(256, 192, 13)
    x = torch.randn(300, 192, generator=g).to(dtype)
    scales = _scales(ms, 192, hw)
    rng = torch.tensor([5, 3])
    xg = x.to(DEV).requires_grad_(True)
    wg = wn.to(dtype).to(DEV)
    with tf32(False):
        y = lf.ops.crossbar_mvm(xg, wg, scales.to(DEV), None, rng.to(DEV), hw, training=training)
        yf = lf.ops.crossbar_mvm(x.float().to(DEV), wg.float(), scales.to(DEV), None, rng.to(DEV), hw,
                                 training=training)
    assert y.dtype == dtype and torch.equal(y, yf.to(dtype))
    yc, aux_c = lf.ops.crossbar_mvm(x.float(), wn.to(dtype).float(), scales, None, rng, hw, training=training,
                                    return_aux=True)
    _, aux_g = lf.ops.crossbar_mvm(x.float().to(DEV), wg.float(), scales.to(DEV), None, rng.to(DEV), hw,
                                   training=training, return_aux=True)
    same = (aux_c.passes == aux_g.passes.cpu()).all(0)
    # Rounded once, CPU and GPU differ only where the ADC level differs (GEMM order) or a 1-ulp
    # float32 difference straddles a rounding boundary of the half type: both rare.
    assert float((yc.to(dtype)[same] != y.cpu()[same]).float().mean()) < 1e-3
    (gx,) = torch.autograd.grad(y, (xg,), torch.ones_like(y))
    assert gx.dtype == dtype

    K, r, d_in, d_out = 3, 4, 192, 64
    A = (torch.randn(K, r, d_in, generator=g) * 0.1).to(dtype)
    B = (torch.randn(K, d_out, r, generator=g) * 0.1).to(dtype)
    c = torch.randn(K, generator=g).to(dtype)
    with tf32(False):
        dy = lf.ops.pool_fusion(x.to(DEV), A.to(DEV), B.to(DEV), c.to(DEV), scale=2.0)
        dyf = lf.ops.pool_fusion(x.float().to(DEV), A.float().to(DEV), B.float().to(DEV), c.float().to(DEV), scale=2.0)
    assert dy.dtype == dtype and torch.equal(dy, dyf.to(dtype))
