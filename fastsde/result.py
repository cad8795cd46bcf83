"""The :class:`Result` of a simulation."""

import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    """What :func:`fastsde.simulate` returns.

    Attributes
    ----------
    x : numpy.ndarray, shape (n_paths, dim), or None
        Final states (at t1); None from ``fastsde.distributed.simulate`` unless it was
        asked to gather them (``keep_x=True``).
    t : numpy.ndarray, shape (n_save,)
        Save times (``[t1]`` when ``save_at`` is None).
    paths : numpy.ndarray, shape (n_save, n_paths, dim), or None
        States at the save times, when ``save_at`` was given.
    mean, var : numpy.ndarray, shape (n_save, dim), or None
        Per-save-time mean and (unbiased, ddof=1) variance of each component over the
        paths whose value is finite, when ``stats=True``; accumulated in float64.
    count : numpy.ndarray of int, shape (n_save, dim), or None
        Number of finite values behind ``mean`` / ``var``.
    n_nonfinite : int
        Paths whose final state has a non-finite component (they are never mixed into
        ``mean`` / ``var``).
    device, method, dtype : str
    seed : int or numpy.random.SeedSequence
    rng_version : int
    n_steps, first_path : int
    elapsed_s : float
        Kernel wall time (compilation excluded).
    path_steps_per_s : float
        n_paths * n_steps / elapsed_s.
    model : str
        The model's name.
    antithetic : bool
        Paths came in antithetic pairs (observables were accumulated per pair).
    increments : str
        "gaussian" (Wiener increments), "three_point" or "two_point" (discrete
        increments: the paths are not Brownian paths, only expectations are right).
    obs_names : tuple of str
        Observable names, in the order of the last axis of ``obs_*``.
    obs_count, obs_mean, obs_var : numpy.ndarray, shape (n_save, n_obs), or None
        Units (paths, or pairs), mean and unbiased variance of each observable per save
        time; see :meth:`estimate`.
    hit_time : numpy.ndarray, shape (n_paths,), or None
        With ``stop_when`` and ``keep_x``: time of the first state with g > 0 (+inf if
        none by t1).
    hit_count : int or None
        Paths that stopped; ``hit_mean`` / ``hit_var`` are the mean and unbiased
        variance of their hitting times (float, NaN when undefined).
    histogram : fastsde.Histogram or None
        In-kernel histograms of the state, with ``histogram=...``.
    """

    x: np.ndarray
    t: np.ndarray
    paths: object
    mean: object
    var: object
    count: object
    n_nonfinite: int
    device: str
    method: str
    dtype: str
    seed: object
    rng_version: int
    n_steps: int
    first_path: int
    elapsed_s: float
    path_steps_per_s: float
    model: str = ""
    extra: dict = field(default_factory=dict)
    antithetic: bool = False
    increments: str = "gaussian"
    obs_names: tuple = ()
    obs_count: object = None
    obs_mean: object = None
    obs_var: object = None
    hit_time: object = None
    hit_count: object = None
    hit_mean: object = None
    hit_var: object = None
    histogram: object = None

    def estimate(self, name, t=None):
        """The Monte Carlo estimate of an observable, or of the hitting statistics.

        Parameters
        ----------
        name : str
            An observable's name; ``"hit_probability"`` (fraction of the finite paths
            that stopped by t1, binomial standard error); ``"hit_time"`` (mean hitting
            time of the paths that stopped, conditional on stopping by t1).
        t : float, optional
            A save time (observables only); default the last one, t1.

        Returns
        -------
        fastsde.Estimate
            ``value``, ``se``, ``ci`` (95%) and ``n`` (independent units: paths, or
            antithetic pairs).
        """
        from .montecarlo import HIT_ESTIMATES, Estimate

        if name in HIT_ESTIMATES:
            if self.hit_count is None:
                raise ValueError(f"estimate({name!r}) needs a run with stop_when=...")
            if t is not None:
                raise ValueError(f"estimate({name!r}) is over the whole run; t must be None")
            if self.antithetic:
                raise ValueError(f"estimate({name!r}) treats paths as independent, which "
                                 f"antithetic pairs are not; with antithetic=True use an "
                                 f"observable of the stopped state (its pairs are handled)")
            if name == "hit_time":
                return Estimate.from_moments(self.hit_mean, self.hit_var, self.hit_count)
            n = self.n_paths - self.n_nonfinite
            prob = self.hit_count / n if n > 0 else float("nan")
            var = prob * (1.0 - prob) * n / (n - 1) if n > 1 else float("nan")
            return Estimate.from_moments(prob, var, n)
        if name not in self.obs_names:
            known = list(self.obs_names) + (list(HIT_ESTIMATES)
                                            if self.hit_count is not None else [])
            raise KeyError(f"no estimate named {name!r}; this result has {known}")
        o = self.obs_names.index(name)
        if t is None:
            s = len(self.t) - 1
        else:
            hits = np.flatnonzero(np.isclose(self.t, float(t), rtol=0, atol=1e-9 * max(
                1.0, float(np.max(np.abs(self.t))))))
            if hits.size == 0:
                raise ValueError(f"t={t!r} is not a save time; save times are "
                                 f"{self.t.tolist()[:10]}")
            s = int(hits[0])
        return Estimate.from_moments(self.obs_mean[s, o], self.obs_var[s, o],
                                     self.obs_count[s, o])

    @property
    def n_paths(self):
        """Number of paths simulated in this result.

        Returns
        -------
        int
            Rows of ``x`` (or of each save time in ``paths``); a statistics-only run that
            kept neither reports the count it recorded (``extra["n_paths"]``).
        """
        if self.x is not None:
            return self.x.shape[0]
        if self.paths is not None:
            return self.paths.shape[1]
        return int(self.extra["n_paths"])

    @property
    def dim(self):
        """State dimension of the model, i.e. the last axis of ``x``, ``paths``, ``mean``.

        Returns
        -------
        int
            Taken from whichever of ``x``, ``mean`` / ``paths``, ``histogram`` or
            ``extra["dim"]`` the result holds.
        """
        if self.x is not None:
            return self.x.shape[1]
        if self.mean is not None or self.paths is not None:
            return (self.mean if self.mean is not None else self.paths).shape[-1]
        if self.histogram is not None:
            return self.histogram.counts.shape[1]
        return int(self.extra["dim"])

    def __repr__(self):
        increments = (f", increments={self.increments!r}" if self.increments != "gaussian"
                      else "")
        return (f"Result(model={self.model}, method={self.method!r}{increments}, "
                f"device={self.device!r}, "
                f"dtype={self.dtype!r}, n_paths={self.n_paths}, n_steps={self.n_steps}, "
                f"dim={self.dim}, n_save={len(self.t)}, n_nonfinite={self.n_nonfinite}, "
                f"elapsed_s={self.elapsed_s:.4g}, path_steps_per_s={self.path_steps_per_s:.4g})")

    def plot(self, component=0, max_paths=50, exact_density=None, bins=100, ax=None):
        """Plot a fan of sample paths with mean +/- 2 sd bands, and the final histogram.

        Needs matplotlib. Bands come from ``mean`` / ``var`` when the run kept statistics,
        else from the finite values of the stored paths. When no path has a finite value of
        ``X[component]`` at t1 (every path blew up), the figure is still drawn: the paths
        up to where they left the finite numbers on the left, and on the right, instead of
        a histogram, the words "no finite path at t = t1" with the count of non-finite
        paths (and ``exact_density`` is not drawn, having no range to draw over).

        Parameters
        ----------
        component : int
            State component to show.
        max_paths : int
            At most this many stored paths are drawn.
        exact_density : callable, optional
            ``f(x) -> density`` drawn over the final histogram (for example the exact law).
        bins : int
        ax : pair of matplotlib Axes, optional

        Returns
        -------
        matplotlib.figure.Figure
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("Result.plot() needs matplotlib: pip install matplotlib") from exc
        if not 0 <= component < self.dim:
            raise ValueError(f"component must be in [0, {self.dim}); got {component!r}")
        x_final = self.x if self.x is not None else (
            self.paths[-1] if self.paths is not None else None)
        if x_final is None and self.histogram is None:
            raise ValueError("Result.plot() needs final states or an in-kernel histogram: "
                             "this result kept only statistics (run with keep_x=True or "
                             "histogram=dict(bins=..., range=...))")
        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        else:
            fig = ax[0].figure
        ax0, ax1 = ax
        mean = var = None
        if self.mean is not None:
            mean, var = self.mean[:, component], self.var[:, component]
        elif self.paths is not None:
            vals = self.paths[:, :, component].astype(np.float64)
            vals[~np.isfinite(vals)] = np.nan  # an inf would make the whole band inf
            with warnings.catch_warnings():
                # A save time where no path is finite gives NaN (no band there), which
                # is what should be drawn; numpy's "empty slice" warning adds nothing.
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, var = np.nanmean(vals, axis=1), np.nanvar(vals, axis=1, ddof=1)
        if self.paths is not None:
            ax0.plot(self.t, self.paths[:, :max_paths, component], lw=0.6, alpha=0.7)
        if mean is not None and len(self.t) > 1:
            sd = np.sqrt(var)
            ax0.plot(self.t, mean, "k", lw=1.5, label="mean")
            ax0.fill_between(self.t, mean - 2 * sd, mean + 2 * sd, color="k", alpha=0.12,
                             label="mean ± 2 sd")
            ax0.legend(loc="best")
        ax0.set(xlabel="t", ylabel=f"X[{component}]", title=self.model)
        if x_final is not None:
            final = x_final[:, component].astype(np.float64)
            final = final[np.isfinite(final)]
            if final.size == 0:
                lo = hi = None
            else:
                ax1.hist(final, bins=bins, density=True, alpha=0.6,
                         label=f"X at t = {self.t[-1]:g}")
                lo, hi = final.min(), final.max()
        else:  # the histogram counted in the kernel (statistics-only runs)
            edges = self.histogram.edges[component]
            ax1.stairs(self.histogram.density(-1, component), edges, fill=True, alpha=0.6,
                       label=f"X at t = {self.t[-1]:g} (in-kernel histogram)")
            lo, hi = edges[0], edges[-1]
        if lo is None:
            # Every path left the finite numbers: say so where the histogram would be,
            # rather than fail inside numpy on an empty array.
            n_total = x_final.shape[0]
            ax1.text(0.5, 0.5, f"no finite path at t = {self.t[-1]:g}\n"
                               f"({n_total} of {n_total} paths non-finite in "
                               f"X[{component}])",
                     ha="center", va="center", transform=ax1.transAxes)
            ax1.set(xlabel=f"X[{component}]", ylabel="density")
        else:
            if exact_density is not None:
                grid = np.linspace(lo, hi, 400)
                ax1.plot(grid, exact_density(grid), "k", label="exact")
            ax1.set(xlabel=f"X[{component}]", ylabel="density")
            ax1.legend(loc="best")
        fig.tight_layout()
        return fig

    def to_xarray(self):
        """The result as an ``xarray.Dataset`` (needs the optional ``xarray`` package).

        Variables: ``x`` (path, component) and ``hit_time`` (path) when stored; ``paths``
        (time, path, component) when saved; ``mean``, ``var``, ``count`` (time, component)
        when accumulated; ``obs_mean``, ``obs_var``, ``obs_count`` (time, observable)
        with observables; ``histogram`` (time, component, bin) with ``bin_edges``
        (component, edge). Attributes: model, method, device, dtype, seed, rng_version,
        n_steps, first_path, n_paths, n_nonfinite, antithetic, increments.
        """
        try:
            import xarray as xr
        except ImportError as exc:
            raise ImportError("Result.to_xarray() needs xarray: pip install xarray") from exc
        coords = {"time": self.t, "component": np.arange(self.dim)}
        if self.x is not None or self.paths is not None:
            coords["path"] = np.arange(self.first_path, self.first_path + self.n_paths,
                                       dtype=np.uint64)
        data = {}
        if self.x is not None:
            data["x"] = (("path", "component"), self.x)
        if self.hit_time is not None:
            data["hit_time"] = (("path",), self.hit_time)
        if self.paths is not None:
            data["paths"] = (("time", "path", "component"), self.paths)
        if self.mean is not None:
            data["mean"] = (("time", "component"), self.mean)
            data["var"] = (("time", "component"), self.var)
            data["count"] = (("time", "component"), self.count)
        if self.obs_names:
            coords["observable"] = list(self.obs_names)
            data["obs_mean"] = (("time", "observable"), self.obs_mean)
            data["obs_var"] = (("time", "observable"), self.obs_var)
            data["obs_count"] = (("time", "observable"), self.obs_count)
        if self.histogram is not None:
            data["histogram"] = (("time", "component", "bin"), self.histogram.counts)
            data["bin_edges"] = (("component", "edge"), self.histogram.edges)
        attrs = dict(model=self.model, method=self.method, device=self.device,
                     dtype=self.dtype, seed=str(self.seed), rng_version=self.rng_version,
                     n_steps=self.n_steps, first_path=self.first_path,
                     n_paths=self.n_paths, n_nonfinite=self.n_nonfinite,
                     antithetic=int(self.antithetic), increments=self.increments)
        return xr.Dataset(data, coords=coords, attrs=attrs)
