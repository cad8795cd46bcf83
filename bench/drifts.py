#!/usr/bin/env python
"""Users' models at SIMD speed, the baseline: fastsde against numpy, torch and JAX loops.

Throughput (path-steps per second) of user-defined models, each run by every engine side
by side in one process, float32 and float64:

* fastsde: ``fs.simulate`` of the model written as plain Python ``f(t, x, p, out)``
  functions (or the built-in model), on the CPU, final states kept (``keep_x=True``);
* numpy: a vectorised loop over the steps on arrays of shape (dim, n_paths) (measured
  faster than (n_paths, dim): the components are contiguous), the normals from
  ``np.random.default_rng(seed).standard_normal`` in the run's dtype;
* torch (where installed): the same batched loop in torch on the CPU under
  ``torch.no_grad()``, ``torch.set_num_threads`` = the CPU count (``--torch-threads``),
  normals from a seeded ``torch.Generator``;
* jax (where installed): ``jax.jit`` of a ``lax.fori_loop`` over the steps of the
  ``jax.vmap``-ed one-path step, normals from ``jax.random`` (a key folded with the step
  index), compiled ahead of time and timed with ``block_until_ready``. float64 needs
  ``jax_enable_x64``, which must be set before any JAX array exists: it is set at start
  when float64 is asked for, and every array is then given its dtype explicitly.

numpy and torch evaluate the same batched implementation of each model's field (written
against a small table of array operations), jax a one-path version of it (under vmap),
the same formulas as the fastsde model's functions. Rows:

    ou            OU dX = -X dt + 0.5 dW (fs.OU), x0 = 1, Euler-Maruyama
    bumps8        2-D ODE u(x) = sum_k w_k (mu_k - x) / sum_k w_k,
                  w_k = exp(-|x - mu_k|^2 / (2 s^2)), 8 bumps on a circle of radius
                  2, s = 0.7, Euler
    bumps8_libm   the same model with math="libm": libm's exp, where bumps8 gets
                  fastsde.kmath's (the CPU kernel unrolls the loop over the bumps and
                  inlines exp)
    bumps8_np     the same model written with np.exp (compiled as fastsde.kmath's
                  exp since stop 30; numpy's, a libm call, before)
    bumps64       the field of bumps8 with 64 bumps (same radius and s), written with
                  the count read from p (``K = (p.shape[0] - 1) // 2``): a loop the kernel
                  cannot unroll, which fastsde evaluates through the drift's lane form
                  (fastsde/kernels/lanes.py: the lanes inside the loop over the bumps)
    gm_flow       fs.GaussianMixturePath.ring(8, 4, 0.3).flow(), Euler
    gm_diffusion  the same path's .diffusion(1.0), Euler-Maruyama
    gm64_flow     fs.GaussianMixturePath.ring(64, 4, 0.3).flow(), Euler: more components
                  than the kernel unrolls (17), so fastsde evaluates the field for a
                  block of 64 paths at once (its lane-block form)
    mlp64_tanh, mlp64_silu, mlp256_tanh, mlp256_silu
                  fs.mlp.random_mlp([3, H, H, 2], act).ode() for H = 64, 256, Euler
    heston        Heston (S, v), correlated noise through a Cholesky factor (general
                  noise 2 x 2), full truncation max(v, 0), Euler-Maruyama
    lorenz        Lorenz 63 (10, 28, 8/3) with additive noise 1 per component,
                  Euler-Maruyama
    bistable_erf  dX = (2 erf(X) - X) dt + 0.5 dW (math.erf; scipy.special.erf,
                  torch.erf, jax.scipy.special.erf for the peers), x0 = 0.5,
                  Euler-Maruyama; bistable_erf_libm the same with math="libm"
    hoop          a bead on a rotating hoop, damped and shaken: dθ = v dt, dv = (sin θ
                  (w^2 cos θ - g) - γ v) dt + 0.3 dW (math.sin and math.cos of the
                  state on every path; w^2 = 2, g = 1, γ = 0.5), x0 = (1, 0),
                  Euler-Maruyama; hoop_libm the same with math="libm"
    cev           constant elasticity of variance: dS = 0.05 S dt + 0.8 max(S, 0)^0.7 dW
                  (``**`` with a parameter for exponent: kmath's pow), S0 = 100,
                  Euler-Maruyama; cev_libm the same with math="libm"

ODE rows start every engine from the same random initial states (x0 per path), so the
final states must match to float tolerance: |difference| / (1 + |x|) within 1e-3
(float32) or 1e-9 (float64) on all but 0.1% of the paths both ran. SDE rows compare the
mean of component 0 of the final state against fastsde's (within 6 standard errors, plus
1e-3 relative in float32). The "agree" column reports it (a warning, not a failure).

Each (row, dtype) warms up (compiles) every engine first, then takes the best of
``--repeats`` runs, the engines alternating within each repeat, each run after a rest of
``SETTLE_S`` (the previous engine's thread pool stops spinning). fastsde's time is the
wall time of the ``fs.simulate`` call. numpy, torch and jax may run other path counts
(the table says how many); the rate is path-steps per second either way. The default
sizes give fastsde runs of about 0.2-2 s on a 2-core machine with the kernels of
2026-12-02 (the MLP rows: every engine runs the same paths). ``--scale`` multiplies every
path count.

    python bench/drifts.py                   # writes bench/results/drifts-<date>.md and .png
    python bench/drifts.py --rows ou,heston --dtypes float32 --out -
    python bench/drifts.py --scale 0.05 --repeats 1      # a quick check of every row
    python bench/drifts.py --engines fastsde,numpy        # skip torch and jax
    python bench/drifts.py --figure-from bench/results/drifts-2026-12-04b.md
                                  # the figure of a results file (where the run's own
                                  # environment had no matplotlib)

Run it with an interpreter whose environment has torch and jax for those columns (they
read "not installed" otherwise). NUMBA_CACHE_DIR keeps the compiled kernels between runs.
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time
import types

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402
from common import cpu_description, write_report  # noqa: E402

SEED = 0
ENGINES = ("fastsde", "numpy", "torch", "jax")
PEERS = ENGINES[1:]


# ---------------------------------------------------------------- fastsde user functions
# Plain Python, as a user writes them; constants travel in p so that they take the run's
# dtype. Float literals (0.0) are float64 to Numba, so in float32 runs the sums that start
# from them (bumps_drift) and max(x, 0.0) (Heston) are float64, as they are in users' code.

def bumps_drift(t, x, p, out):
    """p = [mu_x (8) | mu_y (8) | 1 / (2 s^2)]."""
    c = p[16]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(8):
        dx = p[k] - x[0]
        dy = p[8 + k] - x[1]
        w = math.exp(-(dx * dx + dy * dy) * c)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def bumps_drift_np(t, x, p, out):
    """:func:`bumps_drift` written with ``np.exp``, as many users write it."""
    c = p[16]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(8):
        dx = p[k] - x[0]
        dy = p[8 + k] - x[1]
        w = np.exp(-(dx * dx + dy * dy) * c)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def bumps_drift_any(t, x, p, out):
    """:func:`bumps_drift` for any number of bumps K, read from p = [mu_x (K) | mu_y (K) |
    1 / (2 s^2)]: the loop over the bumps stays in the kernel."""
    K = (p.shape[0] - 1) // 2
    c = p[2 * K]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(K):
        dx = p[k] - x[0]
        dy = p[K + k] - x[1]
        w = math.exp(-(dx * dx + dy * dy) * c)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def heston_drift(t, x, p, out):
    """p = (mu, kappa, theta, xi, rho, sqrt(1 - rho^2))."""
    v = max(x[1], 0.0)
    out[0] = p[0] * x[0]
    out[1] = p[1] * (p[2] - v)


def heston_diffusion(t, x, p, out):
    """dS = sqrt(v+) S dB1, dv = xi sqrt(v+) (rho dB1 + sqrt(1 - rho^2) dB2)."""
    sv = math.sqrt(max(x[1], 0.0))
    out[0, 0] = sv * x[0]
    out[0, 1] = 0.0
    out[1, 0] = p[3] * sv * p[4]
    out[1, 1] = p[3] * sv * p[5]


def lorenz_drift(t, x, p, out):
    """p = (sigma, rho, beta, noise)."""
    out[0] = p[0] * (x[1] - x[0])
    out[1] = x[0] * (p[1] - x[2]) - x[1]
    out[2] = x[0] * x[1] - p[2] * x[2]


def lorenz_diffusion(t, x, p, out):
    for i in range(3):
        out[i] = p[3]


def bistable_drift(t, x, p, out):
    """p = (a, noise): a erf(x) - x, stable at the two roots of a erf(x) = x."""
    out[0] = p[0] * math.erf(x[0]) - x[0]


def bistable_diffusion(t, x, p, out):
    out[0] = p[1]


def cev_drift(t, x, p, out):
    """p = (mu, sigma, beta)."""
    out[0] = p[0] * x[0]


def cev_diffusion(t, x, p, out):
    out[0] = p[1] * max(x[0], 0.0) ** p[2]


def hoop_drift(t, x, p, out):
    """p = (w^2, g, gamma, noise): a bead on a hoop turning at w, angle x[0] from the
    bottom, angular velocity x[1]; stable at cos x = g / w^2 when w^2 > g."""
    out[0] = x[1]
    out[1] = math.sin(x[0]) * (p[0] * math.cos(x[0]) - p[1]) - p[2] * x[1]


def hoop_diffusion(t, x, p, out):
    out[0] = 0.0
    out[1] = p[3]


# ---------------------------------------------------------------- the peers' fields
# Each model's field twice, the same formulas as the fastsde functions: batched, for numpy
# and torch, on X of shape (dim, n) (drift(B, t, X, C) -> (dim, n); noise(B, t, X, C, dW)
# -> g(t, X) dW, (dim, n)); and on one path, for jax.vmap (drift1(B, t, x, C) -> (dim,),
# noise1(B, t, x, C, dw) -> (dim,)): calling the batched field on a (dim, 1) batch under
# vmap ran 10x slower in JAX than the one-path function. B is the engine's table of
# operations; C holds the model's arrays in the engine's type and the run's dtype. Scalars
# are closure constants (weakly typed in all three engines: they keep the arrays' dtype).

def _scipy_erf(z):
    from scipy.special import erf
    return erf(z)


def ops_numpy():
    def silu(z):
        return z / (1.0 + np.exp(-z))  # fastsde's formula; overflow to inf gives -0
    return types.SimpleNamespace(
        exp=np.exp, log=np.log, sqrt=np.sqrt, tanh=np.tanh, silu=silu, erf=_scipy_erf,
        sin=np.sin, cos=np.cos, pow=np.power,
        relu=lambda a: np.maximum(a, 0.0), sum=lambda a, axis: a.sum(axis=axis),
        max=lambda a, axis: a.max(axis=axis), stack=lambda xs: np.stack(xs, 0))


def ops_torch():
    import torch
    return types.SimpleNamespace(
        exp=torch.exp, log=torch.log, sqrt=torch.sqrt, tanh=torch.tanh, erf=torch.erf,
        sin=torch.sin, cos=torch.cos, pow=torch.pow,
        silu=torch.nn.functional.silu, relu=lambda a: torch.clamp(a, min=0.0),
        sum=lambda a, axis: a.sum(dim=axis), max=lambda a, axis: a.amax(dim=axis),
        stack=lambda xs: torch.stack(xs, 0))


def ops_jax():
    import jax
    jnp = jax.numpy
    return types.SimpleNamespace(
        exp=jnp.exp, log=jnp.log, sqrt=jnp.sqrt, tanh=jnp.tanh, silu=jax.nn.silu,
        erf=jax.scipy.special.erf, sin=jnp.sin, cos=jnp.cos, pow=jnp.power,
        relu=lambda a: jnp.maximum(a, 0.0), sum=lambda a, axis: jnp.sum(a, axis=axis),
        max=lambda a, axis: jnp.max(a, axis=axis), stack=lambda xs: jnp.stack(xs, 0))


def ou_fields(theta, sigma):
    def drift(B, t, X, C):
        return -theta * X

    def noise(B, t, X, C, dW):
        return sigma * dW
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


def bumps_fields():
    """u(x) = sum_k w_k (mu_k - x) / sum_k w_k, w_k = exp(-|x - mu_k|^2 c); C: mu (K, 2),
    c (1,) = 1 / (2 s^2)."""
    def drift(B, t, X, C):
        D = C["mu"][:, :, None] - X[None]                  # (K, 2, n)
        w = B.exp(-B.sum(D * D, 1) * C["c"][0])            # (K, n)
        return B.sum(w[:, None, :] * D, 0) / B.sum(w, 0)[None]

    def drift1(B, t, x, C):
        D = C["mu"] - x[None]                              # (K, 2)
        w = B.exp(-B.sum(D * D, 1) * C["c"][0])            # (K,)
        return (w @ D) / B.sum(w, 0)
    return dict(drift=drift, noise=None, drift1=drift1, noise1=None)


def gm_fields(sig0, sig1, dim, sde):
    """gm_path_drift in fastsde/generative.py: sum_k r_k (mu_k + c_k (x - t mu_k)), r_k
    the softmax over k of log w_k - d/2 log v_k - |x - t mu_k|^2 / (2 v_k),
    v_k = t^2 s_k^2 + (1 - t)^2, c_k = (t s_k^2 - (1 - t) - sigma_t^2 / 2) / v_k,
    sigma_t = sig0 (1 - t) + sig1 t; noise sigma_t dW when ``sde`` (the flow: none).
    C: logw (K,), mu (K, d), s2 (K,)."""
    def coefficients(B, t, C):
        s2 = C["s2"]
        omt = 1.0 - t
        sig = sig0 * omt + sig1 * t
        v = t * t * s2 + omt * omt                                     # (K,)
        c = (t * s2 - omt - 0.5 * sig * sig) / v
        return C["logw"] - 0.5 * dim * B.log(v), 0.5 / v, c

    def drift(B, t, X, C):
        mu = C["mu"]
        a, half_inv_v, c = coefficients(B, t, C)
        D = X[None] - t * mu[:, :, None]                               # (K, d, n)
        logit = a[:, None] - B.sum(D * D, 1) * half_inv_v[:, None]     # (K, n)
        e = B.exp(logit - B.max(logit, 0)[None])
        per = mu[:, :, None] + c[:, None, None] * D
        return B.sum(e[:, None, :] * per, 0) / B.sum(e, 0)[None]

    def drift1(B, t, x, C):
        mu = C["mu"]
        a, half_inv_v, c = coefficients(B, t, C)
        D = x[None] - t * mu                                           # (K, d)
        logit = a - B.sum(D * D, 1) * half_inv_v                       # (K,)
        e = B.exp(logit - B.max(logit, 0))
        return (e @ (mu + c[:, None] * D)) / B.sum(e, 0)

    def noise(B, t, X, C, dW):
        return (sig0 * (1.0 - t) + sig1 * t) * dW
    noise = noise if sde else None
    return dict(drift=drift, noise=noise, drift1=drift1, noise1=noise)


def mlp_fields(n_layers, activation, dim):
    """MLPField: z = W a + b per layer, the activation on all but the last, a_0 = [x, t]
    (the first layer's t column added to its bias). C: W0, b0, W1, b1, ..."""
    def drift(B, t, X, C):
        act = B.tanh if activation == "tanh" else B.silu
        W = C["W0"]
        A = W[:, :dim] @ X + (C["b0"] + t * W[:, dim])[:, None]
        for i in range(1, n_layers):
            A = C[f"W{i}"] @ act(A) + C[f"b{i}"][:, None]
        return A

    def drift1(B, t, x, C):
        act = B.tanh if activation == "tanh" else B.silu
        W = C["W0"]
        a = W[:, :dim] @ x + (C["b0"] + t * W[:, dim])
        for i in range(1, n_layers):
            a = C[f"W{i}"] @ act(a) + C[f"b{i}"]
        return a
    return dict(drift=drift, noise=None, drift1=drift1, noise1=None)


def heston_fields(mu, kappa, theta, xi, rho):
    """Full truncation v+ = max(v, 0); dS = mu S dt + sqrt(v+) S dB1,
    dv = kappa (theta - v+) dt + xi sqrt(v+) (rho dB1 + sqrt(1 - rho^2) dB2). The same
    code serves both shapes (X[0] is S, a row of paths or a number)."""
    rhob = math.sqrt(1.0 - rho * rho)

    def drift(B, t, X, C):
        return B.stack([mu * X[0], kappa * (theta - B.relu(X[1]))])

    def noise(B, t, X, C, dW):
        sv = B.sqrt(B.relu(X[1]))
        return B.stack([sv * X[0] * dW[0], xi * sv * (rho * dW[0] + rhob * dW[1])])
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


def bistable_fields(a, noise_scale):
    def drift(B, t, X, C):
        return a * B.erf(X) - X

    def noise(B, t, X, C, dW):
        return noise_scale * dW
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


def cev_fields(mu, sigma, beta):
    def drift(B, t, X, C):
        return mu * X

    def noise(B, t, X, C, dW):
        return sigma * B.pow(B.relu(X), beta) * dW
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


def hoop_fields(w2, g, gamma, noise_scale):
    def drift(B, t, X, C):
        return B.stack([X[1], B.sin(X[0]) * (w2 * B.cos(X[0]) - g) - gamma * X[1]])

    def noise(B, t, X, C, dW):
        return B.stack([0.0 * dW[0], noise_scale * dW[1]])
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


def lorenz_fields(sigma, rho, beta, noise_scale):
    def drift(B, t, X, C):
        x, y, z = X[0], X[1], X[2]
        return B.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    def noise(B, t, X, C, dW):
        return noise_scale * dW
    return dict(drift=drift, noise=noise, drift1=drift, noise1=noise)


# ---------------------------------------------------------------- the rows

class Row(types.SimpleNamespace):
    """name, label, kind ("ode" or "sde"), dim, noise_dim, t_span, n_steps, paths
    (fastsde, at --scale 1), peer_paths (numpy, torch, jax), model (fastsde), method,
    x0 ("normal": N(0, I) per path, the same for every engine; or a state), consts
    (name -> float64 array, for the peers' fields), drift and noise (batched: numpy and
    torch), drift1 and noise1 (one path: jax), noise and noise1 None for an ODE."""


def make_rows():
    rows = []
    theta, sigma = 1.0, 0.5
    rows.append(Row(name="ou", label="OU (fs.OU)", kind="sde", dim=1, noise_dim=1,
                    t_span=(0.0, 1.0), n_steps=500, paths=1_000_000, peer_paths=100_000,
                    model=fs.OU(theta=theta, sigma=sigma), method="euler_maruyama",
                    x0=(1.0,), consts={}, **ou_fields(theta, sigma)))

    angles = 2 * np.pi * np.arange(8) / 8
    radius, s = 2.0, 0.7
    mu = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    c = 1.0 / (2 * s * s)
    # The field as written with math.exp, the same with math="libm", and written with
    # np.exp (a function of its own: what the kernel rewrites is the source as written).
    for name, label, drift, math_source in (
            ("bumps8", "8-bump field (ODE)", bumps_drift, "fastsde"),
            ("bumps8_libm", "8-bump field (ODE), math='libm'", bumps_drift, "libm"),
            ("bumps8_np", "8-bump field (ODE), np.exp", bumps_drift_np, "fastsde")):
        rows.append(Row(name=name, label=label, kind="ode", dim=2, noise_dim=0,
                        t_span=(0.0, 1.0), n_steps=100, paths=200_000, peer_paths=100_000,
                        model=fs.ODE(drift, 2, params=np.concatenate([mu[:, 0], mu[:, 1], [c]]),
                                     name=label, math=math_source),
                        method="euler", x0="normal", consts={"mu": mu, "c": np.array([c])},
                        **bumps_fields()))

    angles = 2 * np.pi * np.arange(64) / 64
    radius, s = 2.0, 0.7
    mu = np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)
    c = 1.0 / (2 * s * s)
    rows.append(Row(name="bumps64", label="64-bump field (ODE), count read from p",
                    kind="ode", dim=2, noise_dim=0, t_span=(0.0, 1.0), n_steps=32,
                    paths=100_000, peer_paths=50_000,
                    model=fs.ODE(bumps_drift_any, 2,
                                 params=np.concatenate([mu[:, 0], mu[:, 1], [c]]),
                                 name="64-bump field"),
                    method="euler", x0="normal", consts={"mu": mu, "c": np.array([c])},
                    **bumps_fields()))

    path = fs.GaussianMixturePath.ring(8, radius=4.0, std=0.3)
    gm_consts = {"logw": np.log(path.weights), "mu": path.means, "s2": path.stds ** 2}
    rows.append(Row(name="gm_flow", label="GaussianMixturePath flow", kind="ode",
                    dim=path.dim, noise_dim=0, t_span=(0.0, 1.0), n_steps=32,
                    paths=250_000, peer_paths=100_000, model=path.flow(), method="euler",
                    x0="normal", consts=gm_consts, **gm_fields(0.0, 0.0, path.dim, False)))
    rows.append(Row(name="gm_diffusion", label="GaussianMixturePath diffusion(1.0)",
                    kind="sde", dim=path.dim, noise_dim=path.dim, t_span=(0.0, 1.0),
                    n_steps=32, paths=250_000, peer_paths=100_000,
                    model=path.diffusion(1.0), method="euler_maruyama", x0="normal",
                    consts=gm_consts, **gm_fields(1.0, 1.0, path.dim, True)))

    path64 = fs.GaussianMixturePath.ring(64, radius=4.0, std=0.3)
    rows.append(Row(name="gm64_flow", label="GaussianMixturePath flow, 64 components",
                    kind="ode", dim=path64.dim, noise_dim=0, t_span=(0.0, 1.0),
                    n_steps=16, paths=100_000, peer_paths=100_000, model=path64.flow(),
                    method="euler", x0="normal",
                    consts={"logw": np.log(path64.weights), "mu": path64.means,
                            "s2": path64.stds ** 2},
                    **gm_fields(0.0, 0.0, path64.dim, False)))

    # The same paths for every engine (the batched engines' matrix products want wide
    # batches; these are wide enough).
    for width, paths, peer_paths in ((64, 100_000, 100_000), (256, 20_000, 20_000)):
        for act in ("tanh", "silu"):
            field = fs.mlp.random_mlp([3, width, width, 2], act)
            consts = {}
            for i, (w, b) in enumerate(field.layers):
                consts[f"W{i}"], consts[f"b{i}"] = w, b
            rows.append(Row(name=f"mlp{width}_{act}", label=f"MLPField 3-{width}-{width}-2 "
                            f"{act}", kind="ode", dim=2, noise_dim=0, t_span=(0.0, 1.0),
                            n_steps=8, paths=paths, peer_paths=peer_paths,
                            model=field.ode(), method="euler", x0="normal", consts=consts,
                            **mlp_fields(len(field.layers), act, 2)))

    h_mu, kappa, h_theta, xi, rho = 0.05, 2.0, 0.04, 0.3, -0.7
    rows.append(Row(name="heston", label="Heston, correlated (general 2x2)", kind="sde",
                    dim=2, noise_dim=2, t_span=(0.0, 1.0), n_steps=250, paths=200_000,
                    peer_paths=50_000,
                    model=fs.SDE(heston_drift, heston_diffusion, 2, noise="general",
                                 noise_dim=2, params=(h_mu, kappa, h_theta, xi, rho,
                                                      math.sqrt(1 - rho * rho)),
                                 name="heston"),
                    method="euler_maruyama", x0=(100.0, 0.04), consts={},
                    **heston_fields(h_mu, kappa, h_theta, xi, rho)))

    l_sigma, l_rho, l_beta, l_noise = 10.0, 28.0, 8.0 / 3.0, 1.0
    rows.append(Row(name="lorenz", label="Lorenz 63 + additive noise", kind="sde", dim=3,
                    noise_dim=3, t_span=(0.0, 1.0), n_steps=200, paths=250_000,
                    peer_paths=50_000,
                    model=fs.SDE(lorenz_drift, lorenz_diffusion, 3, noise="additive",
                                 params=(l_sigma, l_rho, l_beta, l_noise), name="lorenz"),
                    method="euler_maruyama", x0=(1.0, 1.0, 1.0), consts={},
                    **lorenz_fields(l_sigma, l_rho, l_beta, l_noise)))

    # Models written with a function kmath replaces, each also with math="libm".
    for name, label, dim, noise, t_span, n_steps, paths, drift, diffusion, params, x0, \
            fields in (
            ("bistable_erf", "bistable dX = (2 erf(X) - X) dt + 0.5 dW", 1, "additive",
             (0.0, 1.0), 200, 1_000_000, bistable_drift, bistable_diffusion, (2.0, 0.5),
             (0.5,), bistable_fields(2.0, 0.5)),
            ("hoop", "bead on a rotating hoop (sin, cos)", 2, "additive", (0.0, 5.0), 200,
             500_000, hoop_drift, hoop_diffusion, (2.0, 1.0, 0.5, 0.3), (1.0, 0.0),
             hoop_fields(2.0, 1.0, 0.5, 0.3)),
            ("cev", "CEV dS = 0.05 S dt + 0.8 max(S, 0)^0.7 dW", 1, "diagonal", (0.0, 1.0),
             250, 1_000_000, cev_drift, cev_diffusion, (0.05, 0.8, 0.7), (100.0,),
             cev_fields(0.05, 0.8, 0.7))):
        for suffix, math_source in (("", "fastsde"), ("_libm", "libm")):
            rows.append(Row(name=name + suffix,
                            label=label + (", math='libm'" if suffix else ""), kind="sde",
                            dim=dim, noise_dim=dim, t_span=t_span, n_steps=n_steps,
                            paths=paths, peer_paths=100_000,
                            model=fs.SDE(drift, diffusion, dim, noise=noise, params=params,
                                         name=name + suffix, math=math_source),
                            method="euler_maruyama", x0=x0, consts={}, **fields))
    return rows


