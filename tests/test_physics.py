"""Brownian motion, Ornstein-Uhlenbeck and convergence orders against exact answers."""

import math

import numpy as np
import pytest

import fastsde as fs

import stats_checks as sc


# ---------------------------------------------------------------- Brownian motion
@pytest.fixture(scope="module")
def bm_increments():
    """Increments of a 2-D Brownian motion over every step: (n_steps, n_paths, 2)."""
    n_steps, h = 40, 0.05
    res = fs.simulate(fs.BrownianMotion(sigma=1.0, dim=2), 0.0, (0.0, n_steps * h), n_steps,
                      25_000, device="cpu", seed=11, save_at=n_steps)
    return np.diff(res.paths, axis=0), h


def test_bm_increments_are_normal_with_variance_h(bm_increments):
    dw, h = bm_increments
    fails = sc.normal_sample(dw, mean=0.0, var=h, label="BM increments")
    assert not fails, "\n".join(fails)


def test_bm_increments_independent(bm_increments):
    dw, h = bm_increments
    fails = []
    fails += sc.uncorrelated(dw[:-1], dw[1:], "consecutive steps")
    fails += sc.uncorrelated(dw[:, :-1], dw[:, 1:], "adjacent paths")
    fails += sc.uncorrelated(dw[..., 0], dw[..., 1], "components")
    fails += sc.uncorrelated(dw[:-4], dw[4:], "steps 4 apart (same Philox block for dim 1)")
    assert not fails, "\n".join(fails)


def test_bm_checks_fail_on_wrong_model(bm_increments):
    """BM with sigma 5% off, and increments correlated across steps, are caught."""
    dw, h = bm_increments
    assert sc.normal_sample(1.05 * dw, mean=0.0, var=h)
    assert sc.uncorrelated(dw[:-1], dw[1:] + 0.05 * dw[:-1], "x")


# ---------------------------------------------------------------- Ornstein-Uhlenbeck
def ou_moment_failures(res, theta, sigma, x0):
    """Mean and variance at every save time against the exact OU law (5 SE)."""
    fails = []
    n = res.count[:, 0]
    for s, t in enumerate(res.t):
        if t == 0:
            continue
        mean = x0 * math.exp(-theta * t)
        var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * t))
        fails += sc.close(f"mean at t={t:g}", res.mean[s, 0], mean, math.sqrt(var / n[s]))
        fails += sc.close(f"var at t={t:g}", res.var[s, 0], var, var * math.sqrt(2 / (n[s] - 1)))
    return fails


# h = 2e-3, theta = 1: Euler-Maruyama's bias is theta^2 h t / 2 relative in the mean and
# theta h / 2 in the variance, below 0.1 SE at these path counts.
OU_STEPS, OU_T, OU_PATHS = 1000, 2.0, 100_000


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ou_mean_and_variance(ou, dtype):
    res = fs.simulate(ou, 1.0, (0.0, OU_T), OU_STEPS, OU_PATHS, device="cpu", seed=5,
                      dtype=dtype, save_at=4, stats=True)
    fails = ou_moment_failures(res, 1.0, 0.5, 1.0)
    assert not fails, "\n".join(fails)


def test_ou_checks_fail_with_sigma_or_theta_5_percent_off():
    for theta, sigma in ((1.0, 0.525), (1.05, 0.5)):
        wrong = fs.OU(theta=theta, sigma=sigma)
        res = fs.simulate(wrong, 1.0, (0.0, OU_T), OU_STEPS, OU_PATHS, device="cpu", seed=5,
                          save_at=4, stats=True)
        assert ou_moment_failures(res, 1.0, 0.5, 1.0), (theta, sigma)


