"""drift_sweep: protocol, statistics, reports, reproducibility, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.evaluation import DEFAULT_TIMES, DriftSweepResult, drift_sweep, format_time
from lorafusion_ext.hardware import Device
from lorafusion_ext.nn import AnalogLinear, tile_state

TIMES = (0.0, 86400.0, 315360000.0)


def _model(hw: lf.HardwareConfig | None = None) -> tuple[nn.Module, nn.Module]:
    """(analog model, its digital twin) of two layers."""
    hw = hw or lf.HardwareConfig.preset("pcm_paper")
    torch.manual_seed(0)
    digital = nn.Sequential(nn.Linear(32, 48), nn.Tanh(), nn.Linear(48, 8)).eval()
    analog = nn.Sequential(
        AnalogLinear.from_linear(digital[0], hw, seed=1), nn.Tanh(), AnalogLinear.from_linear(digital[2], hw, seed=2)
    ).eval()
    return analog, digital


def _error_metric(digital: nn.Module):
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = digital(x)

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(x) - ref).norm() / ref.norm())

    return evaluate


def test_statistics_and_protocol():
    model, digital = _model()
    res = drift_sweep(model, _error_metric(digital), times=TIMES, trials=4, seed=3, metric="rel. error",
                      progress=False)
    assert isinstance(res, DriftSweepResult)
    assert res.times == TIMES and res.trials == 4 and len(res.values) == 4
    vals = np.asarray(res.values)
    assert vals.shape == (4, 3) and np.isfinite(vals).all()
    np.testing.assert_allclose(res.mean, vals.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(res.std, vals.std(axis=0, ddof=1), rtol=1e-12)
    # Trials differ (fresh noise) and the error grows from 0 s to 10 years.
    assert all(s > 0 for s in res.std)
    assert res.mean[0] < res.mean[-1]


def test_reproducible_and_leaves_model_as_found():
    model, digital = _model()
    evaluate = _error_metric(digital)
    model[0].program(torch.Generator().manual_seed(5))  # a programmed layer beside an unprogrammed one
    model[2].train()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    a = drift_sweep(model, evaluate, times=TIMES, trials=2, seed=11, progress=False)
    after = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tile_state.is_programmed(model[0]) and not tile_state.is_programmed(model[2])
    assert model[2].training and not model[0].training and not model.training
    b = drift_sweep(model, evaluate, times=TIMES, trials=2, seed=11, progress=False)
    assert a.values == b.values
    c = drift_sweep(model, evaluate, times=TIMES, trials=2, seed=12, progress=False)
    assert a.values != c.values


def _programming_fingerprints(reprogram: bool) -> list[list[float]]:
    model, _ = _model()
    seen: list[float] = []

    def evaluate(m: nn.Module) -> float:
        w = tile_state.programmed_state(m[0]).tile(0, 0).weights
        seen.append(float(w.sum()))
        return float(m[0].programmed_weight.sum())

    res = drift_sweep(model, evaluate, times=TIMES, trials=3, reprogram_each_trial=reprogram, seed=0,
                      progress=False)
    assert len(seen) == 9
    per_trial = [seen[i * 3:(i + 1) * 3] for i in range(3)]
    # Within a trial every time drifts from the same programmed state, and draws fresh read noise.
    assert all(len(set(row)) == 1 for row in per_trial)
    assert all(len(set(row)) == 3 for row in res.values)
    return per_trial


def test_reprogram_each_trial_vs_shared_programming():
    fresh = _programming_fingerprints(True)
    assert len({row[0] for row in fresh}) == 3  # a programming draw per trial
    shared = _programming_fingerprints(False)
    assert len({row[0] for row in shared}) == 1  # the paper's protocol: one draw for all trials


def test_gdc_reduces_the_error_in_a_sweep():
    model, digital = _model()
    no_gdc, _ = _model(lf.HardwareConfig.preset("pcm_paper").replace(device=Device("pcm", drift_compensation=False)))
    evaluate = _error_metric(digital)
    with_gdc = drift_sweep(model, evaluate, times=(315360000.0,), trials=3, seed=1, progress=False)
    without = drift_sweep(no_gdc, evaluate, times=(315360000.0,), trials=3, seed=1, progress=False)
    assert with_gdc.mean[0] < 0.5 * without.mean[0]


def test_reports(tmp_path):
    model, digital = _model()
    res = drift_sweep(model, _error_metric(digital), trials=2, seed=0, metric="rel. error", progress=False)
    assert res.times == DEFAULT_TIMES
    md = res.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| time | rel. error (mean) | std |"
    labels = [line.split("|")[1].strip() for line in lines[2:9]]
    assert labels == ["0 s", "1 h", "1 d", "1 w", "30 d", "1 y", "10 y"]
    assert f"{res.mean[-1]:.4f}" in lines[8]
    assert "2 trials, reprogrammed each trial, seed 0" in md

    path = tmp_path / "sweep.json"
    text = res.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text)
    back = DriftSweepResult.from_json(text)
    assert back.values == res.values and back.times == res.times and back.metric == "rel. error"
    assert json.loads(text)["mean"] == pytest.approx(res.mean)

    png = tmp_path / "sweep.png"
    assert res.plot(png) == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_one_trial_has_undefined_std_and_valid_json():
    model, digital = _model()
    res = drift_sweep(model, _error_metric(digital), times=(0.0, 60.0), trials=1, progress=False)
    assert all(math.isnan(s) for s in res.std)
    assert json.loads(res.to_json())["std"] == [None, None]
    assert "| – |" in res.to_markdown()


def test_progress_bar(capsys):
    model, digital = _model()
    drift_sweep(model, _error_metric(digital), times=(0.0, 60.0), trials=2, progress=True)
    err = capsys.readouterr().err
    assert "drift sweep" in err and "4/4" in err


def test_format_time():
    assert [format_time(t) for t in (0, 1.5, 90, 7200, 1209600, 2592000, 63072000)] == [
        "0 s", "1.5 s", "90 s", "2 h", "2 w", "30 d", "2 y"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"times": (0.0, -1.0)}, "times contains -1.0"),
        ({"times": (float("nan"),)}, "times contains nan"),
        ({"times": ()}, "times is empty"),
        ({"times": 5.0}, "expected a sequence of times"),
        ({"trials": 0}, "trials = 0"),
        ({"trials": 2.5}, "trials = 2.5"),
        ({"seed": "x"}, "seed = 'x'"),
    ],
)
def test_bad_arguments(kwargs, match):
    model, digital = _model()
    with pytest.raises(ValueError, match=match):
        drift_sweep(model, _error_metric(digital), progress=False, **kwargs)


def test_bad_model_and_evaluate():
    model, digital = _model()
    with pytest.raises(ValueError, match="no AnalogLinear"):
        drift_sweep(digital, lambda m: 0.0, progress=False)
    with pytest.raises(ValueError, match="evaluate is a int"):
        drift_sweep(model, 3, progress=False)
    with pytest.raises(ValueError, match="evaluate returned 'good'"):
        drift_sweep(model, lambda m: "good", times=(0.0,), trials=1, progress=False)
    with pytest.raises(ValueError, match=r"tensor of shape \(2,\)"):
        drift_sweep(model, lambda m: torch.ones(2), times=(0.0,), trials=1, progress=False)
    # A failing sweep still restores the model.
    assert not tile_state.is_programmed(model[0])
    assert drift_sweep(model, lambda m: torch.tensor(0.5), times=(0.0,), trials=1, progress=False).values == [[0.5]]
