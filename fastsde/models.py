"""Built-in models. Each is an ordinary :class:`fastsde.SDE` whose parameters travel as
``params`` (so ``simulate(params=...)`` sweeps them, per path if wanted)."""

import numbers

import numpy as np

from .model import SDE


def _check_number(value, name, positive=False, nonnegative=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    return float(value)


def bm_drift(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = 0.0


def bm_diffusion(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = p[0]


def ou_drift(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = -p[0] * x[i]


def ou_diffusion(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = p[1]


def gbm_drift(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = p[0] * x[i]


def gbm_diffusion(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = p[1] * x[i]


class BrownianMotion(SDE):
    """Brownian motion dX = sigma dW in ``dim`` independent components.

    params: (sigma,)
    """

    def __init__(self, sigma=1.0, dim=1):
        self.sigma = _check_number(sigma, "sigma", nonnegative=True)
        super().__init__(bm_drift, bm_diffusion, dim, noise="additive", params=(self.sigma,),
                         name=f"BrownianMotion(sigma={self.sigma:g}, dim={dim})")


class OU(SDE):
    """Ornstein-Uhlenbeck process dX = -theta X dt + sigma dW (isotropic in ``dim``).

    Mean x0 e^{-theta t}, variance sigma^2 / (2 theta) (1 - e^{-2 theta t}).
    params: (theta, sigma)
    """

    def __init__(self, theta, sigma, dim=1):
        self.theta = _check_number(theta, "theta")
        self.sigma = _check_number(sigma, "sigma", nonnegative=True)
        super().__init__(ou_drift, ou_diffusion, dim, noise="additive",
                         params=(self.theta, self.sigma),
                         name=f"OU(theta={self.theta:g}, sigma={self.sigma:g}, dim={dim})")

    def mean(self, t, x0):
        """Exact E[X_t] from a fixed x0."""
        return np.asarray(x0) * np.exp(-self.theta * np.asarray(t))

    def var(self, t, x0_var=0.0):
        """Exact Var[X_t] per component, from an initial variance ``x0_var``."""
        t = np.asarray(t, dtype=float)
        decay = np.exp(-2.0 * self.theta * t)
        return self.sigma**2 / (2.0 * self.theta) * (1.0 - decay) + x0_var * decay

    @property
    def stationary_var(self):
        """sigma^2 / (2 theta)."""
        return self.sigma**2 / (2.0 * self.theta)


class GBM(SDE):
    """Geometric Brownian motion dX = mu X dt + sigma X dW (diagonal noise).

    E[X_t] = x0 e^{mu t}; Var[X_t] = x0^2 e^{2 mu t} (e^{sigma^2 t} - 1).
    params: (mu, sigma)
    """

    def __init__(self, mu, sigma, dim=1):
        self.mu = _check_number(mu, "mu")
        self.sigma = _check_number(sigma, "sigma", nonnegative=True)
        super().__init__(gbm_drift, gbm_diffusion, dim, noise="diagonal",
                         params=(self.mu, self.sigma),
                         name=f"GBM(mu={self.mu:g}, sigma={self.sigma:g}, dim={dim})")

    def mean(self, t, x0):
        return np.asarray(x0) * np.exp(self.mu * np.asarray(t))

    def var(self, t, x0):
        t = np.asarray(t, dtype=float)
        return np.asarray(x0)**2 * np.exp(2 * self.mu * t) * np.expm1(self.sigma**2 * t)