def initial_states(row, n, dtype):
    """(n, dim) initial states: N(0, I) per path (seeded, the first n rows of one draw:
    an engine with fewer paths starts from fastsde's first ones), or a fixed state."""
    if row.x0 == "normal":
        x0 = np.random.default_rng(12345).standard_normal((n, row.dim))
    else:
        x0 = np.broadcast_to(np.asarray(row.x0, dtype=np.float64), (n, row.dim))
    return np.ascontiguousarray(x0, dtype=dtype)


# ---------------------------------------------------------------- engines
# prepare_<engine>(row, dtype, n, x0) compiles or warms up and returns run(), which
# simulates n paths and returns the final states as a numpy array (n, dim).

def prepare_fastsde(row, dtype, n, x0):
    fixed = row.x0 != "normal"
    start = x0[0] if fixed else x0

    def run():
        res = fs.simulate(row.model, start, row.t_span, row.n_steps, n, method=row.method,
                          device="cpu", dtype=dtype, seed=SEED, progress=False, keep_x=True)
        return res.x
    fs.compile(row.model, x0[0], method=row.method, device="cpu", dtype=dtype)
    return run


def prepare_numpy(row, dtype, n, x0):
    B = ops_numpy()
    dt = np.dtype(dtype)
    C = {k: np.asarray(v, dtype=dt) for k, v in row.consts.items()}
    t0, t1 = row.t_span
    h = (t1 - t0) / row.n_steps
    sqrt_h = math.sqrt(h)

    def run(n_steps=row.n_steps):
        rng = np.random.default_rng(SEED)
        X = np.array(x0.T, order="C")  # a copy: the loop updates X in place
        Z = np.empty((row.noise_dim, n), dtype=dt)
        with np.errstate(over="ignore"):
            for k in range(n_steps):
                t = t0 + k * h
                F = row.drift(B, t, X, C)
                if row.noise is not None:
                    rng.standard_normal(out=Z, dtype=dt)
                    Z *= sqrt_h
                    G = row.noise(B, t, X, C, Z)
                    F *= h
                    X += F
                    X += G
                else:
                    X += h * F
        return X.T
    run(2)  # warm-up: page faults, first calls
    return run


