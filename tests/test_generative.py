"""Generation as sampling: Gaussian-mixture path (exact fields, flow, diffusion, Langevin),
MLP vector fields, accuracy metrics and the generative demo.

Every statistical check is a function returning failure messages (empty when the sample
passes, 5 SE tolerances), and each is also shown to FAIL on a deliberately wrong model.
Model objects are module-level so that each kernel compiles once.
"""

import math

import numpy as np
import pytest

import fastsde as fs
from fastsde import cli
from fastsde import metrics as M
from fastsde.generative import (gm_data_score, gm_path_drift, gm_path_sigma, langevin_sigma,
                                unrolled_data_score, unrolled_path_drift)
from fastsde.mlp import ACTIVATIONS, make_mlp_drift, random_mlp

K_SE = 5.0
#: Two-sided p-value of 5 standard errors: the chi-square tests' threshold.
P_5SE = 5.7e-7

# A 2-D mixture with unequal weights and stds, well separated (misassignment ~1e-6).
MIX = fs.GaussianMixturePath([0.5, 0.3, 0.2], [[-3.0, 0.0], [2.0, 2.0], [1.5, -3.0]],
                             [0.5, 0.7, 0.4])
# The same layout (same kernels), weights and means deliberately wrong.
WRONG = fs.GaussianMixturePath([0.45, 0.35, 0.2], [[-3.0, 0.0], [2.0, 2.2], [1.5, -3.0]],
                               [0.5, 0.7, 0.4])
# A 1-D two-component target for Langevin.
MIX1 = fs.GaussianMixturePath([0.3, 0.7], [-1.0, 1.5], [0.5, 0.7])
N = 20_000


# ------------------------------------------------------------------- check helpers
def mixture_failures(x, mixture, label, reference=None):
    """Occupations and per-component means and covariances within 5 SE."""
    fails = []
    occ = M.occupation_test(x, mixture, reference)
    z = np.abs(occ.z)
    n = occ.counts.sum()
    frac = occ.expected / n
    if z.max() >= K_SE or occ.p_value < P_5SE:
        se = np.sqrt(frac * (1 - frac) / n)
        fails.append(f"{label}: occupations {occ.fractions.round(4).tolist()} vs "
                     f"{frac.round(4).tolist()}: max |z| {z.max():.2f} (SE "
                     f"{se.round(5).tolist()}), chi2 {occ.statistic:.1f} on {occ.dof} dof, "
                     f"p = {occ.p_value:.2g}")
    err = M.component_errors(x, mixture, reference)
    if err.max_abs_mean_z >= K_SE:
        fails.append(f"{label}: component means off by {err.max_abs_mean_z:.1f} SE (errors "
                     f"{err.mean_error.round(4).tolist()}, SE {err.mean_se.round(4).tolist()})")
    if err.max_abs_cov_z >= K_SE:
        fails.append(f"{label}: component covariances off by {err.max_abs_cov_z:.1f} SE "
                     f"(errors {err.cov_error.round(4).tolist()})")
    return fails


