"""Multilevel Monte Carlo (Giles, Operations Research 56, 2008; Acta Numerica 24, 2015).

E[P(X_T)] is written as E[P_0] + sum_l E[P_l - P_{l-1}], with P_l the payoff of a path on
``n0 * M**l`` steps. Each correction is estimated from coupled pairs, a fine path and a
coarse path advanced together in one kernel (``fastsde.kernels.cpu``): the coarse
increment is the sum of the M fine increments it spans, drawn once from the counter-based
stream and never stored. Levels use independent streams (keys from
``SeedSequence(seed).spawn``) and the paths of a level are numbered in the order they are
asked for, so the whole computation, including how many paths each level gets (which the
estimates decide), is reproducible bit for bit for a seed, whatever the thread count.

The sample-size rule and the test for adding a level are those of Giles's ``mlmc.m``,
with the mean square error split evenly between the sampling variance and the squared
bias (``THETA = 0.5``): N_l = ceil(2 / eps^2 sqrt(V_l / C_l) sum_k sqrt(V_k C_k)), and a
level is added while the estimated bias |E[Y_L]| / (M^alpha - 1) exceeds eps / sqrt(2).
"""

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import api
from . import methods as _methods
from .kernels import philox
from .model import SDE, Normal
from .streams import key_from_seed

#: Share of eps^2 given to the squared bias (the rest to the sampling variance).
THETA = 0.5
#: Methods whose coarse path is driven by the sum of the fine increments and nothing else
#: (no extra random variables): their coupling is the summed increment.
COUPLED_METHODS = ("euler_maruyama", "milstein")
#: Paths per chunk of a level kernel call (the sums are merged in chunk order).
CHUNK = api.CHUNK_PATHS


@dataclass
class MLMCLevel:
    """What one level's samples gave.

    Attributes
    ----------
    level : int
    n_steps : int
        Fine steps of the level (``n0 * M**level``).
    n_paths : int
        Coupled pairs sampled (including any counted in ``n_nonfinite``).
    mean, var : float
        Mean and variance of the correction Y_l = P_l - P_{l-1} (P_0 on level 0).
    mean_p, var_p : float
        Mean and variance of the fine payoff P_l.
    kurtosis : float
        Kurtosis of Y_l (Giles's check on the reliability of the variance estimate).
    cost_per_path : int
        Path-steps per pair: fine plus coarse steps.
    n_nonfinite : int
        Pairs whose payoff was not finite, left out of the sums.
    """

    level: int
    n_steps: int
    n_paths: int
    mean: float
    var: float
    mean_p: float
    var_p: float
    kurtosis: float
    cost_per_path: int
    n_nonfinite: int = 0


