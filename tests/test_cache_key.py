"""The kernel cache key covers every value a user function reads (and Result.plot on
all-non-finite runs).

Numba freezes the globals a function reads (module attributes included) and its closure
values into the compiled kernel as constants. fastsde finds a compiled kernel, in memory
and in Numba's disk cache, by the model's fingerprint (``fastsde.model.code_fingerprint``),
so a value the fingerprint missed would make a changed model run the old kernel and
return the old model's numbers without any error. Each test below changes one such value
and checks that the new numbers (or the fingerprint) follow it.
"""

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import matplotlib
import numpy as np
import pytest

import fastsde as fs
from fastsde.model import code_fingerprint

matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Heun (the ODE default) with 50 steps on [0, 1] is within 0.2% of exp(-theta) for
#: theta <= 3, while exp(-1) and exp(-3) differ 7-fold: rtol 1e-2 tells them apart.
N_STEPS, RTOL = 50, 1e-2


def cfg_source(theta=1.0, helper_factor=1.0):
    """Source of the user's configuration module: a constant and a jitted helper."""
    return textwrap.dedent(f"""\
        import numba

        THETA = {theta!r}


        @numba.njit
        def helper(v):
            return -{helper_factor!r} * v
        """)


USER_SOURCE = textwrap.dedent("""\
    import cachekey_cfg as cfgmod


    def drift_attr(t, x, p, out):
        out[0] = -cfgmod.THETA * x[0]


    def drift_helper(t, x, p, out):
        out[0] = cfgmod.helper(x[0])
    """)


