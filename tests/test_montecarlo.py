"""Monte Carlo outputs computed in the kernel (issue 7): observables with standard errors,
stopping and hitting times, histograms, antithetic variates, streamed statistics-only runs.

Every statistical check is a function that returns (passed, message); each is run on the
right model (must pass) and on a deliberately wrong one (must fail), with fixed seeds and
tolerances of 5 standard errors (printed in the message). Two CPU kernels serve the whole
file (tests/mc_models.py): LINEAR with three observables, BOX with a stopping rule.
"""

import math
import tracemalloc

import numpy as np
import pytest
from scipy import stats as sps

import fastsde as fs
from fastsde import api, montecarlo
from fastsde.kernels import cpu

from mc_models import (BOX, BOX_OBS, LINEAR, LINEAR_OBS, gbm_params, obs_x, outside_box,
                       ou_params)

K_SE = 5.0


def _sim(model, n_paths, n_steps, t1=1.0, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("seed", 2026)
    return fs.simulate(model, kw.pop("x0", 1.0), (0.0, t1), n_steps, n_paths,
                       method="euler_maruyama", **kw)


def linear(n_paths, n_steps, params, **kw):
    return _sim(LINEAR, n_paths, n_steps, params=params, observables=LINEAR_OBS, **kw)


def box(n_paths, n_steps, t1, x0, sigma=1.0, lo=0.0, hi=1.0, **kw):
    return _sim(BOX, n_paths, n_steps, t1=t1, x0=x0, params=(sigma, lo, hi),
                observables=BOX_OBS, stop_when=outside_box, **kw)


def within(est, exact, what, k=K_SE):
    """The check: |estimate - exact| < k SE."""
    err = abs(est.value - exact)
    ok = err < k * est.se
    return ok, (f"{what}: estimate {est.value:.6g} vs exact {exact:.6g}, |diff| = {err:.3g}, "
                f"SE = {est.se:.3g} ({err / est.se:.2f} SE; limit {k} SE)")


def passes(check):
    ok, msg = check
    assert ok, msg


def fails(check):
    ok, msg = check
    assert not ok, "a deliberately wrong model passed the check: " + msg


# --- exact answers --------------------------------------------------------------------

def ou_em_moments(x0, theta, sigma, h, n):
    """Mean and variance of Euler-Maruyama's X_n for OU (exact for the scheme)."""
    a = 1.0 - theta * h
    return x0 * a**n, sigma**2 * h * (1.0 - a**(2 * n)) / (1.0 - a * a)


def black_scholes_undiscounted(s0, strike, mu, sigma, t):
    """E[(S_t - K)^+] for dS = mu S dt + sigma S dW."""
    d1 = (math.log(s0 / strike) + (mu + 0.5 * sigma**2) * t) / (sigma * math.sqrt(t))
    d2 = d1 - sigma * math.sqrt(t)
    return s0 * math.exp(mu * t) * sps.norm.cdf(d1) - strike * sps.norm.cdf(d2)


# --- observables ------------------------------------------------------------------------

THETA, SIGMA, STEPS = 1.0, 0.5, 100


@pytest.fixture(scope="module")
def ou_run():
    return linear(40_000, STEPS, ou_params(THETA, SIGMA), save_at=4, stats=True)


def ou_check(res, theta, t_index, name):
    n = res.n_steps * (res.t[t_index] - res.t[0]) / (res.t[-1] - res.t[0])
    mean, var = ou_em_moments(1.0, theta, SIGMA, 1.0 / STEPS, int(round(n)))
    exact = mean if name == "x" else var + mean * mean
    return within(res.estimate(name, t=res.t[t_index]), exact, f"E[{name}] at t={res.t[t_index]}")


@pytest.mark.parametrize("name", ["x", "sq"])
@pytest.mark.parametrize("t_index", [2, 4])
def test_observables_match_exact_ou_moments(ou_run, name, t_index):
    passes(ou_check(ou_run, THETA, t_index, name))


def test_observable_check_fails_on_a_wrong_model():
    wrong = linear(40_000, STEPS, ou_params(1.25 * THETA, SIGMA), save_at=4)
    fails(ou_check(wrong, THETA, 4, "x"))
    fails(ou_check(wrong, THETA, 4, "sq"))


def test_estimate_is_mean_and_standard_error_of_the_stored_values(ou_run):
    x = ou_run.x[:, 0]
    for name, values in (("x", x), ("sq", x * x), ("call", np.maximum(x - 1.0, 0.0))):
        est = ou_run.estimate(name)
        n = x.size
        assert est.n == n
        assert est.value == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
        assert est.se == pytest.approx(values.std(ddof=1) / math.sqrt(n), rel=1e-9)
        assert est.ci[0] == pytest.approx(est.value - 1.959964 * est.se, rel=1e-6)
        assert est.ci[1] == pytest.approx(est.value + 1.959964 * est.se, rel=1e-6)
    # Default t is the last save time; observables at t0 are the initial state.
    assert ou_run.estimate("x") == ou_run.estimate("x", t=1.0)
    assert ou_run.estimate("x", t=0.0).value == 1.0 and ou_run.estimate("x", t=0.0).se == 0.0
    # The observable "x" accumulates exactly what stats=True accumulates.
    assert np.array_equal(ou_run.obs_mean[:, 0], ou_run.mean[:, 0])
    assert np.array_equal(ou_run.obs_count[:, 0], ou_run.count[:, 0])


# --- antithetic variates ----------------------------------------------------------------

MU, VOL = 0.05, 0.2
CALL_EXACT = black_scholes_undiscounted(1.0, 1.0, MU, VOL, 1.0)


def call_check(res, exact=CALL_EXACT):
    return within(res.estimate("call"), exact, "E[(S_1 - 1)^+] (GBM)")


@pytest.fixture(scope="module")
def gbm_pair():
    plain = linear(2**17, 256, gbm_params(MU, VOL))
    anti = linear(2**17, 256, gbm_params(MU, VOL), antithetic=True)
    return plain, anti


def test_antithetic_call_price_matches_black_scholes_with_a_smaller_error(gbm_pair):
    plain, anti = gbm_pair
    passes(call_check(plain))
    passes(call_check(anti))
    ratio = anti.estimate("call").se / plain.estimate("call").se
    assert ratio < 0.8, f"antithetic SE / plain SE = {ratio:.3f} (same number of paths)"


def test_antithetic_check_fails_on_a_wrong_model():
    wrong = linear(2**17, 256, gbm_params(MU, 1.15 * VOL), antithetic=True)
    fails(call_check(wrong))


def test_antithetic_standard_error_counts_pairs(gbm_pair):
    _, anti = gbm_pair
    pay = np.maximum(anti.x[:, 0] - 1.0, 0.0)
    pair_means = 0.5 * (pay[0::2] + pay[1::2])
    est = anti.estimate("call")
    assert est.n == anti.n_paths // 2
    assert est.se == pytest.approx(pair_means.std(ddof=1) / math.sqrt(pair_means.size),
                                   rel=1e-9)
    # The naive per-path SE would be larger than the honest paired one here (negative
    # correlation within pairs); the paired one is what is reported.
    naive = pay.std(ddof=1) / math.sqrt(pay.size)
    assert est.se < naive


def test_antithetic_ou_mean_has_no_variance_and_even_paths_are_unchanged():
    plain = linear(2000, STEPS, ou_params(THETA, SIGMA))
    anti = linear(2000, STEPS, ou_params(THETA, SIGMA), antithetic=True)
    mean, _ = ou_em_moments(1.0, THETA, SIGMA, 1.0 / STEPS, STEPS)
    # OU is linear: the pair mean is the scheme's deterministic mean, up to rounding.
    est = anti.estimate("x")
    assert abs(est.value - mean) < 1e-12 and est.se < 1e-12 < plain.estimate("x").se
    # Path 2m is the plain run's path 2m; path 2m + 1 mirrors it about the mean.
    assert np.array_equal(anti.x[0::2], plain.x[0::2])
    np.testing.assert_allclose(anti.x[1::2] - mean, -(anti.x[0::2] - mean), atol=1e-12)


def test_antithetic_normal_initial_state_is_mirrored():
    # No noise: X_1 = X_0 (1 - h)^4 with h = 1/4, and X_0 of path 2m + 1 mirrors path 2m's
    # draw about the mean 2.
    anti = linear(64, 4, ou_params(THETA, 0.0), x0=fs.Normal(2.0, 1.0), antithetic=True)
    centre = 2.0 * 0.75**4
    np.testing.assert_allclose(anti.x[1::2] - centre, -(anti.x[0::2] - centre), atol=1e-12)
    assert np.std(anti.x) > 0.1


# --- histograms ---------------------------------------------------------------------------

def stationary_histogram_check(res, var, alpha=1e-3):
    """Chi-square of the in-kernel histogram (bins plus the two tails) at every save time
    against N(0, var); returns the smallest p-value's verdict."""
    hist = res.histogram
    sd = math.sqrt(var)
    cdf = sps.norm.cdf(hist.edges[0], scale=sd)
    probs = np.concatenate([[cdf[0]], np.diff(cdf), [1.0 - cdf[-1]]])
    worst = 1.0
    for s in range(len(res.t)):
        obs = np.concatenate([[hist.below[s, 0]], hist.counts[s, 0], [hist.above[s, 0]]])
        n = obs.sum()
        keep = probs * n >= 5
        expected = probs * n
        stat = float(np.sum((obs[keep] - expected[keep]) ** 2 / expected[keep]))
        p = float(sps.chi2.sf(stat, keep.sum() - 1))
        worst = min(worst, p)
    return worst > alpha, f"chi-square vs N(0, {var:.4g}): smallest p-value {worst:.3g} " \
                          f"over {len(res.t)} save times (limit {alpha})"


def ou_stationary(theta, n_paths=100_000):
    _, var_h = ou_stationary_variance(theta)  # Euler-Maruyama's own stationary variance
    sd = math.sqrt(var_h)
    return linear(n_paths, 200, ou_params(theta, SIGMA), x0=fs.Normal(0.0, sd), t1=2.0,
                  save_at=2, keep_x=False,
                  histogram=dict(bins=40, range=(-3.5 * sd, 3.5 * sd))), var_h


def test_ou_stationary_histogram_matches_its_gaussian_density():
    res, var_h = ou_stationary(THETA)
    assert res.x is None
    passes(stationary_histogram_check(res, var_h))


def test_histogram_check_fails_on_a_wrong_model():
    # A process with theta 1.3 (in its own stationary law) against the density of theta 1.
    wrong, _ = ou_stationary(1.3 * THETA, n_paths=50_000)
    _, var_h = ou_stationary_variance(THETA)
    fails(stationary_histogram_check(wrong, var_h))


def ou_stationary_variance(theta):
    h = 2.0 / 200
    return h, SIGMA**2 * h / (1.0 - (1.0 - theta * h) ** 2)


def test_histogram_counts_equal_the_stored_paths_counts():
    res = linear(3000, 20, ou_params(THETA, SIGMA), x0=fs.Normal(0.0, 1.0), save_at=4,
                 histogram=dict(bins=7, range=(-0.8, 0.9)))
    lo, hi, bins = -0.8, 0.9, 7
    scale = bins / (hi - lo)
    for s in range(len(res.t)):
        v = res.paths[s, :, 0]
        u = (v - lo) * scale
        below, above = np.sum(u < 0), np.sum(u > bins)
        inside = u[(u >= 0) & (u <= bins)]
        idx = np.minimum(np.floor(inside).astype(int), bins - 1)
        assert res.histogram.below[s, 0] == below and res.histogram.above[s, 0] == above
        assert res.histogram.counts[s, 0].tolist() == np.bincount(idx, minlength=bins).tolist()
    np.testing.assert_allclose(res.histogram.edges[0], np.linspace(lo, hi, bins + 1))
    total = res.histogram.counts.sum(axis=-1) + res.histogram.below + res.histogram.above
    assert np.all(total == 3000)


def test_histogram_is_the_same_on_one_thread():
    import numba

    kw = dict(x0=fs.Normal(0.0, 1.0), save_at=2, keep_x=False,
              histogram=dict(bins=9, range=(-2, 2)))
    many = linear(5000, 10, ou_params(THETA, SIGMA), **kw)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = linear(5000, 10, ou_params(THETA, SIGMA), **kw)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(many.histogram.counts, one.histogram.counts)


# --- stopping and hitting times -------------------------------------------------------------

def extrapolated(coarse, fine):
    """Richardson in sqrt(h) (the discrete-monitoring bias is c sqrt(h) + O(h)) for fine
    h = coarse h / 4: E0 = 2 E(h/4) - E(h), SE combined."""
    value = 2.0 * fine.value - coarse.value
    se = math.sqrt(4.0 * fine.se**2 + coarse.se**2)
    return montecarlo.Estimate(value, se, (value - 1.96 * se, value + 1.96 * se), fine.n)


EXIT_T1 = 3.0  # P(BM from 0.5 has not left (0, 1) by t = 3) < 1e-6


@pytest.fixture(scope="module")
def exit_runs():
    return [box(20_000, n, EXIT_T1, 0.5, keep_x=False) for n in (300, 1200, 4800)]


def exit_time_check(coarse, fine, exact):
    return within(extrapolated(coarse.estimate("hit_time"), fine.estimate("hit_time")),
                  exact, "mean exit time of (0, 1), extrapolated in sqrt(h)")


def test_mean_exit_time_from_an_interval(exit_runs):
    exact = 0.5 * (1 - 0.5)
    biases = [r.estimate("hit_time").value - exact for r in exit_runs]
    ses = [r.estimate("hit_time").se for r in exit_runs]
    # Discrete monitoring misses excursions, so exits come late: the bias is positive and
    # shrinks with h (about halving when h is divided by 4).
    for r in exit_runs:
        assert r.estimate("hit_probability").value == 1.0
    assert biases[0] > biases[1] > biases[2] > 5 * ses[2], (biases, ses)
    passes(exit_time_check(exit_runs[1], exit_runs[2], exact))


def test_exit_time_check_fails_on_a_wrong_model(exit_runs):
    wrong = [box(20_000, n, EXIT_T1, 0.5, sigma=1.15, keep_x=False) for n in (1200, 4800)]
    fails(exit_time_check(*wrong, 0.25))


def reflection_checks(runs, level):
    """P(tau <= t) = 2 (1 - Phi(level / sqrt t)) at every save time, extrapolated."""
    coarse, fine = runs
    out = []
    for t in fine.t[1:]:
        est = extrapolated(coarse.estimate("stopped", t=t), fine.estimate("stopped", t=t))
        exact = 2.0 * sps.norm.sf(level / math.sqrt(t))
        out.append(within(est, exact, f"P(first passage to {level} <= {t})"))
    return out


@pytest.fixture(scope="module")
def passage_runs():
    return [box(40_000, n, 1.0, 0.0, lo=-1e300, hi=1.0, save_at=4) for n in (256, 1024)]


def test_first_passage_law_of_brownian_motion(passage_runs):
    for check in reflection_checks(passage_runs, 1.0):
        passes(check)
    coarse, fine = passage_runs
    # The hitting-time statistics agree with the stored hitting times and the observable.
    ht = fine.hit_time
    assert fine.estimate("hit_probability").value == np.mean(np.isfinite(ht))
    assert fine.estimate("stopped").value == pytest.approx(np.mean(np.isfinite(ht)), rel=1e-12)
    assert fine.estimate("hit_time").value == pytest.approx(ht[np.isfinite(ht)].mean(),
                                                            rel=1e-12)
    for t in fine.t:
        assert fine.estimate("stopped", t=t).value == pytest.approx(np.mean(ht <= t), abs=1e-15)


def test_first_passage_check_fails_on_a_wrong_model():
    wrong = [box(40_000, n, 1.0, 0.0, lo=-1e300, hi=1.2, save_at=4) for n in (256, 1024)]
    assert not all(ok for ok, _ in reflection_checks(wrong, 1.0))


def test_stopped_paths_hold_their_first_state_past_the_boundary(passage_runs):
    fine = passage_runs[1]
    hit = np.isfinite(fine.hit_time)
    assert hit.any() and (~hit).any()
    assert np.all(fine.x[hit, 0] > 1.0) and np.all(fine.x[~hit, 0] <= 1.0)
    # Hitting times lie on the step grid.
    k = fine.hit_time[hit] * fine.n_steps
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert np.all(fine.hit_time[~hit] == np.inf)


def test_a_path_that_starts_in_the_stopping_region_stops_at_t0():
    res = box(64, 8, 1.0, 1.5)
    assert np.all(res.hit_time == 0.0) and np.all(res.x == 1.5)
    assert res.estimate("hit_probability").value == 1.0


# --- streaming, constant memory, refusals ---------------------------------------------------

def _all_outputs(res):
    out = {k: getattr(res, k) for k in ("x", "paths", "mean", "var", "count", "obs_mean",
                                        "obs_var", "obs_count", "hit_time", "hit_count",
                                        "hit_mean", "hit_var", "n_nonfinite")}
    if res.histogram is not None:
        out["hist"] = res.histogram.counts
    return out


def test_streamed_runs_equal_one_call_bit_for_bit(monkeypatch):
    kw = dict(save_at=2, stats=True, keep_paths=True,
              histogram=dict(bins=5, range=(-1.0, 1.0)))
    one = box(10_000, 16, 1.0, 0.5, **kw)
    two = linear(10_000, 16, ou_params(THETA, SIGMA), antithetic=True, **kw)
    calls = []
    real_run = cpu.run

    def counting(kernel, args):
        calls.append(args.n_paths)
        real_run(kernel, args)

    monkeypatch.setattr(cpu, "run", counting)
    monkeypatch.setattr(api, "SLICE_PATH_STEPS", 16 * api.CHUNK_PATHS * 3)  # 2 chunks a call
    sliced_one = box(10_000, 16, 1.0, 0.5, **kw)
    sliced_two = linear(10_000, 16, ou_params(THETA, SIGMA), antithetic=True, **kw)
    assert max(calls) == 2 * api.CHUNK_PATHS and len(calls) == 2 * 10
    for a, b in ((one, sliced_one), (two, sliced_two)):
        for name, value in _all_outputs(a).items():
            other = _all_outputs(b)[name]
            assert (value is None) == (other is None), name
            if value is not None:
                assert np.array_equal(value, other, equal_nan=True), name


def test_streaming_merge_equals_the_merge_of_all_chunks():
    rng = np.random.default_rng(0)
    for n_chunks in (1, 2, 3, 5, 8, 13, 64, 100):
        count = rng.integers(0, 50, (n_chunks, 2, 3))
        mean = rng.normal(size=(n_chunks, 2, 3)) * (count > 0)
        m2 = rng.uniform(0, 5, (n_chunks, 2, 3)) * (count > 1)
        want = api.merge_chunk_stats(count, mean, m2)
        for per in (1, 2, 4, 16):
            merge = montecarlo.StreamingMerge()
            for a in range(0, n_chunks, per):
                root = api.merge_chunk_stats(count[a:a + per], mean[a:a + per],
                                             m2[a:a + per])
                merge.add(*root, per.bit_length() - 1)
            for w, g in zip(want, merge.result()):
                assert np.array_equal(w, g), (n_chunks, per)


class _Stop(Exception):
    pass


def test_statistics_only_run_of_1e10_paths_streams_in_constant_memory(monkeypatch):
    calls = []
    real_run = cpu.run

    def few_calls(kernel, args):
        calls.append(args)
        real_run(kernel, args)
        if len(calls) == 3:
            raise _Stop

    monkeypatch.setattr(cpu, "run", few_calls)
    tracemalloc.start()
    try:
        with pytest.raises(_Stop):
            linear(10**10, 4, ou_params(THETA, SIGMA), keep_x=False, stats=True,
                   histogram=dict(bins=10, range=(-2, 2)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak host memory {peak / 2**20:.1f} MiB for 1e10 paths"
    for args in calls:
        assert args.x_out.shape[0] == 0 and args.paths_out.shape[0] == 0
        assert args.n_paths <= api.SLICE_PATH_STEPS // 4
    assert int(calls[1].first_path) == calls[0].n_paths


def test_stored_output_that_does_not_fit_is_refused_before_allocation():
    with pytest.raises(fs.OutputTooLargeError) as info:
        linear(10**12, 4, ou_params(THETA, SIGMA))
    msg = str(info.value)
    assert "GiB" in msg and "keep_x=False" in msg and "n_paths=1000000000000" in msg


# --- argument checks ---------------------------------------------------------------------

def _two_args(t, x):
    return x[0]


def _returns_array(t, x, p):
    return x


@pytest.mark.parametrize("kw, error, match", [
    (dict(observables=[obs_x]), TypeError, "observables must be a dict"),
    (dict(observables={}), ValueError, "observables must hold 1 to"),
    (dict(observables={"1x": obs_x}), ValueError, "names must be Python identifiers"),
    (dict(observables={"hit_time": obs_x}), ValueError, "reserved"),
    (dict(observables={"a": _two_args}), fs.ModelError, "exactly three arguments"),
    (dict(observables={"a": 3.0}), TypeError, "plain Python function"),
    (dict(observables={"a": _returns_array}), fs.ModelError, "must return a number"),
    (dict(stop_when="x > 1"), TypeError, "stop_when must be a plain Python function"),
    (dict(histogram=dict(bins=0, range=(0, 1))), ValueError, r"histogram\['bins'\]"),
    (dict(histogram=dict(bins=4)), ValueError, "keys 'bins'"),
    (dict(histogram=dict(bins=4, range=(1, 0))), ValueError, "hi > lo"),
    (dict(histogram=dict(bins=4, range=[(0, 1), (0, 1)])), ValueError, r"shape \(1, 2\)"),
    (dict(antithetic=1), TypeError, "antithetic must be True or False"),
    (dict(antithetic=True, n_paths=7), ValueError, "n_paths and first_path must be even"),
    (dict(antithetic=True, first_path=3), ValueError, "n_paths and first_path must be even"),
    (dict(keep_x=False), ValueError, "would return nothing"),
    (dict(keep_x="no"), TypeError, "keep_x must be True or False"),
])
def test_bad_monte_carlo_arguments_are_refused_by_name(kw, error, match):
    kw = dict(kw)
    n_paths = kw.pop("n_paths", 8)
    with pytest.raises(error, match=match):
        fs.simulate(LINEAR, 1.0, (0, 1), 4, n_paths, **kw)


def test_estimate_errors_name_what_is_available(ou_run, passage_runs):
    with pytest.raises(KeyError, match="no estimate named 'nope'.*'x', 'sq', 'call'"):
        ou_run.estimate("nope")
    with pytest.raises(ValueError, match="t=0.3 is not a save time"):
        ou_run.estimate("x", t=0.3)
    with pytest.raises(ValueError, match="needs a run with stop_when"):
        ou_run.estimate("hit_time")
    with pytest.raises(ValueError, match="whole run; t must be None"):
        passage_runs[0].estimate("hit_probability", t=0.5)
    anti = box(8, 4, 1.0, 0.5, antithetic=True)
    with pytest.raises(ValueError, match="antithetic pairs"):
        anti.estimate("hit_time")


# --- labelled output -----------------------------------------------------------------------

def test_to_xarray_carries_observables_hits_and_attributes(passage_runs):
    xr = pytest.importorskip("xarray")
    ds = passage_runs[0].to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert ds["x"].dims == ("path", "component") and ds["hit_time"].dims == ("path",)
    assert ds["obs_mean"].dims == ("time", "observable")
    assert list(ds["observable"].values) == ["stopped"]
    assert ds.attrs["rng_version"] == fs.RNG_VERSION and ds.attrs["seed"] == "2026"
    assert ds.attrs["method"] == "euler_maruyama" and ds.attrs["model"] == "bm_box"


def test_plot_of_a_statistics_only_run_uses_the_in_kernel_histogram():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    res, var_h = ou_stationary(THETA, n_paths=2000)
    res_stats = linear(2000, 20, ou_params(THETA, SIGMA), save_at=4, stats=True,
                       keep_x=False, histogram=dict(bins=20, range=(-2, 2)))
    fig = res_stats.plot(exact_density=lambda x: sps.norm.pdf(x, scale=math.sqrt(var_h)))
    ax0, ax1 = fig.axes
    assert len(ax0.lines) >= 1 and ax1.patches  # mean line and the histogram's stairs
    assert res.x is None
