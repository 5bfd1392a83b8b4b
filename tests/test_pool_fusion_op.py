"""Tests of `lorafusion::pool_fusion`: parity with the plain-PyTorch reference (forward and
every gradient), gradcheck, opcheck, torch.compile, mixed-task batches and bad inputs."""

from __future__ import annotations

import pytest
import torch

from lorafusion_ext.ops.pool import pool_fusion
from lorafusion_ext.ops.reference_pool import pool_fusion_reference

MODES = ("sum", "lorahub")


def _inputs(M=9, K=4, r=3, d_in=11, d_out=7, T=None, dtype=torch.float64, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d_in, generator=g, dtype=dtype)
    A = torch.randn(K, r, d_in, generator=g, dtype=dtype)
    B = torch.randn(K, d_out, r, generator=g, dtype=dtype)
    c = torch.randn(K if T is None else (T, K), generator=g, dtype=dtype)
    ids = None if T is None else torch.randint(0, T, (M,), generator=g)
    if grad:
        for t in (x, A, B, c):
            t.requires_grad_(True)
    return x, A, B, c, ids


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tasks", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_forward_and_gradients(mode, tasks, dtype):
    x, A, B, c, ids = _inputs(T=tasks, dtype=dtype)
    y = pool_fusion(x, A, B, c, scale=1.7, mode=mode, task_ids=ids)
    y_ref = pool_fusion_reference(x, A, B, c, ids, scale=1.7, mode=mode)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, y_ref, **tol)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, A, B, c), g)
    grads_ref = torch.autograd.grad(y_ref, (x, A, B, c), g)
    for name, a, b in zip(("x", "A", "B", "coeffs"), grads, grads_ref):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tasks", [None, 2])
def test_gradcheck_float64(mode, tasks):
    x, A, B, c, ids = _inputs(M=5, K=3, r=2, d_in=4, d_out=3, T=tasks)
    fn = lambda x, A, B, c: pool_fusion(x, A, B, c, scale=0.5, mode=mode, task_ids=ids)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, A, B, c))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tasks", [None, 2])
def test_opcheck(mode, tasks):
    x, A, B, c, ids = _inputs(M=6, K=3, r=2, d_in=5, d_out=4, T=tasks, dtype=torch.float32)
    torch.library.opcheck(torch.ops.lorafusion.pool_fusion.default, (x, A, B, c, ids), {"scale": 2.0, "mode": mode})