def prepare_torch(row, dtype, n, x0):
    import torch
    B = ops_torch()
    tdt = getattr(torch, dtype)
    C = {k: torch.as_tensor(np.asarray(v, dtype=dtype)) for k, v in row.consts.items()}
    t0, t1 = row.t_span
    h = (t1 - t0) / row.n_steps
    sqrt_h = math.sqrt(h)
    X0 = torch.tensor(x0.T)

    def run(n_steps=row.n_steps):
        gen = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            X = X0.clone()
            Z = torch.empty((row.noise_dim, n), dtype=tdt)
            for k in range(n_steps):
                t = t0 + k * h
                F = row.drift(B, t, X, C)
                if row.noise is not None:
                    Z.normal_(generator=gen)
                    Z.mul_(sqrt_h)
                    G = row.noise(B, t, X, C, Z)
                    X.add_(F, alpha=h)
                    X.add_(G)
                else:
                    X.add_(F, alpha=h)
        return X.T.numpy()
    run(2)
    return run


def prepare_jax(row, dtype, n, x0):
    import jax
    jnp = jax.numpy
    B = ops_jax()
    jdt = getattr(jnp, dtype)
    C = {k: jnp.asarray(np.asarray(v, dtype=dtype)) for k, v in row.consts.items()}
    t0, t1 = row.t_span
    n_steps = row.n_steps
    h = (t1 - t0) / n_steps
    sqrt_h = math.sqrt(h)

    def one_path(x, z, t, C):
        out = x + h * row.drift1(B, t, x, C)
        if row.noise1 is not None:
            out = out + row.noise1(B, t, x, C, sqrt_h * z)
        return out

    step = jax.vmap(one_path, in_axes=(0, 0, None, None))

    def solve(x, C, key):
        def body(k, x):
            t = (t0 + k * h).astype(jdt)
            if row.noise is not None:
                z = jax.random.normal(jax.random.fold_in(key, k), (n, row.noise_dim), jdt)
            else:
                z = jnp.zeros((n, 0), jdt)
            return step(x, z, t, C)
        return jax.lax.fori_loop(0, n_steps, body, x)

    x_dev = jnp.asarray(x0)
    key = jax.random.key(SEED)
    compiled = jax.jit(solve).lower(x_dev, C, key).compile()

    def run():
        return np.asarray(compiled(x_dev, C, key).block_until_ready())
    return run