@dataclass
class MLMCResult:
    """The multilevel estimate of E[P(X_T)] and how it was reached.

    Attributes
    ----------
    value : float
        sum over levels of the mean correction.
    eps : float
        The root-mean-square accuracy asked for.
    se : float
        Standard error of ``value`` (the sampling part of the error).
    bias : float
        Estimated bias, |E[Y_L]| / (M^alpha - 1) (from the fitted or observed decay).
    levels : list of MLMCLevel
    alpha, beta, gamma : float
        Fitted rates: |E[Y_l]| ~ M^(-alpha l), V_l ~ M^(-beta l), cost ~ M^(gamma l).
    cost : int
        Path-steps spent: sum over levels of n_paths * cost_per_path.
    mc_cost : float
        Estimated cost of plain Monte Carlo to the same eps on the finest level: Giles's
        V_L (2 / eps^2) C_L, with V_L the variance of P_L.
    elapsed_s : float
    converged : bool
        False when the bias test still asked for another level at ``L_max``.
    method, M, n0, seed, dtype
        The run's settings.
    device : str
        Where the level kernels ran: "cpu" or "cuda"; from
        ``fastsde.distributed.mlmc``, the device asked for (each worker resolves "auto"
        for itself).
    """

    value: float
    eps: float
    se: float
    bias: float
    levels: list
    alpha: float
    beta: float
    gamma: float
    cost: int
    mc_cost: float
    elapsed_s: float
    converged: bool
    method: str
    M: int
    n0: int
    seed: object
    dtype: str
    extra: dict = field(default_factory=dict)
    device: str = "cpu"

    @property
    def n_nonfinite(self):
        return sum(lv.n_nonfinite for lv in self.levels)

    def __repr__(self):
        return (f"MLMCResult(value={self.value:.6g}, eps={self.eps:g}, se={self.se:.3g}, "
                f"bias={self.bias:.3g}, L={len(self.levels) - 1}, alpha={self.alpha:.2f}, "
                f"beta={self.beta:.2f}, gamma={self.gamma:.2f}, cost={self.cost:.3g}, "
                f"mc_cost={self.mc_cost:.3g}, method={self.method!r})")

    def plot(self, ax=None):
        """Giles's first two panels for this run: log_M of the variance and of |mean| of
        P_l and of the corrections Y_l against the level, and the paths per level.
        Needs matplotlib; returns the figure."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("MLMCResult.plot() needs matplotlib: pip install "
                              "matplotlib") from exc
        if ax is None:
            fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
        else:
            fig = ax[0].figure
        _level_panels(ax[0], ax[1], self.levels, self.M)
        lv = np.array([x.level for x in self.levels])
        ax[2].semilogy(lv, [x.n_paths for x in self.levels], "o-",
                       label=f"eps = {self.eps:g}")
        ax[2].set(xlabel="level l", ylabel="paths N_l")
        for a in ax:
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _level_panels(ax_var, ax_mean, levels, M):
    """Giles's first two panels: log_M variance and log_M |mean| of P_l (dashed) and of
    the corrections P_l - P_{l-1} against the level."""
    lv = np.array([x.level for x in levels])

    def logm(values):
        values = np.abs(np.asarray(values, dtype=float))
        return np.where(values > 0, np.log(np.maximum(values, 1e-300)) / np.log(M), np.nan)

    for ax, name, name_p, what in ((ax_var, "var", "var_p", "variance"),
                                   (ax_mean, "mean", "mean_p", "|mean|")):
        ax.plot(lv, logm([getattr(x, name_p) for x in levels]), "o--", label="P_l")
        ax.plot(lv[1:], logm([getattr(x, name) for x in levels[1:]]), "o-",
                label="P_l - P_l-1")
        ax.set(xlabel="level l", ylabel=f"log_{M} {what}")


def _check_positive_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return int(value)


def _check_running(running, name, dim):
    """``running_min`` / ``running_max``: None, a component index or a sequence of them."""
    if running is None:
        return ()
    items = [running] if isinstance(running, numbers.Integral) else running
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{name} must be None, a component index or a sequence of them; "
                        f"got {running!r}") from None
    for j in items:
        if not api._is_int(j) or not 0 <= j < dim:
            raise ValueError(f"{name} must hold state component indices in [0, {dim}); "
                             f"got {running!r}")
    return tuple(int(j) for j in items)


def _validate(model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max, n_initial, seed,
              device, dtype, params, progress, stop_when=None, running_min=None,
              running_max=None):
    """Every argument of :func:`mlmc`, checked before anything compiles or runs."""
    if not isinstance(model, SDE):
        raise TypeError(f"model must be a fastsde.SDE (multilevel Monte Carlo couples the "
                        f"increments of a noise); got {model!r}")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps > 0 \
            or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number > 0 (the root-mean-square accuracy); "
                         f"got {eps!r}")
    if not isinstance(method, str) or method not in COUPLED_METHODS:
        raise ValueError(f"method must be one of {list(COUPLED_METHODS)} (the methods whose "
                         f"coarse path is driven by the summed fine increments); got "
                         f"{method!r}")
    method_obj = _methods.resolve_method(method, model)
    M = _check_positive_int(M, "M", 2)
    n0 = _check_positive_int(n0, "n0", 1)
    L_min = _check_positive_int(L_min, "L_min", 2)
    L_max = _check_positive_int(L_max, "L_max", L_min)
    # Levels stop at 2**40 fine steps: the default L_max = 20 is cut to what M and n0
    # allow (20 for M = 2, 19 for M = 4 and n0 = 4); only L_min must fit.
    if n0 * M ** L_min > 2 ** 40:
        raise ValueError(f"n0 * M**L_min must be <= 2**40 steps; got n0={n0}, M={M}, "
                         f"L_min={L_min}")
    while n0 * M ** L_max > 2 ** 40:
        L_max -= 1
    n_initial = _check_positive_int(n_initial, "n_initial", 2)
    if not isinstance(device, str) or device not in api.DEVICES:
        raise ValueError(f"device must be one of {list(api.DEVICES)}; got {device!r}")
    if isinstance(x0, Normal):
        raise TypeError("x0 must be a number or an array of shape (dim,) for mlmc; "
                        "fs.Normal initial states are not supported here")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    if params is not None and np.ndim(params) != 1:
        raise ValueError(f"params must have shape (n_params,) for mlmc (one row shared by "
                         f"every path); got shape {np.shape(params)}")
    # simulate's own checks of the model, x0, t_span, seed, dtype and params (one step of
    # two paths is validated, never run).
    req = api.validate(model, x0, t_span, 1, 2, method, "cpu", seed, dtype, params, None,
                       False, 0, None, "count", stop_when=stop_when, progress=progress)
    if not callable(payoff):
        raise TypeError(f"payoff must be a function payoff(t, x, p) -> float; got {payoff!r}")
    # (component, sign): the kernel tracks the minimum of sign * x[component].
    req.running = tuple((j, 1.0) for j in _check_running(running_min, "running_min",
                                                        model.dim)) + \
        tuple((j, -1.0) for j in _check_running(running_max, "running_max", model.dim))
    from . import montecarlo
    # The payoff sees the state and then the running extrema (at t0: the initial values).
    x_payoff = np.concatenate([np.asarray(req.x_start, dtype=float).reshape(-1),
                               [np.asarray(req.x_start, dtype=float).reshape(-1)[j]
                                for j, _ in req.running]])
    montecarlo.preflight((("payoff", payoff),), None, x_payoff, req.params_arr[0],
                         req.t0, req.dtype)
    return req, method_obj, M, n0, L_min, L_max, n_initial


class _Sampler:
    """The pairs of each level, sampled in batches: the compiled level kernel, one
    independent key per level (``SeedSequence(seed).spawn``), and per level the sums of
    ``cpu.MLMC_SUMS`` (float64, merged in chunk order), the pairs sampled and the pairs
    whose payoff was not finite. Paths of a level are numbered in the order they are
    sampled, so a batch continues the level's stream."""

    def __init__(self, model, method_obj, req, payoff, M, n0, L_max, run_level=None,
                 device="cpu"):
        from .kernels import cpu
        self.cpu = cpu
        self.spec = dict(model=model, method=method_obj.name, dtype=np.dtype(req.dtype).name,
                         payoff=payoff, n_params=req.params_arr.shape[1], stop=req.stop,
                         device=device, running=req.running)
        # run_level(spec, args, n_new) -> (per-chunk sums, per-chunk non-finite counts):
        # the kernel in this process, or tasks on a Dask cluster (fastsde.distributed).
        self.run_level = run_level or run_level_here
        seed_seq = req.seed if isinstance(req.seed, np.random.SeedSequence) else \
            np.random.SeedSequence(req.seed)
        self.keys = [key_from_seed(child) for child in seed_seq.spawn(L_max + 1)]
        # Writeable copies: Numba types a read-only array as another type.
        self.x0 = np.array(req.x0_rows[0], dtype=req.dtype)
        self.params = np.array(req.params_arr[:1], dtype=req.dtype)
        self.t0, self.t1 = req.t0, req.t1
        self.M, self.n0 = M, n0
        self.sums, self.counts, self.bad = {}, {}, {}

    def cost_per_path(self, level):
        """Path-steps of a pair: fine steps plus coarse steps."""
        return self.n0 * self.M ** level + (self.n0 * self.M ** (level - 1) if level else 0)

    def sample(self, level, n_new):
        M, n0, cpu = self.M, self.n0, self.cpu
        n_coarse = n0 * M ** (level - 1) if level > 0 else n0
        ratio = M if level > 0 else 1
        coupled = _COUPLING[0] if level > 0 else 0
        key0, key1 = self.keys[level]
        args = (self.x0, self.params, self.t0, self.t1, n_coarse, ratio, coupled, key0, key1,
                self.counts.get(level, 0))
        part, nonfinite = self.run_level(self.spec, args, n_new)
        total = self.sums.get(level, np.zeros(len(cpu.MLMC_SUMS)))
        # Chunk order, one addition after another (cumsum adds sequentially): the same
        # bits for any thread count, device or split into tasks.
        self.sums[level] = np.cumsum(np.vstack([total, part]), axis=0)[-1]
        self.counts[level] = self.counts.get(level, 0) + n_new
        self.bad[level] = self.bad.get(level, 0) + int(nonfinite.sum())

    def moments(self, level):
        """(pairs used, mean and variance of Y, mean and variance of P_f, kurtosis of Y)."""
        n = self.counts[level] - self.bad[level]
        mean, mean2, mean3, mean4, mean_p, mean_p2 = self.sums[level] / max(n, 1)
        var = max(mean2 - mean * mean, 0.0)
        var_p = max(mean_p2 - mean_p * mean_p, 0.0)
        central4 = mean4 - 4 * mean * mean3 + 6 * mean * mean * mean2 - 3 * mean ** 4
        kurt = central4 / var ** 2 if var > 0 else float("nan")
        return n, mean, var, mean_p, var_p, kurt


