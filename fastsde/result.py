"""The :class:`Result` of a simulation."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    """What :func:`fastsde.simulate` returns.

    Attributes
    ----------
    x : numpy.ndarray, shape (n_paths, dim)
        Final states (at t1).
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

    @property
    def n_paths(self):
        return self.x.shape[0]

    @property
    def dim(self):
        return self.x.shape[1]

    def __repr__(self):
        return (f"Result(model={self.model}, method={self.method!r}, device={self.device!r}, "
                f"dtype={self.dtype!r}, n_paths={self.n_paths}, n_steps={self.n_steps}, "
                f"dim={self.dim}, n_save={len(self.t)}, n_nonfinite={self.n_nonfinite}, "
                f"elapsed_s={self.elapsed_s:.4g}, path_steps_per_s={self.path_steps_per_s:.4g})")

    def to_xarray(self):
        """The result as an ``xarray.Dataset`` (needs the optional ``xarray`` package).

        Variables: ``x`` (path, component); ``paths`` (time, path, component) when saved;
        ``mean``, ``var`` (time, component) when accumulated. Attributes: model, method,
        device, dtype, seed, rng_version, n_steps, first_path.
        """
        try:
            import xarray as xr
        except ImportError as exc:
            raise ImportError("Result.to_xarray() needs xarray: pip install xarray") from exc
        path_index = np.arange(self.first_path, self.first_path + self.n_paths)
        coords = {"time": self.t, "path": path_index, "component": np.arange(self.dim)}
        data = {"x": (("path", "component"), self.x)}
        if self.paths is not None:
            data["paths"] = (("time", "path", "component"), self.paths)
        if self.mean is not None:
            data["mean"] = (("time", "component"), self.mean)
            data["var"] = (("time", "component"), self.var)
        attrs = dict(model=self.model, method=self.method, device=self.device,
                     dtype=self.dtype, seed=str(self.seed), rng_version=self.rng_version,
                     n_steps=self.n_steps, first_path=self.first_path,
                     n_nonfinite=self.n_nonfinite)
        return xr.Dataset(data, coords=coords, attrs=attrs)