PREPARE = {"fastsde": prepare_fastsde, "numpy": prepare_numpy, "torch": prepare_torch,
           "jax": prepare_jax}


# ---------------------------------------------------------------- agreement

def agreement(row, dtype, outs):
    """(text, ok) comparing each peer's final states with fastsde's (see the docstring)."""
    if "fastsde" not in outs or len(outs) < 2:
        return "-", True
    ref = outs["fastsde"]
    if not np.all(np.isfinite(ref)):
        return "no (fastsde: non-finite)", False
    f32 = dtype == "float32"
    worst, bad = 0.0, []
    for engine, x in outs.items():
        if engine == "fastsde":
            continue
        if not np.all(np.isfinite(x)):
            bad.append(f"{engine}: non-finite")
            continue
        if row.kind == "ode":
            m = min(len(ref), len(x))
            a, b = ref[:m].astype(np.float64), x[:m].astype(np.float64)
            rel = np.max(np.abs(a - b) / (1.0 + np.abs(a)), axis=1)
            tol = 1e-3 if f32 else 1e-9
            beyond = int(np.sum(rel > tol))
            worst = max(worst, float(rel.max()))
            if beyond > 1e-3 * m:
                bad.append(f"{engine}: {beyond} of {m} paths beyond {tol:g}")
        else:
            a, b = ref[:, 0].astype(np.float64), x[:, 0].astype(np.float64)
            se = math.sqrt(a.var() / len(a) + b.var() / len(b))
            diff = abs(a.mean() - b.mean())
            slack = (1e-3 if f32 else 1e-12) * abs(a.mean())
            z = diff / se if se > 0 else (0.0 if diff == 0 else math.inf)
            worst = max(worst, z)
            if diff > 6 * se + slack:
                bad.append(f"{engine}: means differ by {diff:.3g} = {z:.1f} SE")
    if bad:
        return "no (" + "; ".join(bad) + ")", False
    if row.kind == "ode":
        return f"yes (max rel diff {worst:.1e})", True
    return f"yes (means within {worst:.1f} SE)", True