def run_level_here(spec, args, n_new, first=0):
    """Paths ``[first, first + n_new)`` of a level batch in this process, on its CPU or
    GPU (``spec["device"]``, resolved here: a Dask worker resolves "auto" for itself):
    the per-chunk sums (chunks of ``CHUNK`` paths from the batch's start) and non-finite
    counts, the same bits on either."""
    x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1, batch_start = args
    method = _methods.METHODS[spec["method"]]
    device = spec.get("device", "cpu")
    if device == "auto":  # fs.mlmc resolved it once; a Dask task resolves it here
        device = api._resolve_device(device)
    if device == "cuda":
        from .kernels import cuda
        kernel = cuda.get_mlmc_kernel(spec["model"], method, spec["dtype"], spec["payoff"],
                                      CHUNK, stop=spec["stop"],
                                      running=spec.get("running", ()))
        return cuda.run_mlmc_level(kernel, x0, params, t0, t1, n_coarse, ratio, coupled,
                                   key0, key1, batch_start + first, n_new, CHUNK)
    from .kernels import cpu
    kernel = cpu.get_mlmc_kernel(spec["model"], method, spec["dtype"], spec["payoff"],
                                 spec["n_params"], stop=spec["stop"],
                                 running=spec.get("running", ()))
    n_chunks = (n_new + CHUNK - 1) // CHUNK
    part = np.zeros((n_chunks, len(cpu.MLMC_SUMS)))
    nonfinite = np.zeros(n_chunks, np.int64)
    kernel(x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1,
           np.uint64(batch_start + first), n_new, CHUNK, part, nonfinite)
    return part, nonfinite


