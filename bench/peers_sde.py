"""Timing of peer SDE libraries (torchsde, diffrax) on two fixed scalar Ito problems.

This module does not import fastsde. bench/convergence.py uses it when torch + torchsde
and/or jax + diffrax are installed in the same environment (``pip install torchsde
diffrax``); run alone, it prints a smoke test at small sizes.

Problems (scalar Ito SDEs on t in [0, 1], float64, fixed step h = 1/n_steps):

* ``linear`` (strong error):  dX = 1.01 X dt + 0.87 X dW, X0 = 0.5.
  Exact: X_T = 0.5 * exp(0.63155 + 0.87 * W_T), with W_T the Brownian value at
  T = 1 read from the same Brownian object the solver used.
  Reported: ``strong_error`` = mean |X_N - X_T|.
* ``gbm`` (weak error):  dX = 1.0 X dt + 0.5 X dW, X0 = 1.
  Reported: ``estimate`` and ``se`` of E[X_T^2] (exact exp(2.25)).

Every function returns a dict with keys ``library, solver, n_steps, n_paths,
seconds`` plus the error keys above.  ``seconds`` is the wall time of one timed
call only, made after a warm-up (compile) call with the same shapes.

Use a power of two for ``n_steps``: then t_k = k*h is exact in floating point and
torchsde's loop ``while t < 1: t += h`` takes exactly n_steps steps.

torchsde solvers: "euler", "milstein", "srk" (all Ito, noise_type "diagonal").
  * "euler"/"milstein" use a BrownianInterval with no Levy area.
  * "milstein" is torchsde's default (derivative-using) Ito Milstein: g*g' is
    obtained with torch autograd (options grad_free=False).
  * "srk" requires levy_area_approximation in ("space-time", "davie", "foster")
    on the Brownian motion; "space-time" is used (what sdeint itself picks).

diffrax solvers: "Euler", "ItoMilstein".
  * ShARK is NOT supported here: it is a Stratonovich solver with an
    additive-noise tableau, and diffrax raises
    "Vector field of the diffusion term should be constant, independent of y."
    for these multiplicative problems (SRA1 likewise is additive-noise only).
    diffrax has no Ito stochastic Runge-Kutta solver.
  * Diagonal noise follows the diffrax docs: state of shape (1,) and a
    ControlTerm whose vector field returns a lineax.DiagonalLinearOperator.
  * Brownian motion: VirtualBrownianTree(tol=dt0/2), as diffrax's docs suggest
    for constant steps; it is needed for "linear" because W_T must be read back
    (bm.evaluate(0, 1)).  For "gbm" the default is also VirtualBrownianTree;
    pass brownian="unsafe" to use UnsafeBrownianPath (diffrax's faster option for
    fixed steps without backprop; it cannot give W_T, so it is gbm-only).
"""

from __future__ import annotations

import math
import os
import time

# --------------------------------------------------------------------------- #
# Problem constants
# --------------------------------------------------------------------------- #
LIN_MU, LIN_SIGMA, LIN_X0 = 1.01, 0.87, 0.5
LIN_EXPONENT = LIN_MU - 0.5 * LIN_SIGMA**2  # 0.63155
GBM_MU, GBM_SIGMA, GBM_X0 = 1.0, 0.5, 1.0
GBM_EXACT_EX2 = math.exp(2.25)  # E[X_T^2] = X0^2 exp((2 mu + sigma^2) T)

# torch intra-op threads (default 2, the CPU count of the project's machines).
# With 2 threads on a 2-core box that is also
# busy, torch's OpenMP barriers can stall badly (seen: torchsde "srk" at 1e5 paths,
# 64 steps took 1.2 s once and 72-85 s under load, vs 1.6 s with 1 thread).
# Override with PEERS_TORCH_THREADS=1 when the machine is shared.
TORCH_THREADS = int(os.environ.get("PEERS_TORCH_THREADS", "2"))

TORCHSDE_SOLVERS = ("euler", "milstein", "srk")
DIFFRAX_SOLVERS = ("Euler", "ItoMilstein")


def _result(library, solver, n_steps, n_paths, seconds, **extra):
    out = dict(library=library, solver=solver, n_steps=int(n_steps),
               n_paths=int(n_paths), seconds=float(seconds))
    out.update(extra)
    return out


def _moment2(xT):
    """Estimate and standard error of E[X^2] from a 1-D numpy array."""
    import numpy as np

    y = np.asarray(xT, dtype=np.float64) ** 2
    return float(y.mean()), float(y.std(ddof=1) / math.sqrt(y.size))


