"""Multilevel Monte Carlo (fastsde.mlmc): the coupled level kernel against the written
streams, the estimates against Black-Scholes, the variance decay rates, the cost's growth
with 1/eps, reproducibility, and the refusals. The rate checks are shown to fail with the
coupling broken (the coarse path driven by another path's increments)."""

import importlib
import math

import numba
import numpy as np
import pytest
from scipy.stats import norm

import fastsde as fs
from fastsde import streams
from fastsde.kernels import cpu, levels
from mc_models import MLMC_GBM, mlmc_call

#: The module (``fastsde.mlmc`` the attribute is the function).
mlmc_module = importlib.import_module("fastsde.mlmc")
R, SIGMA, S0, K, T = 0.05, 0.2, 100.0, 100.0, 1.0
# The model and call of the CUDA comparisons (tests/test_cuda.py) too: each level kernel
# of the two compiles once per test run (the disk cache serves the other process).
GBM, call = MLMC_GBM, mlmc_call
D1 = (math.log(S0 / K) + (R + SIGMA ** 2 / 2) * T) / (SIGMA * math.sqrt(T))
D2 = D1 - SIGMA * math.sqrt(T)
CALL_EXACT = S0 * norm.cdf(D1) - K * math.exp(-R * T) * norm.cdf(D2)   # 10.4506
DIGITAL_EXACT = math.exp(-R * T) * norm.cdf(D2)                        # 0.532325


def digital(t, x, p):
    return math.exp(-0.05) if x[0] > 100.0 else 0.0


def _run(eps, method="milstein", payoff=call, **kw):
    # n0 = 4 unless a test says otherwise: with n0 = 1 the derivative-free Milstein's
    # first levels (h = 1 and 1/2) are far from the asymptotic variance decay, and beta
    # fitted over levels 1..L comes out at 1.58 (the decay per level reaches 1.9 from
    # level 4 on); with n0 = 4 it is 1.75.
    kw.setdefault("n0", 4)
    return fs.mlmc(GBM, S0, (0.0, T), payoff, eps, method=method, progress=False, **kw)


# ----------------------------------------------------------- the level kernel ----