def mlmc(model, x0, t_span, payoff, eps, method="milstein", M=2, n0=1, L_min=2, L_max=20,
         n_initial=2000, seed=0, device="auto", dtype="float64", params=None,
         progress=True, stop_when=None, running_min=None, running_max=None):
    """E[payoff(T, X_T)] to root-mean-square accuracy ``eps`` by multilevel Monte Carlo.

    Parameters
    ----------
    model : fastsde.SDE
    x0 : float or array_like of shape (dim,)
    t_span : (float, float)
    payoff : function ``payoff(t, x, p) -> float``
        Plain Python, compiled into the kernel like an observable; evaluated on the final
        state of the fine and of the coarse path of each pair.
    eps : float > 0
        Root-mean-square accuracy: sampling variance and squared bias each <= eps^2 / 2.
    method : {"milstein", "euler_maruyama"}
        Milstein's correction variance decays like h^2 (beta ~ 2: cost O(eps^-2));
        Euler-Maruyama's like h (cost O(eps^-2 log(eps)^2)).
    M : int >= 2
        Refinement factor between levels.
    n0 : int >= 1
        Steps of level 0.
    L_min, L_max : int
        Levels used from the start, and the most that may be added.
    n_initial : int >= 2
        Pairs sampled on a new level before the sample sizes are set.
    seed : int or numpy.random.SeedSequence
    device : {"auto", "cpu", "cuda"}
        Where the level kernels run. The CUDA kernel (one pair per thread, a block's
        pairs summed in shared memory in the CPU's order) gives the CPU's bits whenever
        the model and payoff use only + - * / and sqrt (libm's and CUDA's exp, log,
        ... may differ in the last bit).
    dtype : {"float64", "float32"}
    params : array_like of shape (n_params,), optional
    progress : bool
        Print one line per round of sampling (levels, paths added).
    stop_when : function ``g(t, x, p)``, optional
        Each path of a pair stops at its first state on its own grid where g > 0 (checked
        at t0 and after every step), as in ``simulate``; the payoff sees the stopped
        state. A knock-out barrier: ``stop_when`` the barrier test, a payoff that is zero
        beyond the barrier. (Discrete monitoring: the bias against the continuously
        monitored option falls like sqrt(h), so alpha is about 1/2.)
    running_min, running_max : int or sequence of int, optional
        State components whose running minimum (maximum) over each path's own grid (t0
        and every step; a stopped path's stays frozen with it) the payoff reads: with
        ``dim`` state components, ``x[dim + i]`` is the extremum of the i-th listed
        component, minima first. Lookback payoffs: ``running_min=0`` and
        ``payoff = S_T - x[1]``. (Discrete monitoring, like ``stop_when``.)

    Returns
    -------
    MLMCResult

    Raises
    ------
    TypeError, ValueError, fastsde.IncompatibleMethodError, fastsde.ModelError
        A bad argument, named, before anything compiles.
    """
    return _mlmc(model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max, n_initial, seed,
                 device, dtype, params, progress, stop_when, running_min=running_min,
                 running_max=running_max)