def moment_failures(x, mean, cov, label):
    """Sample mean and covariance of x (n, d) against exact values within 5 SE (SEs from
    the sample's own second and fourth moments: the law is not normal)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    fails = []
    m = x.mean(axis=0)
    se_m = x.std(axis=0, ddof=1) / math.sqrt(n)
    for j in range(d):
        if not abs(m[j] - mean[j]) < K_SE * se_m[j]:
            fails.append(f"{label} mean[{j}]: {m[j]:.5f} vs exact {mean[j]:.5f}, off by "
                         f"{abs(m[j] - mean[j]) / se_m[j]:.1f} SE (SE {se_m[j]:.2g})")
    c = x - m
    for i in range(d):
        for j in range(i, d):
            prod = c[:, i] * c[:, j]
            est, se = prod.mean() * n / (n - 1), prod.std(ddof=1) / math.sqrt(n)
            if not abs(est - cov[i, j]) < K_SE * se:
                fails.append(f"{label} cov[{i},{j}]: {est:.5f} vs exact {cov[i, j]:.5f}, off "
                             f"by {abs(est - cov[i, j]) / se:.1f} SE (SE {se:.2g})")
    return fails


def exact_moments(path, t):
    """Mean and covariance of p_t."""
    w, mu, v = path.weights, t * path.means, path.component_var(t)
    mean = w @ mu
    second = np.einsum("k,ki,kj->ij", w, mu, mu) + np.sum(w * v) * np.eye(path.dim)
    return mean, second - np.outer(mean, mean)


def kernel_field(fn, params, x, t):
    """Evaluate a kernel function f(t, x, p, out) row by row as plain Python."""
    x = np.atleast_2d(x)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        fn(t, x[i].copy(), params, out[i])
    return out


def _block_as_one_path(block, lanes, dim):
    """A lane-block field run as plain Python for one path (its lanes all hold it)."""
    def one_path(t, x, p, out):
        field = np.empty(dim * lanes)
        block(np.full(lanes, t), np.repeat(np.asarray(x, float), lanes), p, field,
              np.empty(2 * lanes))
        out[:] = field.reshape(dim, lanes)[:, lanes - 1]
    return one_path


# ------------------------------------------------------------------- exact fields
@pytest.mark.parametrize("unrolled", [False, True, "block"],
                         ids=["loops", "unrolled", "block"])
@pytest.mark.parametrize("t", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_kernel_functions_match_host_fields(t, unrolled):
    """The allocation-free kernel functions equal the vectorised numpy fields, also far
    from every component (where naive densities underflow) and at t = 0 and t = 1: the
    generic fields (loops over a count read from p) and the ones the mixture's models use
    (unrolled_path_drift, unrolled_data_score: K and d constants, no branch on the
    path)."""
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 3, (40, 2)), [[60.0, -80.0], [0.0, 0.0], [-3.0, 0.0]]])
    flow_p = MIX.flow().params
    if unrolled == "block":
        gm_path_drift = _block_as_one_path(fs.generative.make_path_drift_block(3, 2, 5),
                                           5, 2)
    else:
        gm_path_drift = (unrolled_path_drift(3, 2) if unrolled
                         else fs.generative.gm_path_drift)
    assert MIX.flow().drift.__name__ == "gm_path_drift_unrolled"
    assert MIX.diffusion(0.5).drift.__name__ == "gm_path_drift_unrolled"
    u = kernel_field(gm_path_drift, flow_p, x, t)
    np.testing.assert_allclose(u, MIX.velocity(x, t), rtol=1e-12, atol=1e-12)
    sig = (0.8, 0.3)
    b = kernel_field(gm_path_drift, MIX.diffusion(sig).params, x, t)
    sig_t = sig[0] * (1 - t) + sig[1] * t
    np.testing.assert_allclose(b, MIX.velocity(x, t) + sig_t**2 / 2 * MIX.score(x, t),
                               rtol=1e-12, atol=1e-11)
    g = kernel_field(gm_path_sigma, MIX.diffusion(sig).params, x, t)
    np.testing.assert_allclose(g, sig_t, rtol=1e-15)
    if t == 1.0:
        if unrolled == "block":
            score = _block_as_one_path(fs.generative.make_data_score_block(3, 2, 5), 5, 2)
        else:
            score = unrolled_data_score(3, 2) if unrolled else gm_data_score
        assert MIX.langevin().drift.__name__ == "gm_data_score_unrolled"
        s = kernel_field(score, MIX.langevin().params, x, t)
        np.testing.assert_allclose(s, MIX.score(x, 1.0), rtol=1e-12, atol=1e-11)
        assert np.all(kernel_field(langevin_sigma, MIX.langevin().params, x, t)
                      == math.sqrt(2.0))
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(b))


def grad_fd(f, x, eps=1e-5):
    """Central differences of a scalar function of rows x (n, d): (n, d)."""
    g = np.empty_like(x)
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = eps
        g[:, j] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("path", [MIX, MIX1], ids=["2d", "1d"])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 1.0])
def test_score_matches_finite_differences_of_log_prob(path, t):
    x = path.sample(30, t, seed=2)
    fd = grad_fd(lambda y: path.log_prob(y, t), x)
    np.testing.assert_allclose(path.score(x, t), fd, rtol=1e-6, atol=1e-6)
    # The kernel's diffusion drift minus its flow drift is sigma_t^2/2 times the score.
    sig = 0.9
    diff = (kernel_field(gm_path_drift, path.diffusion(sig).params, x, t)
            - kernel_field(gm_path_drift, path.flow().params, x, t))
    np.testing.assert_allclose(diff / (sig**2 / 2), fd, rtol=1e-6, atol=1e-6)
    if t == 1.0:
        np.testing.assert_allclose(kernel_field(gm_data_score, path.langevin().params, x, t),
                                   fd, rtol=1e-6, atol=1e-6)


def pde_residual(path, drift, x, t, sigma_t=0.0, eps_t=1e-5, eps_x=1e-4):
    """Relative residual of dp/dt + div(p b) - sigma_t^2/2 lap p at the rows of x, by
    central differences; drift(x, t) -> (n, d). Zero for the continuity (sigma = 0) and
    Fokker-Planck equations of the path."""
    p = lambda y, s=t: np.exp(path.log_prob(y, s))  # noqa: E731
    dp_dt = (p(x, t + eps_t) - p(x, t - eps_t)) / (2 * eps_t)
    div = np.zeros(x.shape[0])
    lap = np.zeros(x.shape[0])
    scale = np.abs(dp_dt)
    for j in range(path.dim):
        e = np.zeros(path.dim)
        e[j] = eps_x
        term = (p(x + e) * drift(x + e, t)[:, j] - p(x - e) * drift(x - e, t)[:, j]) / (2 * eps_x)
        div += term
        scale = scale + np.abs(term)
        second = (p(x + e) - 2 * p(x) + p(x - e)) / eps_x**2
        lap += second
        scale = scale + sigma_t**2 / 2 * np.abs(second)
    return np.abs(dp_dt + div - sigma_t**2 / 2 * lap) / scale


TIMES = [0.05, 0.3, 0.6, 0.95]


@pytest.mark.parametrize("path", [MIX, MIX1], ids=["2d", "1d"])
def test_velocity_satisfies_continuity_equation(path):
    for t in TIMES:
        x = path.sample(25, t, seed=3)
        r = pde_residual(path, lambda y, s: kernel_field(gm_path_drift, path.flow().params, y, s),
                         x, t)
        assert r.max() < 1e-5, f"t={t}: continuity residual {r.max():.2e} (relative)"


def test_continuity_check_fails_on_wrong_fields():
    """Weighting the component fields by w_k instead of the responsibilities, or dropping
    the (1 - t) term of the conditional field, breaks the continuity equation."""
    t = 0.6
    x = MIX.sample(25, t, seed=3)

    def by_weights(y, s):
        v = MIX.component_var(s)
        c = (s * MIX.stds**2 - (1 - s)) / v
        per = MIX.means[None] + c[None, :, None] * (y[:, None, :] - s * MIX.means[None])
        return np.einsum("k,nkd->nd", MIX.weights, per)

    def no_contraction(y, s):
        r = MIX.responsibilities(y, s)
        c = s * MIX.stds**2 / MIX.component_var(s)
        per = MIX.means[None] + c[None, :, None] * (y[:, None, :] - s * MIX.means[None])
        return np.einsum("nk,nkd->nd", r, per)

    for wrong in (by_weights, no_contraction):
        assert pde_residual(MIX, wrong, x, t).max() > 1e-2


@pytest.mark.parametrize("sigma", [1.0, (1.5, 0.0)], ids=["constant", "linear"])
def test_diffusion_drift_satisfies_fokker_planck(sigma):
    model = MIX.diffusion(sigma)
    s0, s1 = model.params[-2:]
    for t in TIMES:
        sig_t = s0 * (1 - t) + s1 * t
        x = MIX.sample(25, t, seed=4)
        r = pde_residual(MIX, lambda y, s: kernel_field(gm_path_drift, model.params, y, s), x,
                         t, sigma_t=sig_t)
        assert r.max() < 1e-5, f"t={t}: Fokker-Planck residual {r.max():.2e} (relative)"
        # Without the score correction the same noise spreads the law: the check fails.
        r_bad = pde_residual(MIX, lambda y, s: kernel_field(gm_path_drift, MIX.flow().params,
                                                            y, s), x, t, sigma_t=sig_t)
        assert r_bad.max() > 1e-2


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_exact_sampler_moments(t):
    x, labels = MIX.sample(N, t, seed=5, return_labels=True)
    mean, cov = exact_moments(MIX, t)
    fails = moment_failures(x, mean, cov, f"p_{t}")
    counts = np.bincount(labels, minlength=3)
    z = (counts - N * MIX.weights) / np.sqrt(N * MIX.weights * (1 - MIX.weights))
    if np.abs(z).max() >= K_SE:
        fails.append(f"labels {counts.tolist()} vs {(N * MIX.weights).tolist()}: z {z}")
    if t == 1.0:
        fails += mixture_failures(x, MIX, "exact p_1")
    assert not fails, "\n".join(fails)


def test_moment_checks_fail_on_wrong_sampler():
    mean, cov = exact_moments(MIX, 0.5)
    assert moment_failures(WRONG.sample(N, 0.5, seed=5), mean, cov, "wrong weights")
    assert moment_failures(MIX.sample(N, 0.55, seed=5), mean, cov, "wrong time")
    assert mixture_failures(WRONG.sample(N, 1.0, seed=5), MIX, "wrong mixture")


# ------------------------------------------------------------------- samplers
@pytest.fixture(scope="module")
def flow_heun():
    """Heun on the exact flow, 64 steps, states at t = 0, 0.5, 1."""
    return fs.simulate(MIX.flow(), fs.Normal(0.0, 1.0), (0.0, 1.0), 64, N, method="heun",
                       device="cpu", seed=6, save_at=2)


def test_flow_heun_lands_on_mixture(flow_heun):
    res = flow_heun
    assert res.n_nonfinite == 0
    fails = mixture_failures(res.paths[-1], MIX, "flow Heun, t = 1")
    fails += mixture_failures(res.paths[1], MIX.marginal(0.5), "flow Heun, t = 0.5",
                              reference=MIX.sample(N, 0.5, seed=7))
    fails += moment_failures(res.paths[1], *exact_moments(MIX, 0.5), "flow Heun, t = 0.5")
    fails += moment_failures(res.paths[0], *exact_moments(MIX, 0.0), "flow Heun, t = 0")
    assert not fails, "\n".join(fails)


def test_flow_checks_fail_on_wrong_model(flow_heun):
    """The same kernel with the WRONG mixture's params (weights 0.45/0.35/0.2, one mean
    shifted by 0.2) is rejected at t = 1 and at t = 0.5."""
    res = fs.simulate(MIX.flow(), fs.Normal(0.0, 1.0), (0.0, 1.0), 64, N, method="heun",
                      device="cpu", seed=6, save_at=2, params=WRONG.flow().params)
    assert mixture_failures(res.paths[-1], MIX, "wrong flow")
    assert mixture_failures(res.paths[1], MIX.marginal(0.5), "wrong flow t=0.5",
                            reference=MIX.sample(N, 0.5, seed=7))


@pytest.mark.parametrize("sigma,n_steps", [(1.0, 256), ((1.0, 0.0), 512)],
                         ids=["constant", "linear"])
def test_diffusion_euler_maruyama_lands_on_mixture(sigma, n_steps):
    res = fs.simulate(MIX.diffusion(sigma), fs.Normal(0.0, 1.0), (0.0, 1.0), n_steps, N,
                      method="euler_maruyama", device="cpu", seed=8, save_at=2)
    assert res.n_nonfinite == 0
    fails = mixture_failures(res.paths[-1], MIX, f"diffusion {sigma}, t = 1")
    fails += mixture_failures(res.paths[1], MIX.marginal(0.5), f"diffusion {sigma}, t = 0.5",
                              reference=MIX.sample(N, 0.5, seed=9))
    fails += moment_failures(res.paths[1], *exact_moments(MIX, 0.5), "diffusion, t = 0.5")
    assert not fails, "\n".join(fails)


def test_diffusion_checks_fail_on_wrong_model():
    res = fs.simulate(MIX.diffusion(1.0), fs.Normal(0.0, 1.0), (0.0, 1.0), 256, N,
                      method="euler_maruyama", device="cpu", seed=8,
                      params=WRONG.diffusion(1.0).params)
    assert mixture_failures(res.x, MIX, "wrong diffusion")


def test_deterministic_flow_reaches_both_modes():
    """The notes (why-sde-not-only-ode.md) say a deterministic ODE cannot reach a
    multimodal target. The exact flow does: for two modes at (+-3, 0) it splits N(0, I)
    along the invariant plane x_1 = 0 (u_1 is odd in x_1), every particle keeps the sign
    of its x_1, and both modes get their weight, from a map that is a function of X_0."""
    bi = fs.GaussianMixturePath([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], 0.5)
    x0 = np.random.default_rng(10).standard_normal((N, 2))
    a = fs.simulate(bi.flow(), x0, (0.0, 1.0), 64, N, method="heun", device="cpu", seed=1)
    b = fs.simulate(bi.flow(), x0, (0.0, 1.0), 64, N, method="heun", device="cpu", seed=2)
    np.testing.assert_array_equal(a.x, b.x)  # no noise: the seed plays no part
    fails = mixture_failures(a.x, bi, "bimodal flow")
    clear = np.abs(x0[:, 0]) > 1e-3
    flipped = int(np.sum(np.sign(a.x[clear, 0]) != np.sign(x0[clear, 0])))
    if flipped:
        fails.append(f"{flipped} particles crossed the invariant plane x_1 = 0")
    assert not fails, "\n".join(fails)


# ------------------------------------------------------------------- Langevin
def langevin_failures(x, path, label):
    """Mean, variance (SE from the sample's 4th moment) and occupations of a 1-D sample
    against p_data; occupations against exact samples (the components overlap)."""
    mean, cov = exact_moments(path, 1.0)
    fails = moment_failures(x, mean, cov, label)
    occ = M.occupation_test(x, path, reference=path.sample(x.shape[0], 1.0, seed=12))
    if np.abs(occ.z).max() >= K_SE or occ.p_value < P_5SE:
        fails.append(f"{label}: occupations {occ.fractions.round(4).tolist()} vs exact "
                     f"sample's: z {occ.z.round(2).tolist()}, p = {occ.p_value:.2g}")
    return fails


@pytest.fixture(scope="module")
def langevin_x0():
    return MIX1.sample(N, 1.0, seed=11)


def test_langevin_keeps_data_law_stationary(langevin_x0):
    """Started from p_data, 4 time units of stochastic Heun (h = 0.01; several
    relaxation times of the modes, 1/s_k^2 <= 4) leave the law p_data."""
    res = fs.simulate(MIX1.langevin(), langevin_x0, (0.0, 4.0), 400, N, method="heun",
                      device="cpu", seed=13)
    moved = np.mean(np.abs(res.x - langevin_x0))
    assert moved > 0.3, f"particles barely moved ({moved:.3f}): not a stationarity test"
    fails = langevin_failures(res.x, MIX1, "Langevin")
    assert not fails, "\n".join(fails)


def test_langevin_check_fails_on_wrong_target(langevin_x0):
    wrong = fs.GaussianMixturePath([0.3, 0.7], [-1.0, 1.65], [0.5, 0.7])
    res = fs.simulate(MIX1.langevin(), langevin_x0, (0.0, 4.0), 400, N, method="heun",
                      device="cpu", seed=13, params=wrong.langevin().params)
    assert langevin_failures(res.x, MIX1, "Langevin on a shifted target")


# ------------------------------------------------------------------- orders
@pytest.fixture(scope="module")
def flow_map_errors():
    """Median |X_1^n - X_1^ref| over 2000 particles with the same X_0; X_1^ref from Heun
    with 2048 steps. (The median, because the few particles near a separatrix between
    modes that a coarse step sends to the other mode dominate RMS errors.)"""
    ref = fs.simulate(MIX.flow(), fs.Normal(0.0, 1.0), (0.0, 1.0), 2048, 2000,
                      method="heun", device="cpu", seed=3).x
    steps = np.array([16, 32, 64, 128])
    out = {}
    for method in ("euler", "heun"):
        errs = []
        for n in steps:
            x = fs.simulate(MIX.flow(), fs.Normal(0.0, 1.0), (0.0, 1.0), int(n), 2000,
                            method=method, device="cpu", seed=3).x
            errs.append(np.median(np.linalg.norm(x - ref, axis=1)))
        out[method] = np.array(errs)
    return steps, out


def fitted_order(steps, errs):
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0]


@pytest.mark.parametrize("method,order", [("euler", 1.0), ("heun", 2.0)])
def test_flow_error_decreases_at_method_order(flow_map_errors, method, order):
    steps, errs = flow_map_errors
    slope = fitted_order(steps, errs[method])
    assert abs(slope - order) < 0.15, (f"{method}: fitted order {slope:.3f} (errors "
                                       f"{errs[method].tolist()}), expected {order}")


def test_order_check_fails_for_first_order_scheme(flow_map_errors):
    steps, errs = flow_map_errors
    assert abs(fitted_order(steps, errs["euler"]) - 2.0) >= 0.15


# ------------------------------------------------------------------- metrics
def test_sliced_w1_floor_matches_monte_carlo():
    """The expected sliced W1 between two exact samples (the formula) against the mean of
    40 independent pairs, within 5 SE."""
    n, reps = 1000, 40
    vals = [M.sliced_wasserstein(MIX.sample(n, 1.0, seed=100 + r),
                                 MIX.sample(n, 1.0, seed=200 + r), 16, seed=0)
            for r in range(reps)]
    floor = M.sliced_wasserstein_floor(MIX.sample(200_000, 1.0, seed=1), n, n, 16, seed=0)
    se = np.std(vals, ddof=1) / math.sqrt(reps)
    assert abs(np.mean(vals) - floor) < K_SE * se, (
        f"mean {np.mean(vals):.5f} vs formula {floor:.5f}, SE {se:.2g}")
    # Unequal sizes go through the merged-CDF formula; same expectation law.
    sw = M.SlicedW1(MIX.sample(3 * n, 1.0, seed=5), 16, seed=0)
    assert sw(MIX.sample(n, 1.0, seed=6)) < 3 * sw.floor(n)


def test_sliced_w1_detects_wrong_model():
    """A wrong mixture's SW exceeds the exact-vs-exact values by more than 5 SD."""
    n, reps = 5000, 12
    sw = M.SlicedW1(MIX.sample(n, 1.0, seed=1), 16, seed=0)
    null = np.array([sw(MIX.sample(n, 1.0, seed=300 + r)) for r in range(reps)])
    bad = sw(WRONG.sample(n, 1.0, seed=2))
    assert bad > null.mean() + K_SE * null.std(ddof=1), (bad, null.mean(), null.std())
    assert abs(null.mean() - sw.floor(n)) < K_SE * null.std(ddof=1) / math.sqrt(reps)


def test_sliced_w1_properties():
    x = MIX.sample(500, 1.0, seed=1)
    assert M.sliced_wasserstein(x, x) == 0.0
    shift = np.array([0.3, -0.4])
    # W1 of a translation along each direction is |theta . shift|; the mean over uniform
    # directions in 2-D is 2 |shift| / pi (here with 2000 directions).
    sw = M.sliced_wasserstein(x + shift, x, n_projections=2000, seed=3)
    assert sw == pytest.approx(2 * 0.5 / math.pi, rel=0.03)


def test_occupation_and_component_checks_on_exact_and_wrong():
    x = MIX.sample(N, 1.0, seed=20)
    occ = M.occupation_test(x, MIX)
    assert occ.p_value > P_5SE and occ.counts.sum() == N and occ.dof == 2
    bad = M.occupation_test(WRONG.sample(N, 1.0, seed=20), MIX)
    assert bad.p_value < P_5SE and np.abs(bad.z).max() > K_SE
    err = M.component_errors(x, MIX)
    assert err.max_abs_mean_z < K_SE and err.max_abs_cov_z < K_SE
    shifted = fs.GaussianMixturePath(MIX.weights, MIX.means * 1.02, MIX.stds)
    assert M.component_errors(shifted.sample(N, 1.0, seed=20), MIX).max_abs_mean_z > K_SE
    wider = fs.GaussianMixturePath(MIX.weights, MIX.means, MIX.stds * 1.05)
    assert M.component_errors(wider.sample(N, 1.0, seed=20), MIX).max_abs_cov_z > K_SE
    # Reference mode at t = 0.5, where components overlap.
    ref = MIX.sample(N, 0.5, seed=21)
    assert not mixture_failures(MIX.sample(N, 0.5, seed=22), MIX.marginal(0.5), "x", ref)
    assert mixture_failures(WRONG.sample(N, 0.5, seed=22), MIX.marginal(0.5), "x", ref)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        M.occupation_test(np.array([[0.0, np.nan], [1.0, 1.0]]), MIX)
    with pytest.raises(ValueError, match="2 columns"):
        M.component_errors(np.zeros((10, 3)), MIX)
    with pytest.raises(TypeError, match="weights"):
        M.assign_components(np.zeros((10, 2)), object())
    with pytest.raises(ValueError, match="n_projections"):
        M.sliced_wasserstein(np.zeros((10, 2)), np.zeros((10, 2)), n_projections=0)


# ------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    (dict(weights=[0.5, -0.5, 1.0]), "weights must all be > 0"),
    (dict(weights=[0.5, 0.3, 0.3]), "sum to 1"),
    (dict(weights=[[0.5, 0.5]]), "weights must have 1"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]]), "K = 3"),
    (dict(means=[[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), "means must be finite"),
    (dict(stds=[0.5, 0.0, 0.4]), "stds must all be > 0"),
    (dict(stds=[0.5, 0.4]), r"stds must be a number or have shape \(3,\)"),
    (dict(stds="abc"), "stds must be an array of real numbers"),
])
def test_gaussian_mixture_path_rejects_bad_arguments(kwargs, match):
    args = dict(weights=[0.5, 0.3, 0.2], means=[[0, 0], [1, 1], [2, 2]], stds=0.5)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        fs.GaussianMixturePath(**args)


