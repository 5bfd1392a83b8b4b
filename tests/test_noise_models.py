"""The AIHWKIT 1.1 noise models added to lorafusion_ext.devices, checked against AIHWKIT itself.

CustomDriftPCMLikeNoiseModel, StateIndependentNoiseModel, HermesNoiseModel (1 and 2 devices) and
ReRamCMONoiseModel (docs/numerics.md, "Device models"):

* statistics, each simulator drawing from its own RNG (AIHWKIT: torch's global RNG; ours: a
  seeded generator): programming error, drifted weights at 1 h, 1 day and 10 years, and the read
  noise (two reads of the same programmed state) have equal means (within 5 standard errors),
  std ratios within 2 % and a two-sample KS p-value > 1e-3, on 512 x 384 weights;
* the same seed gives the same draws (bit-equal on the CPU);
* the deterministic parts (drift-exponent mean and spread, read-noise std, the noise-free path)
  equal AIHWKIT's to float tolerance;
* rpu_config -> HardwareConfig -> rpu_config keeps every parameter; bad parameters raise naming
  the field;
* an AnalogLinear built with HardwareConfig.from_aihwkit(rpu) programs and drifts like AIHWKIT's
  layer (tile weights and drift compensation bit-equal without output noise).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Callable, Dict, Tuple

import numpy as np
import pytest
import torch
from torch import nn

import lorafusion_ext as lf
from lorafusion_ext.devices import (
    CustomDriftPCMLikeModel,
    HermesModel,
    ProgrammedState,
    ReRamCMOModel,
    StateIndependentModel,
    get_device_model,
)

try:
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
    from aihwkit.inference.noise.custom import StateIndependentNoiseModel
    from aihwkit.inference.noise.hermes import HermesNoiseModel
    from aihwkit.inference.noise.pcm import CustomDriftPCMLikeNoiseModel, PCMLikeNoiseModel
    from aihwkit.inference.noise.reram import ReRamCMONoiseModel, ReRamWan2022NoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    HAS_AIHWKIT = True
except ImportError:
    HAS_AIHWKIT = False

needs_aihwkit = pytest.mark.skipif(
    not HAS_AIHWKIT,
    reason="compares with AIHWKIT 1.1, which is not importable here (pip install --no-deps aihwkit==1.1.0)",
)

pytestmark = [
    # AIHWKIT 1.1's own code on this torch/numpy: HermesNoiseModel indexes with a list of masks,
    # ReRamCMONoiseModel applies numpy's log10 to a tensor.
    pytest.mark.filterwarnings("ignore:Using a non-tuple sequence for multidimensional indexing"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context"),
]

HOUR, DAY, TEN_YEARS = 3600.0, 86400.0, 10 * 365 * 86400.0
TIMES = (HOUR, DAY, TEN_YEARS)
SHAPE = (512, 384)  # ~197k weights (see _same_distribution for why so many)

CURVE = {
    "g_lst": [0.0, 5.0, 10.0, 20.0, 25.0],
    "nu_mean_lst": [0.09, 0.075, 0.06, 0.05, 0.045],
    "nu_std_lst": [0.03, 0.025, 0.02, 0.015, 0.012],
}

# name -> AIHWKIT noise model factory (the lorafusion_ext model is the converted one).
REFERENCES: Dict[str, Callable[[], Any]] = {
    "pcm_custom_drift": lambda: CustomDriftPCMLikeNoiseModel(
        {k: list(v) for k, v in CURVE.items()}),
    "state_independent": lambda: StateIndependentNoiseModel(),
    "hermes": lambda: HermesNoiseModel(),
    "hermes_1device": lambda: HermesNoiseModel(num_devices=1),
    "reram_cmo": lambda: ReRamCMONoiseModel(),
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(seed: int = 0, shape: Tuple[int, int] = SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed))


def _ours(ref: Any) -> Any:
    """Our device model, converted from `ref` the way HardwareConfig.from_aihwkit does."""
    rpu = TorchInferenceRPUConfig()
    rpu.noise_model = ref
    device = lf.HardwareConfig.from_aihwkit(rpu).device
    return get_device_model(device.name, **dict(device.options))


def _same_distribution(label: str, ref: torch.Tensor, ours: torch.Tensor) -> None:
    """Equal means (5 standard errors), std ratio within 2 %, KS p > 1e-3.

    The deviations are scale mixtures (noise proportional to |w|, kurtosis about 9 for Gaussian
    weights), so the standard error of a sample std is about 3x the Gaussian one: ~0.45 % for the
    ratio at 197k samples, which puts the 2 % bound at more than 4 standard errors.
    """
    stats = pytest.importorskip("scipy.stats", reason="the KS test needs scipy")
    a = ref.detach().double().flatten().numpy()
    b = ours.detach().double().flatten().numpy()
    n = a.size
    ratio = float(b.std() / a.std())
    se_mean = math.sqrt((a.var() + b.var()) / n)
    p = float(stats.ks_2samp(a, b).pvalue)
    print(f"{label}: mean {a.mean():+.4e} (AIHWKIT) {b.mean():+.4e} (ours), std ratio {ratio:.4f}, KS p {p:.3g}")
    assert abs(ratio - 1.0) < 0.02, f"{label}: std ratio {ratio}"
    assert abs(a.mean() - b.mean()) < 5 * se_mean, f"{label}: means {a.mean()} vs {b.mean()}"
    assert p > 1e-3, f"{label}: KS p = {p}"


# ------------------------------------------------------------------------------------------------
# Statistics with each simulator's own RNG
# ------------------------------------------------------------------------------------------------


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_programming_and_drift_match_aihwkit_statistically(name):
    ref = REFERENCES[name]()
    model = _ours(ref)
    w = _weights()
    torch.manual_seed(101)
    ref_prog, params = ref.apply_programming_noise(w.clone())
    state = model.program(w, generator=_gen(202))
    _same_distribution(f"{name} programmed", ref_prog - w, state.weights - w)
    if state.nu is not None:
        _same_distribution(f"{name} drift exponents", torch.stack(params), state.nu)
    else:
        # The CMO drift adds a decay in µS, converted with the scale of the programmed matrix
        # (AIHWKIT re-derives it from the programmed min and max): one programming draw scales
        # all drifted deviations by a common factor (sd about 0.15 % here), which a KS test on
        # 197k samples sees. Both drifts therefore start from AIHWKIT's programmed weights
        # (all that this model's drift reads), each with its own RNG.
        state = ProgrammedState(weights=ref_prog.clone(), scale=state.scale)
    for i, t in enumerate(TIMES):
        torch.manual_seed(300 + i)
        ref_t = ref.apply_drift_noise(ref_prog, params, t)
        ours_t = model.drift(state, t, generator=_gen(400 + i))
        assert bool(torch.isfinite(ours_t).all())
        _same_distribution(f"{name} t={t:g}s", ref_t - w, ours_t - w)


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_read_noise_matches_aihwkit_statistically(name):
    """Two reads of one programmed state at 1 day differ by the read noise only (and, for the CMO
    model, by the relaxation spread, which is also redrawn at every read)."""
    ref = REFERENCES[name]()
    model = _ours(ref)
    w = _weights(1)
    torch.manual_seed(11)
    ref_prog, params = ref.apply_programming_noise(w.clone())
    ref_a = ref.apply_drift_noise(ref_prog, params, DAY)
    ref_b = ref.apply_drift_noise(ref_prog, params, DAY)
    state = model.program(w, generator=_gen(12))
    if state.nu is None:  # CMO: same programmed weights, see the test above
        state = ProgrammedState(weights=ref_prog.clone(), scale=state.scale)
    gen = _gen(13)
    ours_a, ours_b = model.drift(state, DAY, generator=gen), model.drift(state, DAY, generator=gen)
    assert not torch.equal(ours_a, ours_b)
    _same_distribution(f"{name} read noise", ref_a - ref_b, ours_a - ours_b)


# ------------------------------------------------------------------------------------------------
# Same seed, same draws
# ------------------------------------------------------------------------------------------------


@needs_aihwkit
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_same_seed_gives_aihwkits_draws(name, dtype):
    ref = REFERENCES[name]()
    model = _ours(ref)
    w = _weights(2, (40, 56)).to(dtype)
    torch.manual_seed(21)
    ref_prog, params = ref.apply_programming_noise(w.clone())
    state = model.program(w, generator=_gen(21))
    assert state.weights.dtype == dtype
    assert torch.equal(state.weights, ref_prog)
    for t in (0.0,) + TIMES:
        torch.manual_seed(22)
        ref_t = ref.apply_drift_noise(ref_prog, params, t)
        assert torch.equal(model.drift(state, t, generator=_gen(22)), ref_t), t


# ------------------------------------------------------------------------------------------------
# Deterministic parts
# ------------------------------------------------------------------------------------------------


def _noise_free_pair(name: str) -> Tuple[Any, Any]:
    if name == "pcm_custom_drift":
        curve = {**CURVE, "nu_std_lst": [0.0] * len(CURVE["g_lst"])}
        ref = CustomDriftPCMLikeNoiseModel(curve, prog_noise_scale=0.0, read_noise_scale=0.0)
    elif name == "state_independent":
        ref = StateIndependentNoiseModel(prog_noise_scale=0.0, drift_nu_std=0.0, read_noise_scale=0.0)
    elif name == "reram_cmo":
        ref = ReRamCMONoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0,
                                 decay_dict={"mean": [-0.08900206], "std": [0.0, 0.0]})
    else:
        raise AssertionError(name)
    return ref, _ours(ref)


@needs_aihwkit
@pytest.mark.parametrize("name", ["pcm_custom_drift", "state_independent", "reram_cmo"])
def test_noise_free_path_equals_aihwkit(name):
    """No programming noise, no ν spread, no read noise: every step is deterministic, so the two
    simulators must agree to float tolerance whatever their RNGs."""
    ref, model = _noise_free_pair(name)
    w = _weights(3, (64, 48))
    torch.manual_seed(31)
    ref_prog, params = ref.apply_programming_noise(w.clone())
    state = model.program(w, generator=_gen(32))
    torch.testing.assert_close(state.weights, ref_prog, rtol=1e-6, atol=1e-7)
    for t in (0.0,) + TIMES:
        torch.manual_seed(33)
        ref_t = ref.apply_drift_noise(ref_prog, params, t)
        torch.testing.assert_close(model.drift(state, t, generator=_gen(34)), ref_t, rtol=1e-6, atol=1e-7)
    if name != "reram_cmo":
        # The mean drift factor: a noise-free weight decays as (t'/t_0)^(-ν) with ν = μ_ν(g).
        g = torch.linspace(0.0, 25.0, 11)
        mu, _ = model.drift_exponent_params(g) if name == "pcm_custom_drift" else (
            torch.full_like(g, model.drift_nu_mean), None)
        t = TEN_YEARS + model.t_0
        factor = (t / model.t_0) ** (-mu)
        g_t = model._drift_conductance(g, mu, TEN_YEARS, _gen(35))
        torch.testing.assert_close(g_t, g * factor, rtol=1e-6, atol=0.0)


def _aihwkit_with(monkeypatch, module: Any, fill: Callable[[torch.Tensor], torch.Tensor]) -> None:
    monkeypatch.setattr(module, "randn_like", fill)


@needs_aihwkit
@pytest.mark.parametrize("num_devices", [1, 2])
def test_hermes_fits_equal_aihwkit(monkeypatch, num_devices):
    """μ_ν, σ_ν and the read-noise std of every conductance, read out of AIHWKIT by replacing its
    normal draws with 0 and 1."""
    import aihwkit.inference.noise.hermes as hermes_module

    ref = HermesNoiseModel(num_devices=num_devices)
    model = _ours(ref)
    g = torch.linspace(0.0, ref.g_max, 2001)
    _aihwkit_with(monkeypatch, hermes_module, torch.zeros_like)
    mu_ref = ref.generate_drift_coefficients(g.clone())
    _aihwkit_with(monkeypatch, hermes_module, torch.ones_like)
    sig_ref = ref.generate_drift_coefficients(g.clone()) - mu_ref
    mu, sig = model.drift_exponent_params(g)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(sig, sig_ref, rtol=1e-5, atol=1e-8)
    positive = g > 0
    for t in TIMES:
        g_read = ref.apply_drift_noise_to_conductance(g.clone(), torch.zeros_like(g), t)
        rel_ref = (g_read[positive] - g[positive]) / g[positive]
        torch.testing.assert_close(model.read_noise_rel_std(g, t)[positive], rel_ref, rtol=1e-5, atol=1e-8)
        # The mean drift factor at t of a device with ν = μ_ν(g).
        _aihwkit_with(monkeypatch, hermes_module, torch.zeros_like)
        drifted_ref = ref.apply_drift_noise_to_conductance(g.clone(), mu_ref, t)
        torch.testing.assert_close(g * ((t + model.t_0) / model.t_0) ** (-mu), drifted_ref, rtol=1e-6, atol=1e-7)
        _aihwkit_with(monkeypatch, hermes_module, torch.ones_like)


@needs_aihwkit
def test_custom_drift_exponents_interpolate_the_curve(monkeypatch):
    import aihwkit.inference.noise.pcm as pcm_module

    ref = CustomDriftPCMLikeNoiseModel({k: list(v) for k, v in CURVE.items()})
    model = _ours(ref)
    g = torch.linspace(0.0, 25.0, 1001)
    _aihwkit_with(monkeypatch, pcm_module, torch.zeros_like)
    mu_ref = ref.generate_drift_coefficients(g.clone())
    mu, sig = model.drift_exponent_params(g)
    torch.testing.assert_close(mu, mu_ref, rtol=0.0, atol=0.0)
    expected = np.interp(g.numpy(), CURVE["g_lst"], CURVE["nu_std_lst"])
    np.testing.assert_allclose(sig.numpy(), expected, rtol=1e-6)


def test_state_independent_and_cmo_formulas():
    model = StateIndependentModel()
    g = torch.tensor([0.0, 5.0, 25.0])
    root = math.sqrt(math.log((HOUR + model.t_0 + model.t_read) / (2 * model.t_read)))
    torch.testing.assert_close(model.read_noise_std(g, HOUR), g / 25.0 * root, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(model.programming_noise_std(g), torch.full_like(g, 0.2))
    cmo = ReRamCMOModel()
    assert cmo.decay_mean_shift(DAY) == pytest.approx(-0.08900206 * math.log(DAY))
    assert cmo.relaxation_std(DAY) == pytest.approx(0.04201137 * math.log(DAY) + 0.41183342)
    torch.testing.assert_close(cmo.programming_noise_std(torch.tensor([10.0])),
                               torch.tensor([0.00081107 + 0.00106879 * 10.0]))
    root = math.sqrt(math.log((DAY + 1e-6) / 2e-6))
    torch.testing.assert_close(cmo.read_noise_std(torch.tensor([10.0, -1.0]), DAY),
                               torch.tensor([0.0277316483 * root, 0.0]))


def test_cmo_conductance_below_zero_gets_no_read_noise_instead_of_nan():
    """AIHWKIT's log10(g) read noise is NaN for g <= 0; ours adds none there and clamps to g_min."""
    model = ReRamCMOModel(g_min=0.0, g_max=10.0, decay_std=(0.0, 2.0))
    w = _weights(4, (32, 32))
    state = model.program(w, generator=_gen(41))
    out = model.drift(state, TEN_YEARS, generator=_gen(42))
    assert bool(torch.isfinite(out).all())


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------


