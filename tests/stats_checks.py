"""Statistical checks shared by the tests. Each returns a list of failure messages (empty
when the sample passes), so the suite can also show that every check FAILS on a
deliberately wrong sample. Tolerances are k standard errors (k = 5 by default)."""

import numpy as np
from scipy import stats as sps

K_SE = 5.0


def close(name, estimate, exact, se, k=K_SE):
    """Failure message if |estimate - exact| >= k * se."""
    estimate, exact, se = float(estimate), float(exact), float(se)
    if not abs(estimate - exact) < k * se:
        return [f"{name}: estimate {estimate:.6g} vs exact {exact:.6g}: off by "
                f"{abs(estimate - exact) / se:.1f} SE (SE {se:.3g}, allowed {k} SE)"]
    return []


def normal_sample(z, mean=0.0, var=1.0, ks_p=1e-4, label="sample"):
    """Mean, variance, skewness, excess kurtosis within k SE of N(mean, var); KS p-value."""
    z = np.asarray(z, dtype=np.float64).ravel()
    n = z.size
    sd = np.sqrt(var)
    u = (z - mean) / sd
    fails = []
    fails += close(f"{label} mean", z.mean(), mean, sd / np.sqrt(n))
    fails += close(f"{label} variance", z.var(ddof=1), var, var * np.sqrt(2.0 / (n - 1)))
    fails += close(f"{label} skewness", sps.skew(u), 0.0, np.sqrt(6.0 / n))
    fails += close(f"{label} excess kurtosis", sps.kurtosis(u), 0.0, np.sqrt(24.0 / n))
    p = sps.kstest(u, "norm").pvalue
    if p < ks_p:
        fails.append(f"{label} KS test against N({mean}, {var}): p = {p:.3g} < {ks_p}")
    return fails


def uncorrelated(a, b, label):
    """Pearson correlation of paired samples within k / sqrt(n) of zero."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    r = np.corrcoef(a, b)[0, 1]
    return close(f"{label} correlation", r, 0.0, 1.0 / np.sqrt(a.size))


def lag_correlations(z, lags=(1, 2, 3, 4, 5, 8), label="sequence"):
    """Serial correlations of a 1-D sequence at several lags."""
    z = np.asarray(z, dtype=np.float64).ravel()
    fails = []
    for lag in lags:
        fails += uncorrelated(z[:-lag], z[lag:], f"{label} lag-{lag}")
    return fails