def ou_stationary_failures(model, theta, sigma, dtype):
    # theta = 1, t = 8: e^{-16} of the initial condition is left; h = 4e-3 puts the
    # Euler-Maruyama bias (theta h / 2 = 0.2% of the variance) at 0.3 SE.
    res = fs.simulate(model, 0.0, (0.0, 8.0), 2000, 50_000, device="cpu", seed=9,
                      dtype=dtype, stats=True)
    var = sigma**2 / (2 * theta)
    n = res.count[-1, 0]
    return sc.close("stationary variance", res.var[-1, 0], var, var * math.sqrt(2 / (n - 1)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ou_stationary_variance(ou, dtype):
    fails = ou_stationary_failures(ou, 1.0, 0.5, dtype)
    assert not fails, "\n".join(fails)


def test_ou_stationary_check_fails_with_sigma_5_percent_off():
    assert ou_stationary_failures(fs.OU(theta=1.0, sigma=0.525), 1.0, 0.5, "float64")


# ---------------------------------------------------------------- convergence orders
def fitted_order(hs, errors):
    return np.polyfit(np.log(hs), np.log(errors), 1)[0]


@pytest.mark.parametrize("method,order", [("euler", 1.0), ("heun", 2.0), ("rk4", 4.0)])
def test_ode_orders_on_linear_flow(linear_flow, method, order):
    theta, t1, x0 = 1.5, 1.0, np.array([[1.0], [-2.0], [0.5]])
    steps = [8, 16, 32, 64]
    errors = []
    for n in steps:
        res = fs.simulate(linear_flow, x0, (0.0, t1), n, 3, method=method, device="cpu")
        errors.append(np.max(np.abs(res.x - x0 * math.exp(-theta * t1))))
    slope = fitted_order([t1 / n for n in steps], errors)
    assert abs(slope - order) < 0.15, f"{method}: fitted order {slope:.3f}, errors {errors}"


def test_order_check_fails_on_wrong_scheme(linear_flow):
    """Heun's test would fail for Euler: the order estimate separates them."""
    steps = [8, 16, 32, 64]
    errs = [np.abs(fs.simulate(linear_flow, 1.0, (0.0, 1.0), n, 1, method="euler",
                               device="cpu").x[0, 0] - math.exp(-1.5)) for n in steps]
    assert abs(fitted_order([1 / n for n in steps], errs) - 2.0) > 0.5


def test_euler_maruyama_weak_order_one_on_gbm_mean():
    """E[X_T] of GBM under Euler-Maruyama is x0 (1 + mu h)^n: weak error ~ mu^2 T h / 2."""
    mu, sigma, t1, x0 = 1.0, 0.2, 1.0, 1.0
    model = fs.GBM(mu=mu, sigma=sigma)
    steps = [4, 8, 16, 32]
    errors, fails = [], []
    for n in steps:
        res = fs.simulate(model, x0, (0.0, t1), n, 200_000, device="cpu", seed=n, stats=True)
        est, se = res.mean[-1, 0], math.sqrt(res.var[-1, 0] / res.count[-1, 0])
        # the implementation matches the scheme's exact mean ...
        fails += sc.close(f"EM mean, n={n}", est, x0 * (1 + mu * t1 / n) ** n, se)
        errors.append(abs(est - x0 * math.exp(mu * t1)))
    assert not fails, "\n".join(fails)
    # ... and the weak error vs the exact GBM mean falls at order 1
    slope = fitted_order([t1 / n for n in steps], errors)
    assert abs(slope - 1.0) < 0.2, f"fitted weak order {slope:.3f}, errors {errors}"


def test_stochastic_heun_weak_order_two_on_additive_sde():
    """OU under stochastic Heun: E[X_n] = x0 (1 - a + a^2/2)^n with a = theta h."""
    theta, sigma, t1, x0 = 2.0, 0.1, 1.0, 1.0
    model = fs.OU(theta=theta, sigma=sigma)
    steps = [4, 8, 16]
    errors, fails = [], []
    for n in steps:
        a = theta * t1 / n
        res = fs.simulate(model, x0, (0.0, t1), n, 200_000, method="heun", device="cpu",
                          seed=n, stats=True)
        est, se = res.mean[-1, 0], math.sqrt(res.var[-1, 0] / res.count[-1, 0])
        fails += sc.close(f"Heun mean, n={n}", est, x0 * (1 - a + a * a / 2) ** n, se)
        errors.append(abs(est - x0 * math.exp(-theta * t1)))
    assert not fails, "\n".join(fails)
    slope = fitted_order([t1 / n for n in steps], errors)
    assert abs(slope - 2.0) < 0.25, f"fitted weak order {slope:.3f}, errors {errors}"
