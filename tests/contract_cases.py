"""Argument mixes of ``fastsde.simulate`` run bounds-checked and fast, for the contract
property test (tests/test_contract_property.py).

A *case* is a JSON-able dict: a kernel configuration (``config``: model, method, dtype,
parameter width, observables, stopping; one of ``CONFIGS``) and the arguments that do not
change the kernel (x0 form, params form, save_at, stats, keep_paths, histogram,
antithetic, keep_x, n_paths, first_path, seed). :func:`run_case` runs it twice, with
``debug=True`` (the drivers' own code and the user functions compiled with bounds
checking) and ``debug=False`` (the fast kernel), and checks that every output is the
same, bit for bit.

Run as a script, ``python contract_cases.py CASES.json`` runs each case in turn and prints
``CASE i`` before it (flushed), so that when the process dies (a segfault, a heap abort)
the parent knows which case killed it. The user functions are module-level factories of
closures over plain constants, so their fingerprints, and Numba's disk cache, are the
same in every process.
"""

import json
import sys

import numpy as np

import fastsde as fs

#: Kernel configurations: every noise kind, dims 1-5, every method that fits, both
#: dtypes, parameter widths 0-5 given to models declared with and without parameters,
#: with and without observables and stopping. Each is compiled twice (debug and fast),
#: so the list is kept to what CI can afford; the arguments that do not change the kernel
#: are drawn freely by hypothesis.
CONFIGS = {
    "ode1_euler_f64_undeclared2": dict(kind="ode", dim=1, method="euler",
                                       dtype="float64", width=2, declared=False,
                                       obs=False, stop=False),
    "ode3_rk4_f32_declared1_obs": dict(kind="ode", dim=3, method="rk4", dtype="float32",
                                       width=1, declared=True, obs=True, stop=False),
    "ode2_heun_f64_none_stop": dict(kind="ode", dim=2, method="heun", dtype="float64",
                                    width=0, declared=False, obs=False, stop=True),
    "add2_heun_f32_undeclared3_obs_stop": dict(kind="sde", noise="additive", dim=2,
                                               method="heun", dtype="float32", width=3,
                                               declared=False, obs=True, stop=True),
    "add1_em_f64_undeclared2_obs": dict(kind="sde", noise="additive", dim=1,
                                        method="euler_maruyama", dtype="float64", width=2,
                                        declared=False, obs=True, stop=False),
    "diag5_em_f64_declared4_stop": dict(kind="sde", noise="diagonal", dim=5,
                                        method="euler_maruyama", dtype="float64", width=4,
                                        declared=True, obs=False, stop=True),
    "scalar2_em_f32_undeclared5": dict(kind="sde", noise="scalar", dim=2,
                                       method="euler_maruyama", dtype="float32", width=5,
                                       declared=False, obs=False, stop=False),
    "general3x2_em_f64_undeclared1_obs_stop": dict(kind="sde", noise="general", dim=3,
                                                   noise_dim=2, method="euler_maruyama",
                                                   dtype="float64", width=1,
                                                   declared=False, obs=True, stop=True),
    "diag4_em_f32_none_obs": dict(kind="sde", noise="diagonal", dim=4,
                                  method="euler_maruyama", dtype="float32", width=0,
                                  declared=False, obs=True, stop=False),
    # The methods issue's schemes and increment kinds (extra normals, discrete draws,
    # the Stratonovich calculus).
    "diag3_milstein_f64_declared2_stop": dict(kind="sde", noise="diagonal", dim=3,
                                              method="milstein", dtype="float64", width=2,
                                              declared=True, obs=False, stop=True),
    "scalar2_sriw1_three_point_f32_undeclared1_obs": dict(
        kind="sde", noise="scalar", dim=2, method="sriw1", increments="three_point",
        dtype="float32", width=1, declared=False, obs=True, stop=False),
    "add2_sra1_f64_none_obs_stop": dict(kind="sde", noise="additive", dim=2, method="sra1",
                                        dtype="float64", width=0, declared=False, obs=True,
                                        stop=True),
    "general2x3_dri1_f64_declared1_obs": dict(kind="sde", noise="general", dim=2,
                                              noise_dim=3, method="dri1", dtype="float64",
                                              width=1, declared=True, obs=True, stop=False),
    "general3x2_euler_heun_strat_two_point_f32_undeclared2": dict(
        kind="sde", noise="general", dim=3, noise_dim=2, method="euler_heun",
        calculus="stratonovich", increments="two_point", dtype="float32", width=2,
        declared=False, obs=False, stop=False),
}


def make_drift(dim, width):
    """Linear decay plus a pull from each parameter (read by a constant index: a copy of
    ``p`` narrower than the width passed is read out of bounds)."""
    def drift(t, x, p, out):
        for i in range(dim):
            out[i] = -(0.5 + 0.25 * i) * x[i]
        for k in range(width):
            out[k % dim] += 0.1 * p[k]
    return drift


def make_diffusion(dim, noise, noise_dim, width):
    """The diffusion of each noise kind; reads the last parameter when there is one."""
    last = width - 1

    if noise == "general":
        def diffusion(t, x, p, out):
            s = 0.3 + (0.05 * p[last] if last >= 0 else 0.0)
            for i in range(dim):
                for j in range(noise_dim):
                    out[i, j] = s * (1.0 + 0.1 * x[i]) if i % noise_dim == j else 0.05 * s
        return diffusion
    if noise == "additive":
        def diffusion(t, x, p, out):
            s = 0.3 + (0.05 * p[last] if last >= 0 else 0.0)
            for i in range(dim):
                out[i] = s * (1.0 + 0.1 * i)
        return diffusion

    def diffusion(t, x, p, out):
        s = 0.3 + (0.05 * p[last] if last >= 0 else 0.0)
        for i in range(dim):
            out[i] = s * (1.0 + 0.1 * x[i] * x[i]) / (1.0 + x[i] * x[i])
    return diffusion