def test_path_methods_reject_bad_arguments():
    with pytest.raises(ValueError, match="sigma must be"):
        MIX.diffusion(-1.0)
    with pytest.raises(ValueError, match="sigma must be"):
        MIX.diffusion((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        MIX.sample(10, t=1.5)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        MIX.sample(0)
    with pytest.raises(ValueError, match="x must have shape"):
        MIX.velocity(np.zeros((4, 3)), 0.5)
    with pytest.raises(ValueError, match="radius"):
        fs.GaussianMixturePath.ring(8, radius=-1.0)


def test_params_layout_round_trip():
    for model, extra in ((MIX.flow(), 2), (MIX.diffusion((0.7, 0.1)), 2), (MIX.langevin(), 0)):
        back = fs.GaussianMixturePath.unpack(model.params, MIX.dim, n_extra=extra)
        np.testing.assert_allclose(back.weights, MIX.weights, rtol=1e-15)
        np.testing.assert_array_equal(back.means, MIX.means)
        np.testing.assert_array_equal(back.stds, MIX.stds)
    assert tuple(MIX.diffusion((0.7, 0.1)).params[-2:]) == (0.7, 0.1)
    # Nothing but d and the params length is compiled in: mixtures with the same K and d
    # share a kernel; another K gets its own (the kernel's copy of p has a fixed length).
    other_means = fs.GaussianMixturePath(MIX.weights, MIX.means + 1.0, MIX.stds * 2.0)
    assert MIX.flow().fingerprint == other_means.flow().fingerprint
    assert MIX.flow().fingerprint != fs.GaussianMixturePath.ring(MIX.weights.size + 1).flow().fingerprint


# ------------------------------------------------------------------- MLP fields
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_forward_plain_python_matches_numpy(activation):
    field = random_mlp([3, 16, 8, 2], activation, seed=1, scale=2.0)
    x = np.random.default_rng(2).normal(0, 3, (20, 2))
    for t in (0.0, 0.37, 1.0):
        np.testing.assert_allclose(kernel_field(field.drift, field.params, x, t), field(x, t),
                                   rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("activation", ["tanh"])
def test_mlp_fastsde_math_and_libm_agree(activation):
    """math="fastsde" (fastsde.kmath, the default) and math="libm" (math.tanh, math.exp)
    are two spellings of one network: the forward passes agree to a few ulps in plain
    Python (float64) and in a float32 kernel (where kmath computes in float32 and libm's
    branch in float64); the two compile to different kernels. One activation: each kernel
    costs ~7 s to compile, and tests/test_fmath.py covers silu and gelu themselves."""
    own = random_mlp([3, 16, 8, 2], activation, seed=1, scale=2.0)
    libm = random_mlp([3, 16, 8, 2], activation, seed=1, scale=2.0, math="libm")
    assert own.math == "fastsde" and libm.math == "libm" and "libm" in repr(libm)
    assert own.ode().fingerprint != libm.ode().fingerprint
    x = np.random.default_rng(2).normal(0, 3, (20, 2))
    np.testing.assert_allclose(kernel_field(own.drift, own.params, x, 0.4),
                               kernel_field(libm.drift, libm.params, x, 0.4), rtol=1e-13,
                               atol=1e-14)
    a, b = (fs.simulate(f.ode(), x, (0.0, 0.5), 4, 20, method="euler", device="cpu",
                        dtype="float32").x for f in (own, libm))
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match="math must be one of .*'fastsde', 'libm'.*'glibc'"):
        fs.MLPField(own.layers, activation, math="glibc")


def test_mlp_forward_matches_explicit_formula():
    """numpy forward against a hand-written two-layer tanh network (z = W a + b)."""
    rng = np.random.default_rng(3)
    w0, b0, w1, b1 = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=(2, 5)), \
        rng.normal(size=2)
    field = fs.MLPField([(w0, b0), (w1, b1)], "tanh")
    x, t = rng.normal(size=2), 0.25
    expect = w1 @ np.tanh(w0 @ np.array([x[0], x[1], t]) + b0) + b1
    np.testing.assert_allclose(field(x, t)[0], expect, rtol=1e-14)


@pytest.fixture(scope="module")
def gelu_field():
    return random_mlp([3, 32, 32, 2], "gelu", seed=4)


def test_mlp_in_kernel_euler_step(gelu_field):
    """One Euler step in the kernel: x1 = x0 + h u(x0, t0), for shared and per-path
    weights (two networks in one launch)."""
    f = gelu_field
    x0 = np.random.default_rng(5).normal(size=(300, 2))
    t0, h = 0.3, 0.05
    res = fs.simulate(f.ode(), x0, (t0, t0 + h), 1, 300, method="euler", device="cpu")
    np.testing.assert_allclose(res.x, x0 + h * f(x0, t0), rtol=1e-12, atol=1e-14)
    g = random_mlp([3, 32, 32, 2], "gelu", seed=99)
    params = np.vstack([f.params] * 150 + [g.params] * 150)
    res = fs.simulate(f.ode(), x0, (t0, t0 + h), 1, 300, method="euler", device="cpu",
                      params=params)
    expect = np.vstack([x0[:150] + h * f(x0[:150], t0), x0[150:] + h * g(x0[150:], t0)])
    np.testing.assert_allclose(res.x, expect, rtol=1e-12, atol=1e-14)
    # Three steps, the networks alternating path by path: a lane must get its own
    # weights back at every step (a shared row is loaded once per chunk, per-path rows
    # are reloaded per lane and step).
    params = np.vstack([f.params, g.params] * 150)
    res = fs.simulate(f.ode(), x0, (t0, t0 + 3 * h), 3, 300, method="euler", device="cpu",
                      params=params)
    expect = x0.copy()
    for k in range(3):
        t = t0 + k * h
        expect = expect + h * np.where(np.arange(300)[:, None] % 2 == 0, f(expect, t),
                                       g(expect, t))
    np.testing.assert_allclose(res.x, expect, rtol=1e-12, atol=1e-13)


def test_mlp_sde_helper():
    """.sde(sigma): drift = the network, additive noise sigma_t; with sigma = 0 one
    Euler-Maruyama step is the Euler step, with sigma > 0 the increment's spread is
    sigma sqrt(h)."""
    f = random_mlp([3, 16, 2], "tanh", seed=6)
    x0 = np.random.default_rng(7).normal(size=(N, 2))
    h = 0.01
    res = fs.simulate(f.sde(0.0), x0, (0.0, h), 1, N, method="euler_maruyama", device="cpu")
    np.testing.assert_allclose(res.x, x0 + h * f(x0, 0.0), rtol=1e-12, atol=1e-14)
    res = fs.simulate(f.sde((2.0, 0.0)), x0, (0.0, h), 1, N, method="euler_maruyama",
                      device="cpu", seed=3)
    noise = (res.x - x0 - h * f(x0, 0.0)) / math.sqrt(h)
    sd = noise.std(ddof=1)
    se = 2.0 / math.sqrt(2 * (2 * N - 1))
    assert abs(sd - 2.0) < K_SE * se, f"noise sd {sd:.4f} vs sigma_0 = 2, SE {se:.2g}"


def test_mlp_npz_round_trip_and_errors(tmp_path):
    f = random_mlp([3, 8, 2], "silu", seed=8)
    f.save_npz(tmp_path / "m.npz")
    g = fs.MLPField.from_npz(tmp_path / "m.npz")
    assert g.activation == "silu"
    np.testing.assert_array_equal(g.params, f.params)
    assert g.drift.__code__.co_code == f.drift.__code__.co_code
    np.savez(tmp_path / "bad.npz", W0=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no b0"):
        fs.MLPField.from_npz(tmp_path / "bad.npz", activation="tanh")
    with pytest.raises(ValueError, match="activation must be one of"):
        fs.MLPField([(np.zeros((2, 3)), np.zeros(2))], "sigmoid")
    with pytest.raises(ValueError, match="d \\+ 1 inputs"):
        fs.MLPField([(np.zeros((2, 2)), np.zeros(2))], "tanh")
    with pytest.raises(ValueError, match=r"b must have shape \(4,\)"):
        fs.MLPField([(np.zeros((4, 3)), np.zeros(3)), (np.zeros((2, 4)), np.zeros(2))])
    with pytest.raises(ValueError, match="has 5 inputs"):
        fs.MLPField([(np.zeros((4, 3)), np.zeros(4)), (np.zeros((2, 5)), np.zeros(2))])


# ------------------------------------------------------------------- CUDA (PTX only)
def _compile_ptx_or_skip():
    try:
        from numba import cuda

        cuda.compile_ptx(lambda a: a + 1.0, "float64(float64)", device=True, cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 - no numba-cuda or no NVVM here
        pytest.skip(f"cannot compile PTX here: {type(exc).__name__}: {str(exc)[:100]}")
    return cuda


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_functions_compile_as_cuda_device_functions(dtype):
    """The same plain functions (and the MLP's local scratch and kmath activations)
    compile for sm_90."""
    cuda = _compile_ptx_or_skip()
    from fastsde import kmath
    from fastsde.scratch import register

    assert register() and kmath.register_cuda()
    sig = f"void({dtype}, {dtype}[::1], {dtype}[::1], {dtype}[::1])"
    from fastsde.kernels.cuda import _as_if_device

    mlp = make_mlp_drift((3, 16, 16, 2), "gelu")
    # A mixture too large to unroll: the form with its loop over the components kept.
    loops = unrolled_path_drift(20, 2)
    score_loops = unrolled_data_score(20, 2)
    for fn in (gm_path_drift, gm_path_sigma, gm_data_score, langevin_sigma, mlp, loops,
               score_loops):
        # kmath's functions are device functions, whose compile asks numba-cuda for the
        # current GPU's compute capability: there is none here.
        with _as_if_device((9, 0)):
            ptx, _ = cuda.compile_ptx(fn, sig, device=True, cc=(9, 0))
        assert ".func" in ptx


# ------------------------------------------------------------------- demo
def test_demo_generative_small(capsys, tmp_path):
    png = tmp_path / "g.png"
    # float64: the kernels the tests above compiled (the demo's default is float32).
    assert cli.main(["demo", "generative", "--paths", "4000", "--step-counts", "4,16",
                     "--dtype", "float64", "--device", "cpu", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    for text in ("flow euler", "flow heun", "diffusion euler_maruyama", "exact vs exact",
                 "flow-map error order"):
        assert text in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("4 ", "16 "))]
    assert len(rows) == 6
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        assert png.exists() and png.stat().st_size > 10_000


def test_demo_generative_rejects_bad_step_counts(capsys):
    assert cli.main(["demo", "generative", "--paths", "100", "--step-counts", "4,x",
                     "--device", "cpu", "--no-plot"]) == 2
    assert "--step-counts" in capsys.readouterr().err


# ------------------------------------------------------------------- example
def test_flow_matching_example(capsys, tmp_path):
    """Without PyTorch the example says so and exits 0; with it, a tiny run trains,
    exports, reloads and samples."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "flow_matching_torch",
        pathlib.Path(__file__).resolve().parents[1] / "examples" / "flow_matching_torch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out_npz = tmp_path / "fm.npz"
    assert mod.main(["--iters", "20", "--batch", "256", "--hidden", "8", "--paths", "2000",
                     "--steps", "2", "--out", str(out_npz)]) == 0
    out = capsys.readouterr().out
    if importlib.util.find_spec("torch") is None:
        assert "PyTorch is not installed" in out and not out_npz.exists()
    else:
        assert out_npz.exists() and "MLP (learned)" in out and "exact u_t" in out


def test_mixtures_too_large_to_unroll_get_a_lane_block():
    """The path's field is unrolled_path_drift; where the kernel does not unroll it
    (K - 1 > unroll.MAX_TRIP, or the function beyond unroll.MAX_STATEMENTS) its models
    also carry the lane-block form (tests/test_lane_block.py checks their bits);
    Langevin's score likewise."""
    from fastsde.generative import _data_score, _path_drift
    from fastsde.kernels import unroll

    drift, block = _path_drift(8, 2)
    assert drift.__name__ == "gm_path_drift_unrolled" and block is None
    for n_comp, dim in ((unroll.MAX_TRIP + 2, 2), (4, 100)):
        drift, block = _path_drift(n_comp, dim)
        assert drift.__name__ == "gm_path_drift_unrolled"
        assert (block.n_comp, block.dim) == (n_comp, dim)
    big = fs.GaussianMixturePath.ring(unroll.MAX_TRIP + 2, 3.0, 0.4)
    assert big.flow().lane_block is not None and big.diffusion(0.5).lane_block is not None
    assert MIX.flow().lane_block is None
    score, block = _data_score(8, 2)
    assert score.__name__ == "gm_data_score_unrolled" and block is None
    for n_comp, dim in ((unroll.MAX_TRIP + 2, 2), (4, 100)):
        score, block = _data_score(n_comp, dim)
        assert score.__name__ == "gm_data_score_unrolled"
        assert (block.n_comp, block.dim) == (n_comp, dim)
    assert big.langevin().lane_block is not None and MIX.langevin().lane_block is None