def flow_at_1(model):
    """x(1) of dx/dt = drift from x0 = 1 (a bare drift gets a fresh model)."""
    if not isinstance(model, fs.ODE):
        model = fs.ODE(model, 1)
    res = fs.simulate(model, 1.0, (0.0, 1.0), N_STEPS, 2, device="cpu", progress=False)
    return float(res.x[0, 0])


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Import ``cachekey_cfg`` and ``cachekey_user`` from tmp_path; forgotten after."""
    (tmp_path / "cachekey_cfg.py").write_text(cfg_source())
    (tmp_path / "cachekey_user.py").write_text(USER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    # No .pyc: a rewrite of the same size within the same second would otherwise be
    # read back from a stale .pyc by importlib.reload.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    names = ("cachekey_cfg", "cachekey_user")
    for name in names:
        sys.modules.pop(name, None)
    cfg = importlib.import_module("cachekey_cfg")
    user = importlib.import_module("cachekey_user")
    yield tmp_path, cfg, user
    for name in names:
        sys.modules.pop(name, None)


# ------------------------------------------------------------ (a) same process, attribute
def test_module_attribute_change_in_process_gets_a_new_kernel(user_modules):
    _, cfg, user = user_modules
    first = fs.ODE(user.drift_attr, 1)
    assert flow_at_1(first) == pytest.approx(math.exp(-1.0), rel=RTOL)
    cfg.THETA = 3.0
    # The former fingerprint hashed the module by name only: the kernel compiled with
    # THETA = 1 was reused and this gave exp(-1).
    assert flow_at_1(user.drift_attr) == pytest.approx(math.exp(-3.0), rel=RTOL)
    # The model built before the change follows it too (its fingerprint is recomputed
    # at each run); this reuses the kernel just compiled.
    assert flow_at_1(first) == pytest.approx(math.exp(-3.0), rel=RTOL)


# ------------------------------------------------------------ (c) helper body changes
def test_helper_called_through_a_module_whose_body_changes_gets_a_new_kernel(user_modules):
    tmp_path, cfg, user = user_modules
    assert flow_at_1(user.drift_helper) == pytest.approx(math.exp(-1.0), rel=RTOL)
    (tmp_path / "cachekey_cfg.py").write_text(cfg_source(helper_factor=3.0))
    importlib.reload(cfg)  # the user edits the module and reloads it (e.g. in Jupyter)
    assert flow_at_1(user.drift_helper) == pytest.approx(math.exp(-3.0), rel=RTOL)


# ------------------------------------------------------------ (d) closure cells
def make_closure_drift(source):
    def drift(t, x, p, out):
        out[0] = -source.THETA * x[0]
    return drift


def make_rebindable_drift(theta):
    def drift(t, x, p, out):
        out[0] = -theta * x[0]

    def rebind(value):
        nonlocal theta
        theta = value
    return drift, rebind


def test_a_value_read_through_a_closure_cell_is_part_of_the_key():
    source = types.ModuleType("cachekey_closure_source")
    source.THETA = 1.0
    assert flow_at_1(make_closure_drift(source)) == pytest.approx(math.exp(-1.0), rel=RTOL)
    source.THETA = 3.0
    assert flow_at_1(make_closure_drift(source)) == pytest.approx(math.exp(-3.0), rel=RTOL)
    # A cell rebound to another number (no compile needed to see the key change).
    drift, rebind = make_rebindable_drift(1.0)
    before = code_fingerprint(drift)
    rebind(3.0)
    assert code_fingerprint(drift) != before


# ------------------------------------------------------------ fingerprint-level cases
def test_nested_module_chains_arrays_and_defaults_are_hashed_by_value(tmp_path,
                                                                      monkeypatch):
    pkg = tmp_path / "cachekey_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import sub\n")
    (pkg / "sub" / "__init__.py").write_text("X = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for name in ("cachekey_pkg", "cachekey_pkg.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    namespace = {"cachekey_pkg": importlib.import_module("cachekey_pkg"),
                 "TABLE": np.array([1.0, 2.0])}
    exec(textwrap.dedent("""\
        def drift(t, x, p, out, scale=2.0):
            out[0] = -cachekey_pkg.sub.X * TABLE[0] * scale * x[0]
        """), namespace)
    drift = namespace["drift"]
    seen = {code_fingerprint(drift)}
    namespace["cachekey_pkg"].sub.X = 3.0      # pkg.sub.X: a chain of two modules
    seen.add(code_fingerprint(drift))
    namespace["TABLE"][0] = 5.0                # a global array, changed in place
    seen.add(code_fingerprint(drift))
    drift.__defaults__ = (4.0,)                # a default argument
    seen.add(code_fingerprint(drift))
    assert len(seen) == 4
    for name in ("cachekey_pkg", "cachekey_pkg.sub"):
        sys.modules.pop(name, None)


def test_fingerprint_ignores_values_the_function_does_not_read(user_modules):
    # Keys must not change needlessly: a constant the drift does not name leaves it alone.
    _, cfg, user = user_modules
    before = code_fingerprint(user.drift_attr)
    cfg.UNUSED = 42.0
    assert code_fingerprint(user.drift_attr) == before


# ------------------------------------------------------------ (b), (e) new interpreters
SCRIPT = textwrap.dedent("""\
    import json
    import math

    import numpy as np

    import fastsde as fs
    import cachekey_cfg as cfgmod


    def drift(t, x, p, out):
        out[0] = -cfgmod.THETA * x[0]


    def half(v):
        return 0.5 * v


    def twice(v):
        return 2.0 * v


    SCALERS = (half, twice)


    def probe(t, x, p, out):
        # Never compiled: only fingerprinted. A set of strings (its repr order follows
        # the hash seed), a tuple of functions (its repr holds addresses), a ufunc, math.
        if "b" in {"a", "b", "c", "d", "e", "f", "g", "h"}:
            out[0] = SCALERS[0](np.exp(x[0])) + math.pi


    res = fs.simulate(fs.ODE(drift, 1), 1.0, (0.0, 1.0), {n_steps}, 2, device="cpu",
                      progress=False)
    print(json.dumps({"x": float(res.x[0, 0]),
                      "model": fs.ODE(drift, 1).fingerprint,
                      "probe": fs.ODE(probe, 1).fingerprint}))
    """).replace("{n_steps}", str(N_STEPS))


def test_new_interpreter_sees_an_edited_module_and_reuses_the_disk_cache(tmp_path):
    (tmp_path / "cachekey_cfg.py").write_text(cfg_source(theta=1.0))
    (tmp_path / "run.py").write_text(SCRIPT)
    cache = tmp_path / "numba_cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))

    def run(hash_seed):
        out = subprocess.run([sys.executable, str(tmp_path / "run.py")], cwd=tmp_path,
                             env=dict(env, PYTHONHASHSEED=str(hash_seed)),
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        # Numba's code files, and fastsde's merged kernels (cpu._framed_kernel).
        kernels = sorted(p.name for pattern in ("*.nbc", "fastsde-kernel-*.pkl")
                         for p in cache.rglob(pattern))
        return json.loads(out.stdout.strip().splitlines()[-1]), kernels

    first, kernels_1 = run(1)
    assert first["x"] == pytest.approx(math.exp(-1.0), rel=RTOL)
    (tmp_path / "cachekey_cfg.py").write_text(cfg_source(theta=3.0))
    second, kernels_2 = run(2)
    # (b) The former fingerprint did not change with the file, so the disk cache handed
    # back the THETA = 1 kernel: exp(-1) again.
    assert second["x"] == pytest.approx(math.exp(-3.0), rel=RTOL)
    assert second["model"] != first["model"]
    assert len(kernels_2) > len(kernels_1)
    third, kernels_3 = run(3)
    # (e) Same source, another process and hash seed: same fingerprints, so the kernel
    # is loaded from disk (no new kernel file) and gives the same bits.
    assert third["model"] == second["model"]
    assert first["probe"] == second["probe"] == third["probe"]
    assert kernels_3 == kernels_2
    assert third["x"] == second["x"]


# ------------------------------------------------------------ Result.plot, no finite path
def _result(x, paths=None):
    n_paths, dim = x.shape
    t = np.linspace(0.0, 1.0, paths.shape[0]) if paths is not None else np.array([1.0])
    return fs.Result(x=x, t=t, paths=paths, mean=None, var=None, count=None,
                     n_nonfinite=n_paths, device="cpu", method="euler", dtype="float64",
                     seed=0, rng_version=fs.RNG_VERSION, n_steps=10, first_path=0,
                     elapsed_s=1.0, path_steps_per_s=1.0, model="blowup")


def _texts(ax):
    return " ".join(text.get_text() for text in ax.texts)


def test_plot_with_no_finite_final_state_says_so():
    import matplotlib.pyplot as plt

    x = np.array([[np.inf], [np.nan], [-np.inf]])
    fig = _result(x).plot(exact_density=lambda g: np.ones_like(g))
    try:
        assert "no finite path at t = 1" in _texts(fig.axes[1])
        assert "3 of 3 paths non-finite" in _texts(fig.axes[1])
    finally:
        plt.close(fig)


def test_plot_of_stored_paths_that_all_blow_up_draws_them_until_they_do():
    import matplotlib.pyplot as plt

    paths = np.array([[[1.0], [2.0]], [[5.0], [7.0]], [[np.inf], [np.nan]]])
    fig = _result(paths[-1], paths).plot()
    try:
        assert "no finite path" in _texts(fig.axes[1])
        mean_line = [line for line in fig.axes[0].lines if line.get_label() == "mean"][0]
        # The band is over the finite values: mean 1.5, 6, then none (NaN, not inf).
        ys = np.asarray(mean_line.get_ydata(), dtype=float)
        assert ys[:2].tolist() == [1.5, 6.0] and np.isnan(ys[2])
    finally:
        plt.close(fig)