def _mlmc(model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max, n_initial, seed,
          device, dtype, params, progress, stop_when, run_level=None, validated=None,
          running_min=None, running_max=None):
    """:func:`mlmc` with the level runner (``run_level_here`` by default) and, from
    ``fastsde.distributed.mlmc``, the arguments already validated."""
    start = time.perf_counter()
    req, method_obj, M, n0, L_min, L_max, n_initial = validated or _validate(
        model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max, n_initial, seed, device,
        dtype, params, progress, stop_when, running_min, running_max)
    if run_level is None:
        # Resolved once, before anything compiles (device="cuda" without a GPU raises).
        device = api._resolve_device(device)
    sampler = _Sampler(model, method_obj, req, payoff, M, n0, L_max, run_level, device)
    sample, moments, cost_per_path = sampler.sample, sampler.moments, sampler.cost_per_path
    counts, bad = sampler.counts, sampler.bad

    L = L_min
    dN = {level: n_initial for level in range(L + 1)}
    alpha = beta = gamma = float("nan")
    converged = True
    rounds = 0
    while sum(dN.values()) > 0:
        rounds += 1
        for level in range(L + 1):
            if dN.get(level, 0) > 0:
                sample(level, dN[level])
        if progress:
            print(f"fastsde.mlmc: round {rounds}, levels 0-{L}, paths "
                  f"{[counts[level] for level in range(L + 1)]}", flush=True)
        stats = [moments(level) for level in range(L + 1)]
        ml = np.array([abs(st[1]) for st in stats])
        Vl = np.array([st[2] for st in stats])
        Cl = np.array([cost_per_path(level) for level in range(L + 1)], dtype=float)
        # Giles's fix for levels whose few samples give zero mean or variance.
        for level in range(2, L + 1):
            ml[level] = max(ml[level], 0.5 * ml[level - 1] / M ** (alpha if alpha > 0 else 1))
            Vl[level] = max(Vl[level], 0.5 * Vl[level - 1] / M ** (beta if beta > 0 else 1))
        alpha, beta, gamma = _fit_rates(ml, Vl, Cl, M)
        Nl = np.array([counts[level] for level in range(L + 1)], dtype=float)
        Ns = np.ceil(np.sqrt(Vl / Cl) * np.sum(np.sqrt(Vl * Cl)) / ((1 - THETA) * eps ** 2))
        dN = {level: int(max(0.0, Ns[level] - Nl[level])) for level in range(L + 1)}
        if all(dN[level] <= 0.01 * Nl[level] for level in range(L + 1)):
            remaining = ml[L] / (M ** alpha - 1.0)
            if remaining > math.sqrt(THETA) * eps:
                if L == L_max:
                    converged = False
                    warnings.warn(f"fastsde.mlmc: the estimated bias {remaining:.3g} is still "
                                  f"above eps / sqrt(2) = {math.sqrt(THETA) * eps:.3g} at "
                                  f"L_max={L_max}: the result does not meet eps",
                                  RuntimeWarning, stacklevel=2)
                else:
                    L += 1
                    Vl = np.append(Vl, Vl[-1] / M ** beta)
                    Cl = np.append(Cl, cost_per_path(L))
                    Nl = np.append(Nl, 0.0)
                    Ns = np.ceil(np.sqrt(Vl / Cl) * np.sum(np.sqrt(Vl * Cl))
                                 / ((1 - THETA) * eps ** 2))
                    dN = {level: int(max(0.0, Ns[level] - Nl[level]))
                          for level in range(L + 1)}
                    dN[L] = max(dN[L], n_initial)

    stats = [moments(level) for level in range(L + 1)]
    levels = [MLMCLevel(level=level, n_steps=n0 * M ** level, n_paths=counts[level],
                        mean=st[1], var=st[2], mean_p=st[3], var_p=st[4], kurtosis=st[5],
                        cost_per_path=cost_per_path(level), n_nonfinite=bad[level])
              for level, st in enumerate(stats)]
    value = float(sum(lv.mean for lv in levels))
    se = math.sqrt(sum(lv.var / max(lv.n_paths - lv.n_nonfinite, 1) for lv in levels))
    bias = abs(levels[-1].mean) / (M ** alpha - 1.0) if alpha > 0 else float("nan")
    cost = int(sum(lv.n_paths * lv.cost_per_path for lv in levels))
    mc_cost = levels[-1].var_p * (1 / (1 - THETA)) / eps ** 2 * n0 * M ** L
    n_bad = sum(bad.values())
    if n_bad:
        warnings.warn(f"fastsde.mlmc: {n_bad} coupled pairs gave a payoff that is not finite; "
                      f"they are counted in MLMCResult.levels[l].n_nonfinite and left out of "
                      f"the estimates", RuntimeWarning, stacklevel=2)
    return MLMCResult(value=value, eps=float(eps), se=se, bias=float(bias), levels=levels,
                      alpha=float(alpha), beta=float(beta), gamma=float(gamma), cost=cost,
                      mc_cost=float(mc_cost), elapsed_s=time.perf_counter() - start,
                      converged=converged, method=method_obj.name, M=M, n0=n0,
                      seed=req.seed, dtype=np.dtype(req.dtype).name,
                      extra={"rng_version": philox.RNG_VERSION, "rounds": rounds},
                      device=device)


