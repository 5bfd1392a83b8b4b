"""AnalogLinear as a drop-in for nn.Linear: construction, state, devices, modes, seeds."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Mapping_, Modifier, Tiles

PAPER = lf.HardwareConfig.preset("pcm_paper")


def test_from_linear_copies_weights_and_keeps_flags():
    lin = nn.Linear(20, 10)
    lin.weight.requires_grad_(False)
    layer = lf.nn.AnalogLinear.from_linear(lin, PAPER.replace(mapping=Mapping_("row", 1.0)))
    assert torch.equal(layer.weight, lin.weight) and torch.equal(layer.bias, lin.bias)
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    assert isinstance(layer, nn.Linear)


def test_paper_preset_clips_to_the_fixed_point_once_at_conversion():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, bias=False)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02)
        lin.weight[torch.arange(32), torch.randint(0, 64, (32,))] = 1.0  # one outlier per row
    layer = lf.nn.AnalogLinear.from_linear(lin, PAPER)
    assert layer.weight.abs().max() < 0.2  # outliers clipped at 3 sigma of the tile
    # Non-outliers are untouched, and converting again changes nothing (a fixed point).
    small = lin.weight.abs() < 0.05
    torch.testing.assert_close(layer.weight[small], lin.weight[small], rtol=1e-6, atol=0)
    again = lf.nn.AnalogLinear.from_linear(layer, PAPER)
    torch.testing.assert_close(again.weight, layer.weight, rtol=1e-6, atol=0)
    # Without clip_sigma the weights are copied as they are.
    plain = lf.nn.AnalogLinear.from_linear(lin, PAPER.replace(mapping=Mapping_("row", 1.0)))
    assert torch.equal(plain.weight, lin.weight)


@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 3, 7), (2, 1, 3, 7)])
def test_any_number_of_leading_dims(shape):
    layer = lf.nn.AnalogLinear(7, 5, hardware=PAPER, seed=0).eval()
    y = layer(torch.randn(*shape))
    assert y.shape == (*shape[:-1], 5)


def test_ideal_preset_matches_linear_forward_and_backward():
    torch.manual_seed(1)
    lin = nn.Linear(16, 12)
    layer = lf.nn.AnalogLinear.from_linear(lin, lf.HardwareConfig.preset("ideal"))
    x = torch.randn(5, 16, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer(x).square().sum().backward()
    lin(x2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, lin.weight.grad)
    torch.testing.assert_close(layer.bias.grad, lin.bias.grad)


def test_train_applies_modifier_eval_does_not():
    hw = PAPER.replace(out_noise=0.0)
    layer = lf.nn.AnalogLinear(16, 8, hardware=hw, seed=3)
    x = torch.randn(4, 16)
    with torch.no_grad():
        layer.eval()
        assert torch.equal(layer(x), layer(x))
        layer.train()
        assert not torch.equal(layer(x), layer(x))


def test_seed_and_generator_reproducibility():
    x = torch.randn(6, 10)
    a = lf.nn.AnalogLinear(10, 4, hardware=PAPER, seed=42)
    b = lf.nn.AnalogLinear(10, 4, hardware=PAPER, seed=42)
    with torch.no_grad():
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)
        assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))
        c = lf.nn.AnalogLinear(10, 4, hardware=PAPER, generator=torch.Generator().manual_seed(5))
        d = lf.nn.AnalogLinear(10, 4, hardware=PAPER, generator=torch.Generator().manual_seed(5))
        assert torch.equal(c.rng_state, d.rng_state)
        first = a.manual_seed(9)(x)
        assert torch.equal(a.manual_seed(9)(x), first)


def test_state_dict_round_trip_and_hardware_restored():
    hw = PAPER.replace(tiles=Tiles(8, 6))
    src = lf.nn.AnalogLinear(20, 10, hardware=hw, seed=1).eval()
    src(torch.randn(2, 20))
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = lf.nn.AnalogLinear(20, 10, hardware=PAPER, seed=2).eval()
    dst.load_state_dict(torch.load(buf, weights_only=False))
    assert dst.hardware == hw and dst.layout.n_in == 3
    x = torch.randn(3, 20)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_deepcopy_and_to_dtype():
    layer = lf.nn.AnalogLinear(12, 6, hardware=PAPER, seed=4).eval()
    twin = copy.deepcopy(layer)
    x = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.equal(layer(x), twin(x))
    d = twin.to(torch.float64)
    assert d(x.double()).dtype == torch.float64


def test_module_bad_input_errors():
    with pytest.raises(ValueError, match="in_features = 0; expected a positive integer"):
        lf.nn.AnalogLinear(0, 3)
    with pytest.raises(ValueError, match="hardware is a str; expected a HardwareConfig"):
        lf.nn.AnalogLinear(3, 3, hardware="pcm_paper")
    with pytest.raises(ValueError, match="dtype torch.int32 is not supported; expected float32, float64, bfloat16"):
        lf.nn.AnalogLinear(3, 3, dtype=torch.int32)
    layer = lf.nn.AnalogLinear(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"expected \[..., 3\]"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match="input dtype torch.float64 differs"):
        layer(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty batch"):
        layer(torch.randn(0, 3))
    with pytest.raises(ValueError, match="expected nn.Linear"):
        lf.nn.AnalogLinear.from_linear(nn.Conv1d(1, 1, 1))


def test_non_contiguous_input_is_accepted_like_linear():
    layer = lf.nn.AnalogLinear(5, 3, hardware=lf.HardwareConfig.preset("ideal"))
    x = torch.randn(5, 4).t()
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_learned_out_scaling_is_trainable():
    hw = PAPER.replace(mapping=Mapping_("row", 1.0, learn_out_scaling=True, out_scaling_columnwise=True),
                       modifier=Modifier("none"))
    layer = lf.nn.AnalogLinear(8, 4, hardware=hw, seed=0)
    layer(torch.randn(3, 8)).sum().backward()
    assert layer.out_scaling.grad is not None and layer.out_scaling.grad.shape == (1, 4)  # [n_in_tiles, out]


def test_cached_mapping_follows_in_place_weight_edits():
    layer = lf.nn.AnalogLinear(16, 8, bias=False, hardware=PAPER.replace(out_noise=0.0), seed=0).eval()
    layer.weight.requires_grad_(False)
    x = torch.randn(4, 16)
    with torch.no_grad():
        before = layer(x)
        assert torch.equal(layer(x), before)  # served from the per-version cache
        layer.weight.mul_(2.0)
        after = layer(x)
        torch.testing.assert_close(after, 2 * before, rtol=0.05, atol=0.05)
        assert not torch.equal(after, before)
        layer.load_state_dict({**layer.state_dict(), "weight": layer.weight / 2})
        assert torch.equal(layer(x), before)


@pytest.mark.parametrize("hw", [PAPER, lf.HardwareConfig.preset("pcm_tiled").replace(tiles=Tiles(8, 4)),
                                PAPER.replace(mapping=Mapping_("row", 1.0, learn_out_scaling=True))],
                         ids=["paper", "tiled", "out_scaling"])
@pytest.mark.parametrize("programmed", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_no_grad_path_gives_the_bits_of_the_gradient_path(hw, programmed, training):
    # Generation runs under no_grad through a leaner path (operands built once per layer
    # state, one token at a time): same noise, same bits, same RNG counter as with gradients.
    torch.manual_seed(0)
    layer = lf.nn.AnalogLinear(12, 6, hardware=hw, seed=3)
    if layer.out_scaling is not None:
        with torch.no_grad():
            layer.out_scaling.uniform_(0.5, 1.5)
    if programmed:
        layer.program(torch.Generator().manual_seed(1)).drift(3600.0, torch.Generator().manual_seed(2))
    layer.train(training)
    twin = copy.deepcopy(layer)
    for m in (1, 5, 1):  # a prompt-like call between one-token calls
        x = torch.randn(2, m, 12)
        with torch.no_grad():
            fast = layer(x)
        slow = twin(x.clone().requires_grad_(True))
        assert torch.equal(fast, slow.detach())
        assert torch.equal(layer.rng_state, twin.rng_state)
    # An in-place edit (here of the bias) is seen by the next no-grad call.
    with torch.no_grad():
        layer.bias.add_(1.0)
        twin.bias.add_(1.0)
        x = torch.randn(1, 12)
        fast = layer(x)
    assert torch.equal(fast, twin(x.clone().requires_grad_(True)).detach())