def _nondefault_hermes_user_coeffs() -> Any:
    ref = HermesNoiseModel(prog_coeff=[0.1, 1.5, -0.5], g_max=18.0)
    ref.prog_coeff_g_max_reference = 15.0  # AIHWKIT 1.1 drops it from the constructor
    return ref


ROUND_TRIP: Dict[str, Callable[[], Any]] = {
    "pcm_custom_drift": lambda: CustomDriftPCMLikeNoiseModel(
        {k: list(v) for k, v in CURVE.items()}, prog_coeff=[0.2, 1.0, -0.5], g_max=20.0, t_read=1e-6,
        t_0=30.0, prog_noise_scale=0.5, read_noise_scale=0.7, drift_scale=1.3),
    "state_independent": lambda: StateIndependentNoiseModel(
        g_max=30.0, prog_coeff=[0.1, 0.2, 0.05], prog_noise_scale=0.8, drift_nu_mean=0.07,
        drift_nu_std=0.02, drift_scale=0.9, t_0=10.0, read_noise_scale=0.5, t_read=1e-6),
    "hermes_1device": lambda: HermesNoiseModel(num_devices=1, g_max=9.0, t_read=1e-6, t_0=150.0,
                                               prog_noise_scale=0.6, read_noise_scale=0.4, drift_scale=0.7),
    "hermes_user_coeffs": _nondefault_hermes_user_coeffs,
    "reram_cmo": lambda: ReRamCMONoiseModel(
        coeff_dict={0.5: [0.002, 0.001], 2: [0.01, 0.012]}, g_max=80.0, g_min=5.0,
        prog_noise_scale=0.9, read_noise_scale=1.1, drift_scale=0.8,
        decay_dict={"mean": [-0.05], "std": [0.03, 0.3]}, read_dict={"K": 0.02, "t_read": 2e-6},
        acceptance_range=2),
    "reram_wan2022": lambda: ReRamWan2022NoiseModel(g_max=30.0, noise_scale=0.5),
}