def _level_sums(model, method, payoff, level, n_paths, M=2, n0=4, seed=3, coupled=1):
    kernel = cpu.get_mlmc_kernel(model, fs.METHODS[method], np.float64, payoff,
                                 model.n_params)
    key0, key1 = streams.key_from_seed(np.random.SeedSequence(seed).spawn(level + 1)[level])
    n_chunks = -(-n_paths // mlmc_module.CHUNK)
    sums = np.zeros((n_chunks, len(cpu.MLMC_SUMS)))
    bad = np.zeros(n_chunks, np.int64)
    kernel(np.array([S0]), np.array([model.params]), 0.0, T, n0 * M ** (level - 1), M,
           coupled, key0, key1, np.uint64(0), n_paths, mlmc_module.CHUNK, sums, bad)
    return sums, bad


def test_fine_path_is_simulates_path_and_coarse_path_sums_its_increments():
    """Level 2 (8 fine steps, 4 coarse), 700 pairs (two chunks): the fine payoffs are
    those of ``simulate`` with 8 steps and the level's seed, bit for bit; the coarse
    Euler-Maruyama path, rebuilt in numpy from the written stream (each coarse increment
    the sum of its two fine ones), gives the kernel's corrections."""
    level, n, M, n0 = 2, 700, 2, 4
    n_fine, n_coarse = n0 * M ** level, n0 * M ** (level - 1)
    child = np.random.SeedSequence(3).spawn(level + 1)[level]
    sums, bad = _level_sums(GBM, "euler_maruyama", call, level, n, M, n0)
    assert bad.sum() == 0
    fine = fs.simulate(GBM, S0, (0.0, T), n_fine, n, seed=child).x[:, 0]
    h_f, h_c = T / n_fine, T / n_coarse
    z = streams.normals(child, np.arange(n)[:, None], np.arange(n_fine)[None, :])
    dw = math.sqrt(h_f) * z
    coarse = np.full(n, S0)
    for k in range(n_coarse):
        dwc = dw[:, M * k] + dw[:, M * k + 1]
        coarse = coarse + h_c * (R * coarse) + SIGMA * coarse * dwc
    pf = np.array([call(T, np.array([v]), None) for v in fine])
    pc = np.array([call(T, np.array([v]), None) for v in coarse])
    y = pf - pc
    chunk = mlmc_module.CHUNK
    for c in range(sums.shape[0]):  # the kernel's order of additions (levels.py)
        part = slice(c * chunk, min((c + 1) * chunk, n))
        v = np.zeros((len(cpu.MLMC_SUMS), chunk))
        for slot, (a, b) in enumerate(zip(pf[part], y[part])):
            levels.pair_moments(b, a, v, slot)
        levels.fold_chunk(v, chunk)
        assert sums[c, 4] == v[4, 0], "fine payoffs differ from simulate's paths"
        assert sums[c, 5] == v[5, 0]
        np.testing.assert_allclose(sums[c, :4], v[:4, 0], rtol=1e-12, atol=1e-9)
    # ... and a coarse path driven by other increments gives other corrections
    uncoupled, _ = _level_sums(GBM, "euler_maruyama", call, level, n, M, n0, coupled=2)
    assert np.array_equal(uncoupled[:, 4], sums[:, 4])
    assert abs(uncoupled[:, 1].sum() - sums[:, 1].sum()) > 10 * sums[:, 1].sum()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_first_levels_fine_paths_are_simulates_paths(level, dtype):
    """n0 = 1: levels 0 and 1 draw one and two normals per path (the kernel computes only
    a block's first Box-Muller pair there), level 2 four; the fine payoffs are those of
    simulate's paths with 1, 2 and 4 steps, bit for bit, in both dtypes."""
    n, M, n0 = 700, 2, 1
    n_fine = n0 * M ** level
    n_coarse, ratio, coupled = (n0, 1, 0) if level == 0 else (n_fine // M, M, 1)
    child = np.random.SeedSequence(5).spawn(level + 1)[level]
    key0, key1 = streams.key_from_seed(child)
    kernel = cpu.get_mlmc_kernel(GBM, fs.METHODS["milstein"], np.dtype(dtype), call,
                                 GBM.n_params)
    sums = np.zeros((2, len(cpu.MLMC_SUMS)))
    bad = np.zeros(2, np.int64)
    kernel(np.array([S0], dtype), np.array([GBM.params], dtype), 0.0, T, n_coarse, ratio,
           coupled, key0, key1, np.uint64(0), n, mlmc_module.CHUNK, sums, bad)
    fine = fs.simulate(GBM, S0, (0.0, T), n_fine, n, seed=child, method="milstein",
                       dtype=dtype, progress=False).x[:, 0]
    # The payoff in float64, as the kernel evaluates it (100.0 is a float64 literal).
    pf = np.array([call(T, np.array([np.float64(v)]), None) for v in fine])
    chunk = mlmc_module.CHUNK
    for c in range(2):
        v = np.zeros((len(cpu.MLMC_SUMS), chunk))
        for slot, a in enumerate(pf[c * chunk:(c + 1) * chunk]):
            levels.pair_moments(0.0, a, v, slot)
        levels.fold_chunk(v, chunk)
        assert sums[c, 4] == v[4, 0], f"chunk {c}: fine payoffs differ from simulate's"


# ------------------------------------------------------------------ estimates ----

def test_european_call_milstein():
    res = _run(0.01)
    assert res.converged and res.n_nonfinite == 0
    assert abs(res.value - CALL_EXACT) < 3 * res.eps, (
        f"value {res.value:.5f}, Black-Scholes {CALL_EXACT:.5f}, eps {res.eps}, se {res.se:.4f}")
    assert res.se <= res.eps / math.sqrt(2) * 1.05 and res.bias <= res.eps / math.sqrt(2)
    assert 1.6 <= res.beta <= 2.6, f"Milstein beta {res.beta:.3f} (levels {res.levels})"
    assert res.cost < res.mc_cost


def test_european_call_euler_maruyama():
    res = _run(0.01, method="euler_maruyama")
    assert abs(res.value - CALL_EXACT) < 3 * res.eps, f"value {res.value:.5f}"
    assert 0.7 <= res.beta <= 1.4, f"Euler-Maruyama beta {res.beta:.3f}"


def test_beta_check_fails_without_the_coupling(monkeypatch):
    """The coarse path driven by another path's increments: the corrections' variance no
    longer falls with the level, and the Milstein beta check fails."""
    monkeypatch.setattr(mlmc_module, "_COUPLING", [2])
    res = _run(0.05, L_min=3, L_max=3)
    assert not 1.6 <= res.beta <= 2.6, f"beta {res.beta:.3f} with the coupling broken"
    assert res.levels[3].var > 0.5 * res.levels[3].var_p


def test_digital_call():
    """Discontinuous payoff: within 3 eps of Black-Scholes at eps = 0.002; its beta is
    lower than the call's (Giles reports about 1.5 for Milstein)."""
    res = _run(0.002, payoff=digital)
    assert abs(res.value - DIGITAL_EXACT) < 3 * res.eps, (
        f"value {res.value:.6f}, exact {DIGITAL_EXACT:.6f}, se {res.se:.5f}")
    assert 0.7 < res.beta < _run(0.002).beta, res.beta


def test_cost_scaling_with_eps():
    """eps^2 x cost over eps in {0.02, 0.01, 0.005, 0.002} (n0 = 1, the default): flat
    within 2x for Milstein (cost O(eps^-2)); growing for Euler-Maruyama (O(eps^-2
    log(eps)^2)), and growing against Milstein's. Measured: Milstein 646, 596, 577, 566;
    Euler-Maruyama 1135, 1140, 1444, 1781."""
    eps_list = (0.02, 0.01, 0.005, 0.002)
    mil = [e * e * _run(e, n0=1).cost for e in eps_list]
    em = [e * e * _run(e, method="euler_maruyama", n0=1).cost for e in eps_list]
    assert max(mil) / min(mil) < 2, f"Milstein eps^2 cost {mil}"
    assert em[-1] / em[0] > 1.4, f"Euler-Maruyama eps^2 cost {em}"
    assert em[-1] / mil[-1] > 1.5 * em[0] / mil[0], f"Milstein {mil}, Euler-Maruyama {em}"


def test_same_seed_same_bits_for_any_thread_count():
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(0.02, seed=7)
        numba.set_num_threads(max(threads, 2))
        two = _run(0.02, seed=7)
    finally:
        numba.set_num_threads(threads)
    assert one.value == two.value and one.cost == two.cost
    assert [lv.n_paths for lv in one.levels] == [lv.n_paths for lv in two.levels]
    assert _run(0.02, seed=8).value != one.value


# -------------------------------------------------------------------- refusals ----

@pytest.mark.parametrize("kw,error,words", [
    (dict(method="sriw1"), ValueError, "method"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(M=1), ValueError, "M"),
    (dict(n0=0), ValueError, "n0"),
    (dict(L_min=1), ValueError, "L_min"),
    (dict(L_max=1), ValueError, "L_max"),
    (dict(n_initial=1), ValueError, "n_initial"),
    (dict(device="gpu"), ValueError, "device"),
    (dict(x0=fs.Normal(100.0, 1.0)), TypeError, "x0"),
    (dict(payoff=3), TypeError, "payoff"),
    (dict(params=[[0.05, 0.2]]), ValueError, "params"),
    (dict(model=fs.ODE(lambda t, x, p, out: None, 1)), TypeError, "model"),
])
def test_bad_arguments_are_named_before_anything_runs(kw, error, words):
    args = dict(model=GBM, x0=S0, t_span=(0.0, T), payoff=call, eps=0.01)
    args.update(kw)
    with pytest.raises(error, match=words):
        fs.mlmc(**args, progress=False)


def test_mlmc_test_report():
    """Giles's convergence test: consistency checks below 1 on every level, the fitted
    beta of Milstein, the complexity rows (MLMC cheaper than plain Monte Carlo)."""
    rep = fs.mlmc_test(GBM, S0, (0.0, T), call, 20_000, 5, [0.02, 0.01], n0=4,
                       print_report=False)
    assert len(rep.levels) == 6 and np.isnan(rep.check[0])
    assert all(c < 1 for c in rep.check[1:]), rep.text
    assert 1.6 <= rep.beta <= 2.6 and 0.7 <= rep.alpha, rep.text
    assert [row["eps"] for row in rep.complexity] == [0.02, 0.01]
    assert all(row["savings"] > 1 for row in rep.complexity), rep.text
    assert "alpha" in str(rep) and "savings" in str(rep)
    fig = rep.plot()
    assert len(fig.axes) == 4 and len(fig.axes[2].lines) == 2  # paths per level, per eps
    res = _run(0.02)
    assert len(res.plot().axes) == 3
    with pytest.raises(ValueError, match="eps_list"):
        fs.mlmc_test(GBM, S0, (0.0, T), call, 100, 3, [])
    with pytest.raises(ValueError, match="L"):
        fs.mlmc_test(GBM, S0, (0.0, T), call, 100, 1, [0.1])


def up_and_out_call(t, x, p):
    return math.exp(-0.05) * max(x[0] - 100.0, 0.0) if x[0] < 120.0 else 0.0


def above_barrier(t, x, p):
    return x[0] - 120.0


def test_barrier_option_with_stop_when_on_both_paths():
    """An up-and-out call (barrier 120, monitored on each path's own grid): the multilevel
    sum estimates E[P_L], the discretely monitored option on the finest level's grid,
    which simulate(stop_when=...) with those steps estimates independently; they agree
    within 4 combined standard errors. Without stop_when in the MLMC run (the plain call
    evaluated on unstopped paths, a wrong model) they do not."""
    eps = 0.05
    res = _run(eps, payoff=up_and_out_call, stop_when=above_barrier, n0=4)
    n_steps = res.levels[-1].n_steps
    # Discrete monitoring: the bias falls like sqrt(h) (alpha and beta about 1/2; Giles's
    # Brownian-bridge correction is not applied), so the finest level has 4096 steps.
    ref = fs.simulate(GBM, S0, (0.0, T), n_steps, 40_000, keep_x=False, seed=99,
                      observables={"payoff": up_and_out_call}, stop_when=above_barrier,
                      progress=False).estimate("payoff")
    # The levels' sum has expectation E[P_L] exactly (the telescoping sum): only sampling
    # error separates the two.
    tol = 4 * math.hypot(res.se, ref.se)
    assert abs(res.value - ref.value) < tol, (
        f"MLMC {res.value:.5f} (se {res.se:.4f}), simulate with "
        f"{n_steps} steps {ref.value:.5f} (se {ref.se:.4f})")
    unstopped = _run(eps, payoff=up_and_out_call, n0=4)
    assert abs(unstopped.value - ref.value) > tol


def asian_drift(t, x, p, out):
    out[0] = 0.05 * x[0]
    out[1] = x[0]


def asian_diffusion(t, x, p, out):
    out[0] = 0.2 * x[0]


ASIAN = fs.SDE(asian_drift, asian_diffusion, 2, name="gbm_with_integral")


def asian_call(t, x, p):
    return math.exp(-0.05) * max(x[1] - 100.0, 0.0)


def test_asian_option_through_an_augmented_state():
    """docs/monte-carlo.md's recipe: the running integral as a noiseless state component.
    The multilevel sum against simulate on the finest level's grid (same expectation),
    within 4 combined standard errors; the literature's value is 5.763."""
    res = fs.mlmc(ASIAN, [S0, 0.0], (0.0, T), asian_call, 0.02, n0=4, progress=False)
    ref = fs.simulate(ASIAN, [S0, 0.0], (0.0, T), res.levels[-1].n_steps, 100_000,
                      keep_x=False, observables={"c": asian_call}, seed=5,
                      progress=False).estimate("c")
    assert abs(res.value - ref.value) < 4 * math.hypot(res.se, ref.se), (res, ref)
    assert 1.6 <= res.beta <= 2.6, res.beta


# ------------------------------------------------------------------ lookback ----

DISCOUNT = math.exp(-0.05)


def lookback_range(t, x, p):
    """exp(-rT) (max S - min S): x[1] is the running minimum, x[2] the running maximum."""
    return DISCOUNT * (x[2] - x[1])


def floating_lookback_call(t, x, p):
    return DISCOUNT * (x[0] - x[1])


def test_running_extrema_follow_each_path_of_the_pair():
    """Level 2 (16 fine steps, 8 coarse), 700 pairs: with running_min=0 and
    running_max=0 the fine payoffs are those of simulate's saved paths (minimum and
    maximum over t0 and every step), bit for bit, and the corrections those of the
    coarse Euler-Maruyama paths rebuilt in numpy with their own extrema."""
    level, n, M, n0 = 2, 700, 2, 4
    n_fine, n_coarse = n0 * M ** level, n0 * M ** (level - 1)
    child = np.random.SeedSequence(3).spawn(level + 1)[level]
    kernel = cpu.get_mlmc_kernel(GBM, fs.METHODS["euler_maruyama"], np.float64,
                                 lookback_range, GBM.n_params, running=((0, 1.0), (0, -1.0)))
    key0, key1 = streams.key_from_seed(child)
    sums = np.zeros((2, len(cpu.MLMC_SUMS)))
    bad = np.zeros(2, np.int64)
    kernel(np.array([S0]), np.array([GBM.params]), 0.0, T, n_coarse, M, 1, key0, key1,
           np.uint64(0), n, mlmc_module.CHUNK, sums, bad)
    fine = fs.simulate(GBM, S0, (0.0, T), n_fine, n, seed=child, save_at=n_fine,
                       progress=False).paths[:, :, 0]
    pf = DISCOUNT * (fine.max(axis=0) - fine.min(axis=0))
    dw = math.sqrt(T / n_fine) * streams.normals(child, np.arange(n)[:, None],
                                                 np.arange(n_fine)[None, :])
    h_c = T / n_coarse
    coarse = [np.full(n, S0)]
    for k in range(n_coarse):
        s = coarse[-1]
        coarse.append(s + h_c * (R * s) + SIGMA * s * (dw[:, M * k] + dw[:, M * k + 1]))
    coarse = np.array(coarse)
    pc = DISCOUNT * (coarse.max(axis=0) - coarse.min(axis=0))
    chunk = mlmc_module.CHUNK

    def chunk_sums(pf, pc, c):  # levels.py's order
        part = slice(c * chunk, min((c + 1) * chunk, n))
        v = np.zeros((len(cpu.MLMC_SUMS), chunk))
        for slot, (a, b) in enumerate(zip(pf[part], pf[part] - pc[part])):
            levels.pair_moments(b, a, v, slot)
        levels.fold_chunk(v, chunk)
        return v[:, 0]

    for c in range(2):
        expected = chunk_sums(pf, pc, c)
        assert sums[c, 4] == expected[4] and sums[c, 5] == expected[5], "fine extrema differ"
        np.testing.assert_allclose(sums[c, :4], expected[:4], rtol=1e-12, atol=1e-9)
    # Extrema over the states after t0 only (t0 left out) are another payoff.
    after_t0 = DISCOUNT * (fine[1:].max(axis=0) - fine[1:].min(axis=0))
    assert sums[0, 4] != chunk_sums(after_t0, pc, 0)[4]


def test_lookback_call_against_simulate_on_the_finest_grid():
    """A floating-strike lookback call, exp(-rT)(S_T - min S), through running_min=0,
    levels 0..4 (64 fine steps): the multilevel sum estimates E[P_4], which simulate's
    saved paths on the same grid estimate independently; within 4 combined standard
    errors. With running_max instead (a wrong model: S_T - max S) they disagree. The
    variance of the corrections decays like h (discrete monitoring: beta about 1)."""
    kw = dict(n0=4, L_min=4, L_max=4, progress=False, method="milstein")
    with pytest.warns(RuntimeWarning, match="L_max"):
        res = fs.mlmc(GBM, S0, (0.0, T), floating_lookback_call, 0.1, running_min=0, **kw)
    paths = fs.simulate(GBM, S0, (0.0, T), 64, 40_000, seed=17, save_at=64, method="milstein",
                        progress=False).paths[:, :, 0]
    ref = DISCOUNT * (paths[-1] - paths.min(axis=0))
    ref_se = ref.std(ddof=1) / math.sqrt(ref.size)
    tol = 4 * math.hypot(res.se, ref_se)
    assert abs(res.value - ref.mean()) < tol, (res.value, res.se, ref.mean(), ref_se)
    assert 0.6 <= res.beta <= 1.5, res.beta
    with pytest.warns(RuntimeWarning, match="L_max"):
        wrong = fs.mlmc(GBM, S0, (0.0, T), floating_lookback_call, 0.1, running_max=0, **kw)
    assert abs(wrong.value - ref.mean()) > tol


@pytest.mark.parametrize("kw,error,words", [
    (dict(running_min=1), ValueError, "running_min"),
    (dict(running_max=[0, -1]), ValueError, "running_max"),
    (dict(running_min="0"), ValueError, "running_min"),
    (dict(running_min=True), ValueError, "running_min"),
    (dict(running_max=0.5), TypeError, "running_max"),
])
def test_running_extrema_arguments_are_checked(kw, error, words):
    with pytest.raises(error, match=words):
        fs.mlmc(GBM, S0, (0.0, T), call, 0.01, progress=False, **kw)


def test_payoff_reading_a_running_extremum_that_was_not_asked_for_is_named():
    with pytest.raises(fs.ModelError, match="payoff"):
        fs.mlmc(GBM, S0, (0.0, T), floating_lookback_call, 0.01, progress=False)