@dataclass
class MLMCTestReport:
    """Giles's ``mlmc_test``: convergence, kurtosis and consistency per level, the fitted
    rates, and the complexity over a list of eps.

    Attributes
    ----------
    levels : list of MLMCLevel
        From ``n_paths`` pairs on each level 0..L.
    check : list of float
        Giles's consistency check per level (nan on level 0): |E[Y_l] + E[P_{l-1}] -
        E[P_l]| over 3 standard errors; above 1 means the coarse path of level l does not
        have the law of the fine path of level l - 1.
    alpha, beta, gamma : float
        Fitted over levels 1..L.
    complexity : list of dict
        Per eps: ``eps``, ``value``, ``mlmc_cost``, ``std_cost`` (plain Monte Carlo),
        ``savings`` and ``n_paths`` (per level).
    text : str
        The printed report.
    M : int
        The refinement factor.
    """

    levels: list
    check: list
    alpha: float
    beta: float
    gamma: float
    complexity: list
    text: str
    M: int = 2

    def __str__(self):
        return self.text

    def plot(self):
        """Giles's four panels: log_M variance and log_M |mean| of P_l and of the
        corrections against the level, the paths per level for each eps, and eps^2 x cost
        against eps for MLMC and plain Monte Carlo. Needs matplotlib; returns the figure."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("MLMCTestReport.plot() needs matplotlib: pip install "
                              "matplotlib") from exc
        fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
        _level_panels(ax[0, 0], ax[0, 1], self.levels, self.M)
        for row in self.complexity:
            ax[1, 0].semilogy(range(len(row["n_paths"])), row["n_paths"], "o-",
                              label=f"eps = {row['eps']:g}")
        ax[1, 0].set(xlabel="level l", ylabel="paths N_l")
        eps = np.array([row["eps"] for row in self.complexity])
        ax[1, 1].loglog(eps, eps ** 2 * np.array([r["mlmc_cost"] for r in self.complexity]),
                        "o-", label="MLMC")
        ax[1, 1].loglog(eps, eps ** 2 * np.array([r["std_cost"] for r in self.complexity]),
                        "o--", label="plain MC")
        ax[1, 1].set(xlabel="eps", ylabel="eps^2 x cost (path-steps)")
        for a in ax.flat:
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8)
        fig.tight_layout()
        return fig


def mlmc_test(model, x0, t_span, payoff, n_paths, L, eps_list, method="milstein", M=2, n0=1,
              seed=0, device="auto", dtype="float64", params=None, print_report=True,
              stop_when=None, running_min=None, running_max=None):
    """Giles's ``mlmc_test``: ``n_paths`` pairs on each level 0..L (means, variances,
    kurtosis, consistency check, cost per pair, fitted alpha / beta / gamma), then
    :func:`mlmc` at each eps of ``eps_list`` (value, cost, plain Monte Carlo's cost, the
    savings and the paths per level). Printed unless ``print_report`` is False, and
    returned as an :class:`MLMCTestReport`.

    Parameters are those of :func:`mlmc`; ``n_paths`` (int >= 2) pairs per level, ``L``
    (int >= 2) the finest level of the convergence test, ``eps_list`` a non-empty list of
    positive accuracies.
    """
    eps_values = list(eps_list) if isinstance(eps_list, (list, tuple, np.ndarray)) else None
    if not eps_values or not all(isinstance(e, numbers.Real) and not isinstance(e, bool)
                                 and math.isfinite(e) and e > 0 for e in eps_values):
        raise ValueError(f"eps_list must be a non-empty list of finite numbers > 0; got "
                         f"{eps_list!r}")
    L = _check_positive_int(L, "L", 2)
    n_paths = _check_positive_int(n_paths, "n_paths", 2)
    req, method_obj, M, n0, _, _, _ = _validate(
        model, x0, t_span, payoff, eps_values[0], method, M, n0, 2, max(L, 2), n_paths,
        seed, device, dtype, params, bool(print_report), stop_when, running_min, running_max)
    sampler = _Sampler(model, method_obj, req, payoff, M, n0, L,
                       device=api._resolve_device(device))
    levels, check = [], []
    for level in range(L + 1):
        sampler.sample(level, n_paths)
        n, mean, var, mean_p, var_p, kurt = sampler.moments(level)
        levels.append(MLMCLevel(level=level, n_steps=n0 * M ** level, n_paths=n_paths,
                                mean=mean, var=var, mean_p=mean_p, var_p=var_p,
                                kurtosis=kurt, cost_per_path=sampler.cost_per_path(level),
                                n_nonfinite=sampler.bad[level]))
        if level == 0:
            check.append(float("nan"))
        else:
            prev = levels[level - 1]
            scale = 3.0 * (math.sqrt(var) + math.sqrt(prev.var_p) + math.sqrt(var_p)) \
                / math.sqrt(n)
            check.append(abs(mean + prev.mean_p - mean_p) / scale if scale > 0 else 0.0)
    ml = np.array([abs(lv.mean) for lv in levels])
    Vl = np.array([lv.var for lv in levels])
    Cl = np.array([lv.cost_per_path for lv in levels], dtype=float)
    alpha, beta, gamma = _fit_rates(ml, Vl, Cl, M)
    lines = ["*** Convergence tests, kurtosis, telescoping sum check ***",
             f"{method_obj.name}, M = {M}, n0 = {n0}, {n_paths} pairs per level",
             f"{'l':>2} {'ave(Pf-Pc)':>12} {'ave(Pf)':>12} {'var(Pf-Pc)':>12} {'var(Pf)':>12}"
             f" {'kurtosis':>10} {'check':>8} {'cost':>8}"]
    for lv, chk in zip(levels, check):
        lines.append(f"{lv.level:>2} {lv.mean:>12.4e} {lv.mean_p:>12.4e} {lv.var:>12.4e} "
                     f"{lv.var_p:>12.4e} {lv.kurtosis:>10.2e} {chk:>8.2e} "
                     f"{lv.cost_per_path:>8d}")
    lines.append(f"alpha = {alpha:.3f} (weak convergence), beta = {beta:.3f} (variance), "
                 f"gamma = {gamma:.3f} (cost)")
    if any(c > 1 for c in check[1:]):
        lines.append("WARNING: a consistency check is above 1: the coarse path of some level "
                     "does not follow the fine path of the level below")
    lines += ["", "*** MLMC complexity tests ***",
              f"{'eps':>8} {'value':>12} {'mlmc_cost':>11} {'std_cost':>11} {'savings':>8}"
              "  N_l"]
    complexity = []
    for eps in eps_values:
        res = mlmc(model, x0, t_span, payoff, eps, method=method_obj.name, M=M, n0=n0,
                   seed=seed, device=device, dtype=dtype, params=params, progress=False,
                   stop_when=stop_when, running_min=running_min, running_max=running_max)
        row = dict(eps=float(eps), value=res.value, mlmc_cost=res.cost,
                   std_cost=res.mc_cost, savings=res.mc_cost / res.cost,
                   n_paths=[lv.n_paths for lv in res.levels])
        complexity.append(row)
        lines.append(f"{eps:>8.4g} {res.value:>12.6g} {res.cost:>11.4g} {res.mc_cost:>11.4g} "
                     f"{row['savings']:>8.2f}  {row['n_paths']}")
    text = "\n".join(lines)
    if print_report:
        print(text)
    return MLMCTestReport(levels=levels, check=check, alpha=alpha, beta=beta, gamma=gamma,
                          complexity=complexity, text=text, M=M)


#: The coupling flag passed to the kernel for coupled levels: 1 (the coarse path sums its
#: own fine increments). Tests set it to 2 (another path's increments) to show that the
#: variance checks fail without the coupling.
_COUPLING = [1]


def _fit_rates(ml, Vl, Cl, M):
    """Least-squares slopes of log_M |mean|, log_M variance and log_M cost against the
    level over levels 1..L (Giles): alpha, beta, gamma (alpha and beta at least 0.5)."""
    levels = np.arange(1, len(ml))
    if len(levels) < 2:
        return float("nan"), float("nan"), float("nan")
    logm = np.log(M)

    def slope(values):
        values = np.maximum(np.asarray(values, dtype=float), 1e-300)
        return np.polyfit(levels, np.log(values) / logm, 1)[0]

    alpha = max(0.5, -slope(ml[1:]))
    beta = max(0.5, -slope(Vl[1:]))
    gamma = slope(Cl[1:])
    return float(alpha), float(beta), float(gamma)


__all__ = ["mlmc", "mlmc_test", "MLMCResult", "MLMCLevel", "MLMCTestReport"]