def test_only_requested_gradients_and_frozen_pool():
    x, A, B, c, _ = _inputs(grad=False)
    c.requires_grad_(True)
    for mode in MODES:
        y = pool_fusion(x, A, B, c, scale=1.0, mode=mode)
        (gc,) = torch.autograd.grad(y.sum(), (c,))
        (gc_ref,) = torch.autograd.grad(pool_fusion_reference(x, A, B, c, scale=1.0, mode=mode).sum(), (c,))
        torch.testing.assert_close(gc, gc_ref)
        assert A.grad is None and B.grad is None


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    x, A, B, c, _ = _inputs(dtype=torch.float32)
    fn = torch.compile(lambda x, A, B, c: pool_fusion(x, A, B, c, scale=2.0, mode=mode).square().sum(), fullgraph=True)
    out = fn(x, A, B, c)
    gx, gc = torch.autograd.grad(out, (x, c))
    ref = pool_fusion_reference(x, A, B, c, scale=2.0, mode=mode).square().sum()
    rx, rc = torch.autograd.grad(ref, (x, c))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    # The gradients reach ~1e3 here, so an entry that cancels down to ~1 carries the float32
    # rounding of the large terms (~1e-4 seen on an Intel host): scale atol to the largest.
    for got, want in ((gx, rx), (gc, rc)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("mode", MODES)
def test_mixed_task_batch_equals_per_task_runs(mode):
    x, A, B, table, ids = _inputs(M=12, T=3, grad=False)
    y = pool_fusion(x, A, B, table, scale=1.3, mode=mode, task_ids=ids)
    for t in range(3):
        rows = ids == t
        y_t = pool_fusion(x[rows], A, B, table[t].contiguous(), scale=1.3, mode=mode)
        torch.testing.assert_close(y[rows], y_t, rtol=1e-12, atol=1e-12)


def test_task_ids_per_sample_broadcast_over_tokens():
    x, A, B, table, _ = _inputs(M=8, T=3, grad=False)
    x3 = x.reshape(2, 4, -1)
    ids = torch.tensor([2, 0])
    y = pool_fusion(x3, A, B, table, scale=1.0, mode="sum", task_ids=ids)
    for b in range(2):
        torch.testing.assert_close(y[b], pool_fusion(x3[b], A, B, table[ids[b]].contiguous(), scale=1.0, mode="sum"))


def test_lorahub_equals_merged_weight():
    x, A, B, c, _ = _inputs(grad=False)
    a_hat = torch.einsum("k,krd->rd", c, A)
    b_hat = torch.einsum("k,kor->or", c, B)
    y = pool_fusion(x, A, B, c, scale=0.25, mode="lorahub")
    torch.testing.assert_close(y, 0.25 * x @ (b_hat @ a_hat).t())


def test_single_adapter_unit_coefficient_is_plain_lora():
    x, A, B, _, _ = _inputs(K=1, grad=False)
    one = torch.ones(1, dtype=x.dtype)
    for mode in MODES:
        torch.testing.assert_close(pool_fusion(x, A, B, one, scale=2.0, mode=mode), 2.0 * (x @ A[0].t()) @ B[0].t())


def test_leading_dims_and_empty_batch():
    x, A, B, c, _ = _inputs(grad=False)
    y = pool_fusion(x.reshape(3, 3, -1), A, B, c, scale=1.0, mode="sum")
    assert y.shape == (3, 3, B.shape[1])
    empty = pool_fusion(x[:0], A, B, c, scale=1.0, mode="sum")
    assert empty.shape == (0, B.shape[1])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(B=a["B"][:-1]), r"B .*K, the number of adapters"),
        (lambda a: a.update(B=a["B"][:, :, :-1].contiguous()), r"B .*r, the rank of A"),
        (lambda a: a.update(A=a["A"][:, :, :-1].contiguous()), r"A .*d_in"),
        (lambda a: a.update(coeffs=a["coeffs"][:-1]), r"coeffs has shape .*expected \[4\]"),
        (lambda a: a.update(A=a["A"].float()), r"A has dtype Float but x has dtype Double"),
        (lambda a: a.update(x=a["x"].to(torch.int64)), r"x has dtype Long; expected float32 or float64"),
        (lambda a: a.update(A=a["A"].to("meta")), r"A is on meta but x is on cpu"),
        (lambda a: a.update(mode="avg"), r"mode = 'avg'; expected"),
        (lambda a: a.update(coeffs=torch.zeros(2, 4, dtype=torch.float64), task_ids=torch.tensor([0, 1, 2, 0, 0, 0, 0, 0, 0])),
         r"task_ids holds values in \[0, 2\]; expected indices into the 2 rows of coeffs"),
        (lambda a: a.update(coeffs=torch.zeros(2, 4, dtype=torch.float64), task_ids=torch.full((9,), -1)),
         r"task_ids holds values in \[-1, -1\]"),
        (lambda a: a.update(coeffs=torch.zeros(2, 4, dtype=torch.float64), task_ids=torch.zeros(9, dtype=torch.int32)),
         r"task_ids has dtype Int; expected int64"),
        (lambda a: a.update(task_ids=torch.zeros(9, dtype=torch.int64)), r"coeffs has shape .*a table \[T, K\] when task_ids"),
    ],
)
def test_bad_inputs_name_the_argument(mutate, match):
    x, A, B, c, _ = _inputs(grad=False)
    args = {"x": x, "A": A, "B": B, "coeffs": c, "task_ids": None, "mode": "sum"}
    mutate(args)
    with pytest.raises((RuntimeError, ValueError), match=match):
        pool_fusion(args["x"], args["A"], args["B"], args["coeffs"], scale=1.0, mode=args["mode"], task_ids=args["task_ids"])


def test_task_ids_shape_must_prefix_leading_dims():
    x, A, B, table, _ = _inputs(M=8, T=2, grad=False)
    with pytest.raises(ValueError, match="task_ids has shape"):
        pool_fusion(x.reshape(2, 4, -1), A, B, table, scale=1.0, mode="sum", task_ids=torch.zeros(4, dtype=torch.int64))