# ---------------------------------------------------------------- measurement

#: Seconds of rest before each timed run. A BLAS or OpenMP pool keeps its threads
#: spinning for a while after its last call (OpenBLAS about 2^28 cycles, Intel's and
#: LLVM's OpenMP 200 ms), and those threads took the cores from the next engine: fastsde's
#: float32 3-64-64-2 tanh row ran at 6.4e6-6.8e6 path-steps/s right after numpy's matrix
#: products and at 9.6e6 without them (2-core Xeon, 2026-12-03).
SETTLE_S = 0.3


def measure(row, dtype, engines, available, scale, repeats, failures):
    """{engine: rate or a string}, {engine: n_paths}, agreement text."""
    n = {"fastsde": max(2, int(round(row.paths * scale)))}
    for e in PEERS:
        n[e] = max(2, int(round(row.peer_paths * scale)))
    x0 = initial_states(row, max(n.values()), dtype)
    cells, runners = {}, {}
    for e in ENGINES:
        if e not in engines:
            cells[e] = "not run"
        elif not available[e]:
            cells[e] = "not installed"
    for e in ENGINES:
        if e in cells:
            continue
        try:
            runners[e] = PREPARE[e](row, dtype, n[e], x0[:n[e]].copy())
        except Exception as exc:  # noqa: BLE001 - recorded in the notes
            cells[e] = "failed"
            failures.append(f"{row.name} {dtype} {e} (compile/warm-up): "
                            f"{type(exc).__name__}: {exc}")
    best, outs = {}, {}
    for _ in range(repeats):
        for e in list(runners):
            try:
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                out = runners[e]()
                seconds = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001
                cells[e] = "failed"
                failures.append(f"{row.name} {dtype} {e}: {type(exc).__name__}: {exc}")
                del runners[e]
                continue
            best[e] = min(best.get(e, math.inf), seconds)
            outs[e] = out
    for e, seconds in best.items():
        cells[e] = n[e] * row.n_steps / seconds
    agree, _ = agreement(row, dtype, outs)
    return cells, n, agree