def _params(noise_model: Any) -> Dict[str, Any]:
    out = {k: v for k, v in vars(noise_model).items() if k != "g_converter"}
    conv = noise_model.g_converter
    out["g_converter"] = (type(conv).__name__, conv.g_max, conv.g_min)
    return out


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_conversion_round_trip_keeps_every_parameter(name):
    ref = ROUND_TRIP[name]()
    rpu = TorchInferenceRPUConfig()
    rpu.noise_model = ref
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    assert hw.device.name == {"hermes_1device": "hermes", "hermes_user_coeffs": "hermes",
                              "reram_wan2022": "reram"}.get(name, name)
    back = hw.to_aihwkit().noise_model
    assert type(back) is type(ref)
    assert _params(back) == _params(ref)
    # The config stays hashable and survives JSON.
    again = lf.HardwareConfig.from_dict(json.loads(json.dumps(hw.to_dict())))
    assert again == hw and hash(again) == hash(hw)


@needs_aihwkit
def test_default_models_convert_to_their_defaults():
    for ref, ours in (
        (StateIndependentNoiseModel(), StateIndependentModel()),
        (HermesNoiseModel(), HermesModel()),
        (ReRamCMONoiseModel(), ReRamCMOModel()),
    ):
        assert _ours(ref) == ours
    # AIHWKIT's explicit reference (25 µS for the default coefficients) is what ours implies:
    # the conversion keeps only the options that change the model.
    converted = _ours(REFERENCES["pcm_custom_drift"]())
    assert converted == CustomDriftPCMLikeModel(**CURVE)
    assert converted.effective_prog_coeff_g_max_reference == 25.0