def make_observables(dim, width):
    last = width - 1

    def square(t, x, p):
        return x[dim - 1] * x[dim - 1]

    def shifted(t, x, p):
        return x[0] + (p[last] if last >= 0 else 0.0)

    return {"square": square, "shifted": shifted}


def make_stop(dim):
    def stop(t, x, p):
        return abs(x[dim - 1]) - 1.5
    return stop


PARAM_VALUES = np.array([0.7, -0.4, 1.3, 0.2, -0.9])


def build_model(config):
    """The model of a configuration (declared with its parameters or without any)."""
    c = CONFIGS[config]
    dim, width = c["dim"], c["width"]
    params = PARAM_VALUES[:width] if c["declared"] else None
    drift = make_drift(dim, width)
    if c["kind"] == "ode":
        return fs.ODE(drift, dim, params=params, name=config)
    noise_dim = c.get("noise_dim")
    return fs.SDE(drift, make_diffusion(dim, c["noise"], noise_dim or dim, width), dim,
                  noise=c["noise"], noise_dim=noise_dim, params=params, name=config,
                  calculus=c.get("calculus", "ito"))


def call_arguments(case):
    """(model, keyword arguments of fastsde.simulate) of a case."""
    c = CONFIGS[case["config"]]
    model = build_model(case["config"])
    dim, width, n = c["dim"], c["width"], case["n_paths"]
    rng = np.random.default_rng(case["seed"])
    kw = dict(t_span=(0.0, 1.0), n_steps=case["n_steps"], n_paths=n, method=c["method"],
              device="cpu", seed=case["seed"], dtype=c["dtype"], progress=False,
              first_path=case["first_path"], antithetic=case["antithetic"],
              keep_x=case["keep_x"], stats=case["stats"], keep_paths=case["keep_paths"],
              increments=c.get("increments", "gaussian"))
    x0 = case["x0"]
    if x0 == "number":
        kw["x0"] = 0.25
    elif x0 == "vector":
        kw["x0"] = rng.uniform(-1, 1, dim)
    elif x0 == "rows":
        kw["x0"] = rng.uniform(-1, 1, (n, dim))
    else:
        kw["x0"] = fs.Normal(0.1, 0.5)
    p = case["params"]
    if p == "shared":
        kw["params"] = PARAM_VALUES[:width] * 1.1
    elif p == "rows":
        kw["params"] = PARAM_VALUES[:width] * rng.uniform(0.5, 1.5, (n, 1))
    if case["save_at"] == "int":
        kw["save_at"] = case["n_steps"]
    elif case["save_at"] == "times":
        kw["save_at"] = [0.0, 1.0]
    if case["histogram"]:
        kw["histogram"] = dict(bins=7, range=(-1.0, 1.0))
    if c["obs"]:
        kw["observables"] = make_observables(dim, width)
    if c["stop"]:
        kw["stop_when"] = make_stop(dim)
    return model, kw


OUTPUTS = ("x", "paths", "mean", "var", "count", "hit_time", "obs_count", "obs_mean",
           "obs_var", "n_nonfinite")


def run_case(case):
    """Run a case bounds-checked and fast; returns a list of differences (empty: equal).

    Raises whatever ``simulate`` raises: an index out of bounds in the bounds-checked
    run is a ``fastsde.ModelError``.
    """
    model, kw = call_arguments(case)
    checked = fs.simulate(model, debug=True, **kw)
    fast = fs.simulate(model, debug=False, **kw)
    diffs = []
    for name in OUTPUTS:
        a, b = getattr(checked, name, None), getattr(fast, name, None)
        if (a is None) != (b is None):
            diffs.append(f"{name}: present in one run only")
        elif a is not None and not np.array_equal(np.asarray(a), np.asarray(b),
                                                  equal_nan=True):
            diffs.append(f"{name}: differs")
    if (checked.histogram is None) != (fast.histogram is None):
        diffs.append("histogram: present in one run only")
    elif checked.histogram is not None:
        for part in ("counts", "below", "above"):
            if not np.array_equal(getattr(checked.histogram, part),
                                  getattr(fast.histogram, part)):
                diffs.append(f"histogram.{part}: differs")
    # The outputs asked for are there, with the request's shapes.
    n, dim = case["n_paths"], CONFIGS[case["config"]]["dim"]
    if case["keep_x"] and fast.x.shape != (n, dim):
        diffs.append(f"x has shape {fast.x.shape}, expected {(n, dim)}")
    return diffs


def main(path):
    with open(path) as f:
        cases = json.load(f)
    failures = 0
    for i, case in enumerate(cases):
        print(f"CASE {i} {json.dumps(case)}", flush=True)
        try:
            diffs = run_case(case)
        except Exception as exc:  # noqa: BLE001 - reported per case
            diffs = [f"raised {type(exc).__name__}: {exc}"]
        if diffs:
            failures += 1
            print(f"FAIL {i}: " + "; ".join(diffs), flush=True)
        else:
            print(f"OK {i}", flush=True)
    print(f"DONE {len(cases)} cases, {failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