# ---------------------------------------------------------------- output

def module_version(name):
    try:
        module = __import__(name)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return None
    return getattr(module, "__version__", "?")


def fmt_rate(cell):
    return f"{cell:.3g}" if isinstance(cell, float) else cell


def fmt_ratio(a, b):
    if isinstance(a, float) and isinstance(b, float) and b > 0:
        return f"{a / b:.3g}"
    return "-"


def fmt_count(value):
    return f"{value:.3g}".replace("e+0", "e") if value >= 10_000 else str(value)


def read_results(path):
    """(results, dtypes, engines) of a results table this script wrote: results maps
    (row, dtype) to ({engine: path-steps/s or the cell's text}, ...), as in a run."""
    results, dtypes, engines = {}, [], []
    with open(path) as fh:
        lines = [line.strip() for line in fh if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    columns = {e: header.index(e) for e in ENGINES if e in header}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, dtype = cells[0], cells[1]
        rates = {}
        for engine, i in columns.items():
            try:
                rates[engine] = float(cells[i])
            except ValueError:
                rates[engine] = cells[i]
        results[(name, dtype)] = (rates, {}, "")
        dtypes += [dtype] if dtype not in dtypes else []
    for engine in columns:
        if any(isinstance(r[0].get(engine), float) for r in results.values()):
            engines.append(engine)
    return results, dtypes, engines


def write_figure(results, dtypes, engines, path):
    """Grouped bars of path-steps/s per row (log scale), one bar per engine, one panel
    per dtype. Needs matplotlib; returns the path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no figure: matplotlib is not installed here (python bench/drifts.py "
              f"--figure-from {os.path.splitext(path)[0]}.md draws it where it is)")
        return None
    rows = list(dict.fromkeys(name for name, _ in results))
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(max(8, 1.1 * len(rows) + 2),
                                                        3.8 * len(dtypes)), squeeze=False)
    width = 0.8 / max(len(engines), 1)
    for ax, dtype in zip(axes[:, 0], dtypes):
        for j, engine in enumerate(engines):
            xs, ys = [], []
            for i, name in enumerate(rows):
                cell = results.get((name, dtype), ({}, {}, ""))[0].get(engine)
                if isinstance(cell, float):
                    xs.append(i + (j - (len(engines) - 1) / 2) * width)
                    ys.append(cell)
            if xs:
                ax.bar(xs, ys, width=width, label=engine)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="path-steps/s", title=dtype)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    rows_all = make_rows()
    names = [r.name for r in rows_all]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(names), help="comma list of " +
                        ", ".join(names))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies path counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: the CPU count)")
    parser.add_argument("--out", default=None, help="results file (default: "
                        "bench/results/drifts-<date>.md; '-' prints only)")
    parser.add_argument("--figure-from", default=None, metavar="FILE.md",
                        help="run nothing: draw the figure of this results file beside it")
    args = parser.parse_args(argv)
    if args.figure_from:
        png = write_figure(*read_results(args.figure_from),
                           os.path.splitext(args.figure_from)[0] + ".png")
        if png:
            print(f"wrote {png}")
        return
    wanted = args.rows.split(",")
    unknown = [r for r in wanted if r not in names]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {names}")
    rows = [r for r in rows_all if r.name in wanted]
    dtypes = args.dtypes.split(",")
    if any(d not in ("float32", "float64") for d in dtypes):
        parser.error(f"--dtypes takes float32 and/or float64; got {args.dtypes}")
    engines = [e for e in args.engines.split(",") if e]
    if any(e not in ENGINES for e in engines):
        parser.error(f"--engines takes some of {ENGINES}; got {args.engines}")

    versions = {name: module_version(name) for name in ("numba", "torch", "jax")}
    available = {"fastsde": True, "numpy": True, "torch": versions["torch"] is not None,
                 "jax": versions["jax"] is not None}
    if available["jax"] and "jax" in engines and "float64" in dtypes:
        import jax
        # Before any JAX array exists: x64 cannot be switched on safely afterwards.
        jax.config.update("jax_enable_x64", True)
    if available["torch"] and "torch" in engines:
        import torch
        torch.set_num_threads(args.torch_threads)

    date = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    vers = ", ".join(f"{k} {v if v else 'not installed'}" for k, v in
                     (("Python", platform.python_version()), ("numpy", np.__version__),
                      ("numba", versions["numba"]), ("torch", versions["torch"]),
                      ("jax", versions["jax"]), ("fastsde", fs.__version__)))
    command = " ".join(["python bench/drifts.py"] + (sys.argv[1:] if argv is None else argv))
    lines = [f"# Users' models: fastsde against numpy, torch and JAX loops, {date}", "",
             f"Command: `{command}`; "
             f"{platform.platform()}, {cpu_description()}, {os.cpu_count()} CPUs; {vers}; "
             f"Numba threads {numba.get_num_threads()}; "
             f"torch threads {args.torch_threads if available['torch'] else '-'}; "
             f"1-minute load average at start {load:.2f}; {date}.", "",
             "Path-steps per second, best of "
             f"{args.repeats} (engines alternating within each repeat, after a warm-up or "
             f"compile of each; {SETTLE_S} s of rest before each timed run). Paths: fastsde's x numpy's, torch's and jax's (these may "
             "run fewer). fastsde: wall time of `fs.simulate` on the CPU, final states "
             "kept; numpy / torch: batched loops over (dim, n_paths) arrays; jax: "
             "`jit(fori_loop(vmap(step)))`. Agree: ODE rows, final states against "
             "fastsde's from the same initial states (largest |difference| / (1 + |x|)); "
             "SDE rows, the mean of component 0 of the final state against fastsde's, "
             "the difference in standard errors (a warning beyond 6, plus 1e-3 relative "
             "in float32).", "",
             "| row | dtype | n_paths x n_steps | fastsde | numpy | torch | jax | "
             "fastsde/numpy | fastsde/torch | fastsde/jax | agree |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    print("\n".join(lines), flush=True)
    results, failures = {}, []
    for row in rows:
        for dtype in dtypes:
            cells, n, agree = measure(row, dtype, engines, available, args.scale,
                                      args.repeats, failures)
            results[(row.name, dtype)] = (cells, n, agree)
            peer_n = {n[e] for e in PEERS if isinstance(cells.get(e), float)}
            size = f"{fmt_count(n['fastsde'])} x {row.n_steps}"
            if peer_n and peer_n != {n["fastsde"]}:
                size += " (others " + ", ".join(fmt_count(v) for v in sorted(peer_n)) + ")"
            f = cells.get("fastsde")
            lines.append(f"| {row.name} | {dtype} | {size} | "
                         + " | ".join(fmt_rate(cells[e]) for e in ENGINES) + " | "
                         + " | ".join(fmt_ratio(f, cells[e]) for e in PEERS)
                         + f" | {agree} |")
            print(lines[-1], flush=True)
    notes = ["", "Rows: " + "; ".join(f"{r.name}: {r.label}, {r.method}, t in "
                                       f"[{r.t_span[0]:g}, {r.t_span[1]:g}]"
                                       for r in rows) + ".", ""]
    if failures:
        notes += ["Failures:", ""] + [f"- {f}" for f in failures] + [""]
    lines += notes
    print("\n".join(notes), flush=True)
    text = "\n".join(lines) + "\n"
    write_report(text, args.out, f"drifts-{date}",
                 lambda png: write_figure(results, dtypes,
                                          [e for e in ENGINES if e in engines], png))


if __name__ == "__main__":
    main()