def _rpu_with(noise_model: Any) -> Any:
    rpu = TorchInferenceRPUConfig()
    rpu.noise_model = noise_model
    return rpu


def _with_attr(noise_model: Any, name: str, value: Any) -> Any:
    setattr(noise_model, name, value)
    return noise_model


@needs_aihwkit
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PCMLikeNoiseModel(g_converter=SinglePairConductanceConverter(g_max=25.0, g_min=1.0)),
         r"noise_model\.g_converter = .*g_min = 0"),
        (lambda: _with_attr(StateIndependentNoiseModel(), "w_noise", 0.01), r"noise_model\.w_noise = 0\.01"),
        (lambda: HermesNoiseModel(prog_coeff=[0.1, 1.0], prog_coeff_g_max_reference=20.0),
         r"noise_model\.prog_coeff_g_max_reference is not set"),
        (lambda: HermesNoiseModel(g_converter=SinglePairConductanceConverter(g_max=25.0)),
         r"noise_model \(HermesNoiseModel\).*g_max must be at most 20\.7"),
        (lambda: ReRamCMONoiseModel(decay_dict={"mean": [-0.08, 0.01], "std": [0.04, 0.4]}),
         r"noise_model\.decay_dict"),
        (lambda: ReRamCMONoiseModel(read_dict={"K": 0.02, "t_read": 1e-6, "f": 1.0}), r"noise_model\.read_dict"),
        (lambda: _with_attr(ReRamCMONoiseModel(), "g_max", 50.0), r"noise_model\.g_converter"),
        (lambda: ReRamWan2022NoiseModel(coeff_dic={1.0: [0.5, 1.0]}), r"noise_model\.coeff_dic"),
        (lambda: CustomDriftPCMLikeNoiseModel({"g_lst": [0.0, 30.0], "nu_mean_lst": [0.05, -0.01],
                                               "nu_std_lst": [0.01, -0.02]}),
         r"noise_model \(CustomDriftPCMLikeNoiseModel\).*nu_std_lst\[1\]"),
    ],
    ids=["pcm_g_min", "unknown_attribute", "hermes_reference_dropped", "hermes_g_max", "cmo_decay",
         "cmo_read", "cmo_converter", "reram_table", "custom_negative_std"],
)
def test_unmodelled_noise_model_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        lf.HardwareConfig.from_aihwkit(_rpu_with(make()))


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("pcm_custom_drift", {}, r"CustomDriftPCMLikeModel\.g_lst must hold at least 2"),
        ("pcm_custom_drift", {**CURVE, "g_lst": [0.0, 10.0, 5.0, 20.0, 25.0]}, r"g_lst must be in ascending"),
        ("pcm_custom_drift", {**CURVE, "g_lst": [1.0, 5.0, 10.0, 20.0, 25.0]}, r"g_lst must cover"),
        ("pcm_custom_drift", {**CURVE, "g_lst": [0.0, 5.0, 10.0, 20.0, 24.0]}, r"g_lst must cover"),
        ("pcm_custom_drift", {**CURVE, "nu_std_lst": [0.1, -0.1, 0.1, 0.1, 0.1]}, r"nu_std_lst\[1\]"),
        ("pcm_custom_drift", {**CURVE, "nu_mean_lst": [0.1, 0.1]}, r"nu_mean_lst must have one value per"),
        ("state_independent", {"drift_nu_std": -0.1}, r"StateIndependentModel\.drift_nu_std"),
        ("state_independent", {"t_read": 30.0}, r"StateIndependentModel\.t_read"),
        ("state_independent", {"prog_coeff": ()}, r"StateIndependentModel\.prog_coeff"),
        ("state_independent", {"g_max": 0.0}, r"StateIndependentModel\.g_max"),
        ("hermes", {"num_devices": 3}, r"HermesModel\.num_devices must be 1 or 2"),
        ("hermes", {"g_max": 25.0}, r"HermesModel\.g_max must be at most 20\.7"),
        ("hermes", {"num_devices": 1, "g_max": 15.0}, r"g_max must be at most 10\.35"),
        ("hermes", {"t_0": -1.0}, r"HermesModel\.t_0"),
        ("hermes", {"prog_coeff": []}, r"HermesModel\.prog_coeff"),
        ("reram_cmo", {"g_min": 90.0}, r"ReRamCMOModel\.g_max must be .* > g_min"),
        ("reram_cmo", {"g_min": -1.0}, r"ReRamCMOModel\.g_min"),
        ("reram_cmo", {"acceptance_range": 0.02}, r"acceptance_range must be a key of coeff_dict"),
        ("reram_cmo", {"decay_std": (1.0,)}, r"ReRamCMOModel\.decay_std"),
        ("reram_cmo", {"coeff_dict": {}}, r"ReRamCMOModel\.coeff_dict"),
        ("reram_cmo", {"t_read": 0.0}, r"ReRamCMOModel\.t_read"),
        ("reram_cmo", {"drift_scale": float("nan")}, r"ReRamCMOModel\.drift_scale"),
    ],
)
def test_bad_parameters_raise_naming_the_field(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        get_device_model(name, **overrides)


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_bad_inputs_raise(name):
    model = _ours(REFERENCES[name]())
    with pytest.raises(ValueError, match="2-D"):
        model.program(torch.ones(6))
    with pytest.raises(ValueError, match="NaN"):
        model.program(torch.tensor([[1.0, float("nan")], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        model.program(_weights(6, (4, 4)), generator=7)
    state = model.program(_weights(6, (4, 4)), generator=_gen(61))
    for t in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="t_seconds"):
            model.drift(state, t)
    with pytest.raises(ValueError, match="ProgrammedState.weights must be 2-D"):
        model.drift(ProgrammedState(weights=torch.ones(3), scale=torch.ones(())), DAY)


def test_cmo_rejects_a_constant_tile():
    with pytest.raises(ValueError, match=r"ReRamCMOModel\.program: a single-device tile needs max\(W\) > min\(W\)"):
        ReRamCMOModel().program(torch.ones(4, 4))


# ------------------------------------------------------------------------------------------------
# State and layers
# ------------------------------------------------------------------------------------------------


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_state_round_trip_through_torch_save(name):
    model = _ours(REFERENCES[name]())
    state = model.program(_weights(5, (24, 20)), generator=_gen(51))
    buf = io.BytesIO()
    torch.save(state.to_dict(), buf)
    buf.seek(0)
    restored = ProgrammedState.from_dict(torch.load(buf, weights_only=True))
    for t in (0.0, DAY):
        assert torch.equal(model.drift(state, t, generator=_gen(52)), model.drift(restored, t, generator=_gen(52)))


def _layer_pair(noise_model: Any, seed: int = 3) -> Tuple[Any, nn.Module]:
    from aihwkit.nn import AnalogLinear as AihwkitLinear

    rpu = TorchInferenceRPUConfig()
    rpu.forward.out_noise = 0.0  # every draw is then a device draw: both sides bit-equal
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.max_input_size = 32
    rpu.noise_model = noise_model
    hw = lf.HardwareConfig.from_aihwkit(rpu)
    torch.manual_seed(seed)
    layer = lf.AnalogLinear.from_linear(nn.Linear(70, 24), hw, seed=seed + 1).eval()
    ref = AihwkitLinear(70, 24, bias=True, rpu_config=rpu).eval()
    ref.set_weights(layer.weight.detach(), layer.bias.detach())
    return layer, ref


@needs_aihwkit
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_analog_linear_from_aihwkit_programs_and_drifts_like_aihwkit(name):
    from lorafusion_ext.nn import tile_state

    layer, ref = _layer_pair(REFERENCES[name]())
    assert layer.layout.n_in == 3
    tiles = dict(zip([(it, ot) for it, ot, _, _ in tile_state.tile_blocks(layer)], ref.analog_tiles()))
    x = torch.randn(5, 70, generator=_gen(6))
    torch.manual_seed(4)
    ref.program_analog_weights()
    lf.program(layer, _gen(4))
    for t in TIMES:
        torch.manual_seed(5)
        ref.drift_analog_weights(t)
        lf.drift(layer, t, _gen(5))
        for it, ot, rows, cols in tile_state.tile_blocks(layer):
            tile = tiles[(it, ot)]
            assert torch.equal(tile.tile.get_weights(), layer.programmed_weight[rows, cols]), (t, it)
            assert torch.equal(tile.alpha.reshape(()), layer.drift_alpha[it, ot]), (t, it)
        assert torch.equal(ref(x), layer(x)), t
    # The programmed state survives a state_dict round trip into a fresh layer.
    fresh, _ = _layer_pair(REFERENCES[name](), seed=9)
    fresh.load_state_dict(layer.state_dict())
    lf.drift(layer, DAY, _gen(7))
    lf.drift(fresh, DAY, _gen(7))
    assert torch.equal(layer.programmed_weight, fresh.programmed_weight)


@pytest.mark.parametrize("name", ["pcm", "hermes", "state_independent", "reram"])
def test_default_device_round_trips_to_an_equal_config(name):
    pytest.importorskip("aihwkit")
    hw = lf.HardwareConfig.preset("pcm_paper").replace(device=lf.hardware.Device(name))
    assert lf.HardwareConfig.from_aihwkit(hw.to_aihwkit()).device == hw.device