# --------------------------------------------------------------------------- #
# torchsde
# --------------------------------------------------------------------------- #
_torch_sde_classes = {}


def _torch_sde(mu, sigma):
    import torch

    key = (mu, sigma)
    if key not in _torch_sde_classes:

        class _LinearSDE(torch.nn.Module):
            noise_type = "diagonal"
            sde_type = "ito"

            def f(self, t, y):
                return mu * y

            def g(self, t, y):
                return sigma * y

        _torch_sde_classes[key] = _LinearSDE
    return _torch_sde_classes[key]()


def _torchsde_run(solver, n_steps, n_paths, seed, mu, sigma, x0):
    """One sdeint call; returns (X_N, W_T) as 1-D numpy arrays."""
    import torch
    import torchsde

    if solver not in TORCHSDE_SOLVERS:
        raise ValueError(f"torchsde solver must be one of {TORCHSDE_SOLVERS}, got {solver!r}")
    dt = 1.0 / n_steps
    levy = "space-time" if solver == "srk" else "none"
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(n_paths, 1), dtype=torch.float64,
        entropy=int(seed), dt=dt, levy_area_approximation=levy)
    y0 = torch.full((n_paths, 1), x0, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sde = _torch_sde(mu, sigma)
    with torch.no_grad():
        # Milstein's g*g' still works: torchsde enables grad locally for it.
        ys = torchsde.sdeint(sde, y0, ts, bm=bm, method=solver, dt=dt)
    xN = ys[-1, :, 0].detach()
    wT = bm(0.0, 1.0)[:, 0]
    return xN.numpy(), wT.numpy()


def _torchsde_timed(solver, n_steps, n_paths, seed, mu, sigma, x0):
    import torch

    torch.set_num_threads(TORCH_THREADS)
    _torchsde_run(solver, n_steps, n_paths, seed + 1_000_003, mu, sigma, x0)  # warm-up
    t0 = time.perf_counter()
    xN, wT = _torchsde_run(solver, n_steps, n_paths, seed, mu, sigma, x0)
    return xN, wT, time.perf_counter() - t0


def torchsde_linear(solver, n_steps, n_paths, seed):
    """Strong error of torchsde `solver` on the linear problem."""
    import numpy as np

    xN, wT, sec = _torchsde_timed(solver, n_steps, n_paths, seed, LIN_MU, LIN_SIGMA, LIN_X0)
    exact = LIN_X0 * np.exp(LIN_EXPONENT + LIN_SIGMA * wT)
    err = float(np.mean(np.abs(xN - exact)))
    return _result("torchsde", solver, n_steps, n_paths, sec, strong_error=err)


def torchsde_gbm(solver, n_steps, n_paths, seed):
    """E[X_T^2] estimate of torchsde `solver` on the gbm problem."""
    xN, _, sec = _torchsde_timed(solver, n_steps, n_paths, seed, GBM_MU, GBM_SIGMA, GBM_X0)
    est, se = _moment2(xN)
    return _result("torchsde", solver, n_steps, n_paths, sec, estimate=est, se=se)


# --------------------------------------------------------------------------- #
# diffrax
# --------------------------------------------------------------------------- #
_diffrax_cache = {}


def _diffrax_fn(solver, n_steps, mu, sigma, x0, brownian):
    """jit(vmap(solve one path)) : keys -> (X_N, W_T or NaN)."""
    cache_key = (solver, n_steps, mu, sigma, x0, brownian)
    if cache_key in _diffrax_cache:
        return _diffrax_cache[cache_key]

    import jax
    import jax.numpy as jnp
    import diffrax as dfx
    import lineax as lx

    if solver not in DIFFRAX_SOLVERS:
        raise ValueError(f"diffrax solver must be one of {DIFFRAX_SOLVERS}, got {solver!r} "
                         "(ShARK/SRA1 need additive noise; see module docstring)")
    if brownian not in ("vbt", "unsafe"):
        raise ValueError("brownian must be 'vbt' or 'unsafe'")
    dt0 = 1.0 / n_steps
    slv = {"Euler": dfx.Euler, "ItoMilstein": dfx.ItoMilstein}[solver]()
    shape = jax.ShapeDtypeStruct((1,), jnp.float64)

    def drift(t, y, args):
        return mu * y

    def diffusion(t, y, args):
        return lx.DiagonalLinearOperator(sigma * y)

    def one_path(key):
        if brownian == "vbt":
            bm = dfx.VirtualBrownianTree(0.0, 1.0, tol=dt0 / 2, shape=shape, key=key)
        else:
            bm = dfx.UnsafeBrownianPath(shape=shape, key=key)
        terms = dfx.MultiTerm(dfx.ODETerm(drift), dfx.ControlTerm(diffusion, bm))
        sol = dfx.diffeqsolve(
            terms, slv, t0=0.0, t1=1.0, dt0=dt0, y0=jnp.full((1,), x0, jnp.float64),
            saveat=dfx.SaveAt(t1=True), stepsize_controller=dfx.ConstantStepSize(),
            max_steps=n_steps + 8,
            # UnsafeBrownianPath is rejected by the default RecursiveCheckpointAdjoint;
            # diffrax's error message says to use ForwardMode (no gradients taken here).
            **({"adjoint": dfx.ForwardMode()} if brownian == "unsafe" else {}))
        xN = sol.ys[0, 0]
        wT = bm.evaluate(0.0, 1.0)[0] if brownian == "vbt" else jnp.nan
        return xN, wT

    fn = jax.jit(jax.vmap(one_path))
    _diffrax_cache[cache_key] = fn
    return fn


def _diffrax_timed(solver, n_steps, n_paths, seed, mu, sigma, x0, brownian):
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    fn = _diffrax_fn(solver, n_steps, mu, sigma, x0, brownian)
    warm_keys = jax.random.split(jax.random.key(seed + 1_000_003), n_paths)
    keys = jax.random.split(jax.random.key(seed), n_paths)
    keys.block_until_ready()
    jax.block_until_ready(fn(warm_keys))  # compile
    t0 = time.perf_counter()
    xN, wT = jax.block_until_ready(fn(keys))
    sec = time.perf_counter() - t0
    return np.asarray(xN), np.asarray(wT), sec


def diffrax_linear(solver, n_steps, n_paths, seed):
    """Strong error of diffrax `solver` on the linear problem (VirtualBrownianTree)."""
    import numpy as np

    xN, wT, sec = _diffrax_timed(solver, n_steps, n_paths, seed,
                                 LIN_MU, LIN_SIGMA, LIN_X0, "vbt")
    exact = LIN_X0 * np.exp(LIN_EXPONENT + LIN_SIGMA * wT)
    err = float(np.mean(np.abs(xN - exact)))
    return _result("diffrax", solver, n_steps, n_paths, sec, strong_error=err)


def diffrax_gbm(solver, n_steps, n_paths, seed, brownian="vbt"):
    """E[X_T^2] estimate of diffrax `solver` on the gbm problem.

    brownian: "vbt" (VirtualBrownianTree, default) or "unsafe" (UnsafeBrownianPath).
    """
    xN, _, sec = _diffrax_timed(solver, n_steps, n_paths, seed,
                                GBM_MU, GBM_SIGMA, GBM_X0, brownian)
    est, se = _moment2(xN)
    out = _result("diffrax", solver, n_steps, n_paths, sec, estimate=est, se=se)
    if brownian != "vbt":
        out["brownian"] = brownian
    return out


# --------------------------------------------------------------------------- #
# Smoke test
# --------------------------------------------------------------------------- #
def _fmt(r):
    if "strong_error" in r:
        tail = f"strong_error={r['strong_error']:.4e}"
    else:
        tail = (f"E[X^2]={r['estimate']:.4f} +- {r['se']:.4f} "
                f"(exact {GBM_EXACT_EX2:.4f})")
    extra = f" [{r['brownian']}]" if "brownian" in r else ""
    return (f"{r['library']:9s} {r['solver']:12s} n_steps={r['n_steps']:4d} "
            f"n_paths={r['n_paths']:7d} {r['seconds']*1e3:9.2f} ms  {tail}{extra}")


def main(n_paths=1000, n_steps=16, seed=1234):
    for s in TORCHSDE_SOLVERS:
        print(_fmt(torchsde_linear(s, n_steps, n_paths, seed)), flush=True)
        print(_fmt(torchsde_gbm(s, n_steps, n_paths, seed)), flush=True)
    for s in DIFFRAX_SOLVERS:
        print(_fmt(diffrax_linear(s, n_steps, n_paths, seed)), flush=True)
        print(_fmt(diffrax_gbm(s, n_steps, n_paths, seed)), flush=True)
        print(_fmt(diffrax_gbm(s, n_steps, n_paths, seed, brownian="unsafe")), flush=True)


if __name__ == "__main__":
    main()
