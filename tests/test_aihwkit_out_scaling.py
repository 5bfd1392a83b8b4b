"""Learned out-scaling per tile against AIHWKIT 1.1's tiled layer (TileModuleArray).

Every tile (input tile i, output tile o) has its own trainable scale, one value or one per
output row; outputs, the alphas' gradients and a few SGD steps are bit-exact.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.hardware import Mapping_, Modifier, Tiles

pytest.importorskip("aihwkit")
from aihwkit_harness import aihwkit_layer, alpha_grads, freeze_analog_weights, set_alphas  # noqa: E402

DET = lf.HardwareConfig.preset("pcm_paper").replace(out_noise=0.0, modifier=Modifier("none"))


def _hw(tiles: Tiles, columnwise: bool) -> lf.HardwareConfig:
    return DET.replace(
        tiles=tiles,
        mapping=Mapping_("row", 1.0, learn_out_scaling=True, out_scaling_columnwise=columnwise),
    )


def _pair(in_f: int, out_f: int, hw: lf.HardwareConfig, seed: int = 0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0)
    ref = aihwkit_layer(lin, hw.to_aihwkit())
    alpha = 0.5 + torch.rand(ours.out_scaling.shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ours.out_scaling.copy_(alpha)
    set_alphas(ref, alpha, hw.mapping.out_scaling_columnwise)
    return ours, ref


def _ref_params(ref: nn.Module) -> list[nn.Parameter]:
    # Digital parameters only (AIHWKIT's AnalogContext stands for the frozen tile weights).
    return [p for p in ref.parameters() if p.requires_grad and type(p).__name__ != "AnalogContext"]


CASES = [
    (Tiles(None, None), 150, 90),
    (Tiles(64, None), 150, 90),
    (Tiles(64, 40), 150, 90),
    (Tiles(None, 40), 150, 90),
]
IDS = ["one_tile", "3_in_tiles", "3x3_tiles", "3_out_tiles"]


@pytest.mark.parametrize("columnwise", [False, True], ids=["per_tile", "columnwise"])
@pytest.mark.parametrize("tiles,in_f,out_f", CASES, ids=IDS)
def test_shape_and_eval_forward_are_aihwkit(tiles, in_f, out_f, columnwise):
    hw = _hw(tiles, columnwise)
    ours, ref = _pair(in_f, out_f, hw)
    n_in, n_out = ours.layout.n_in, ours.layout.n_out
    assert ours.out_scaling.shape == ((n_in, out_f) if columnwise else (n_in, n_out))
    ours.eval(), ref.eval()
    x = torch.randn(4, 7, in_f, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(a, b), f"max |diff| = {(a - b).abs().max().item()}"
    # With gradients on, the scales go through the per-input-tile path: the same values.
    a2 = ours(x)
    assert a2.requires_grad and torch.equal(a2.detach(), b)


@pytest.mark.parametrize("columnwise", [False, True], ids=["per_tile", "columnwise"])
@pytest.mark.parametrize("tiles,in_f,out_f", CASES, ids=IDS)
def test_alpha_gradients_and_sgd_steps_are_aihwkit(tiles, in_f, out_f, columnwise):
    hw = _hw(tiles, columnwise)
    ours, ref = _pair(in_f, out_f, hw, seed=4)
    ours.weight.requires_grad_(False)
    freeze_analog_weights(ref)
    ours.train(), ref.train()
    opt_o = torch.optim.SGD([ours.out_scaling, ours.bias], lr=0.05)
    ref_params = _ref_params(ref)
    assert len(ref_params) == ours.layout.n_in * ours.layout.n_out + 1
    opt_r = torch.optim.SGD(ref_params, lr=0.05)
    g = torch.Generator().manual_seed(5)
    for step in range(3):
        x = torch.randn(2, 6, in_f, generator=g)
        target = torch.randn(2, 6, out_f, generator=g)
        opt_o.zero_grad(), opt_r.zero_grad()
        yo, yr = ours(x), ref(x)
        assert torch.equal(yo, yr), f"step {step}: max |diff| = {(yo - yr).abs().max().item()}"
        ((yo - target) ** 2).mean().backward()
        ((yr - target) ** 2).mean().backward()
        ga = alpha_grads(ref, columnwise)
        assert torch.equal(ours.out_scaling.grad, ga), (
            f"step {step}: alpha grad max |diff| = {(ours.out_scaling.grad - ga).abs().max().item()}"
        )
        bias_ref = ref.analog_module.bias if hasattr(ref.analog_module, "array") else ref.analog_module.bias
        assert torch.equal(ours.bias.grad, bias_ref.grad)
        opt_o.step(), opt_r.step()
    ours.eval(), ref.eval()
    x = torch.randn(5, in_f, generator=g)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_minilm_ffn_with_paper_tiles_converts_and_trains():
    # The HWA-LoRA paper's AIHWKIT config on MiniLM's 1536 -> 384 FFN: 512x512 tiles (3 input tiles).
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.mapping.learn_out_scaling = True
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.forward.out_noise = 0.0
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    torch.manual_seed(6)
    lin = nn.Linear(1536, 384)
    ours = lf.nn.AnalogLinear.from_linear(lin, hw, seed=0)
    ref = aihwkit_layer(lin, rpu)
    assert ours.layout.n_in == 3 and ours.out_scaling.shape == (3, 1)
    alpha = 0.5 + torch.rand(3, 1, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours.out_scaling.copy_(alpha)
    set_alphas(ref, alpha, False)
    x = torch.randn(3, 5, 1536, generator=torch.Generator().manual_seed(8))
    yo, yr = ours.train()(x), ref.train()(x)
    assert torch.equal(yo, yr)
    yo.square().sum().backward()
    yr.square().sum().backward()
    assert torch.equal(ours.out_scaling.grad, alpha_grads(ref, False))


def test_legacy_out_scaling_state_loads_per_tile():
    hw = _hw(Tiles(None, None), True)
    layer = lf.nn.AnalogLinear(8, 4, hardware=hw, seed=0)
    state = layer.state_dict()
    state["out_scaling"] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    layer.load_state_dict(state)
    assert torch.equal(layer.out_scaling, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
