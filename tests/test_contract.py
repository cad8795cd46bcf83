"""The stream contract and the output modes of simulate()."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastsde as fs

import stats_checks as sc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_same_seed_same_paths_other_seed_other_paths(ou):
    a = fs.simulate(ou, 1.0, (0, 1), 50, 1000, device="cpu", seed=3)
    b = fs.simulate(ou, 1.0, (0, 1), 50, 1000, device="cpu", seed=3)
    c = fs.simulate(ou, 1.0, (0, 1), 50, 1000, device="cpu", seed=4)
    assert np.array_equal(a.x, b.x)
    assert not np.any(a.x == c.x)


def test_seed_sequence_equals_int_seed(ou):
    a = fs.simulate(ou, 1.0, (0, 1), 20, 100, device="cpu", seed=8)
    b = fs.simulate(ou, 1.0, (0, 1), 20, 100, device="cpu", seed=np.random.SeedSequence(8))
    assert np.array_equal(a.x, b.x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_equal_run_with_first_path(ou, dtype):
    kw = dict(device="cpu", seed=21, dtype=dtype, save_at=5)
    full = fs.simulate(ou, fs.Normal(0.5, 2.0), (0, 1), 50, 3000, **kw)
    for a, b in ((0, 7), (513, 1600), (2999, 3000)):
        part = fs.simulate(ou, fs.Normal(0.5, 2.0), (0, 1), 50, b - a, first_path=a, **kw)
        assert np.array_equal(full.x[a:b], part.x)
        assert np.array_equal(full.paths[:, a:b], part.paths)


def test_result_does_not_depend_on_thread_count():
    script = textwrap.dedent("""
        import hashlib, numpy as np, fastsde as fs
        r = fs.simulate(fs.OU(1.0, 0.5), fs.Normal(0, 1), (0, 1), 100, 5000, device="cpu",
                        seed=1, stats=True, save_at=4, keep_paths=True)
        h = hashlib.sha256()
        for a in (r.x, r.paths, r.mean, r.var):
            h.update(np.ascontiguousarray(a).tobytes())
        print(h.hexdigest())
    """)
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, PYTHONPATH=ROOT)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


def test_stats_equal_stats_of_stored_paths(ou):
    r = fs.simulate(ou, fs.Normal(0, 1), (0, 1), 40, 4097, device="cpu", seed=2, save_at=8,
                    stats=True, keep_paths=True)
    np.testing.assert_allclose(r.mean, r.paths.mean(axis=1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.var, r.paths.var(axis=1, ddof=1), rtol=1e-12)
    assert np.all(r.count == 4097)


def test_time_grid_and_save_times(ou):
    r = fs.simulate(ou, 1.0, (0.1, 0.7), 30, 10, device="cpu", save_at=[0.1, 0.3, 0.7])
    assert r.t[-1] == 0.7 and r.t[0] == 0.1
    assert r.paths.shape == (3, 10, 1)
    assert np.array_equal(r.paths[-1], r.x)
    assert np.all(r.paths[0] == 1.0)
    r2 = fs.simulate(ou, 1.0, (0.1, 0.7), 30, 10, device="cpu", save_at=3)
    np.testing.assert_allclose(r2.t, [0.1, 0.3, 0.5, 0.7], rtol=1e-15)


def test_per_path_params_equal_separate_runs(ou):
    params = np.array([[0.5, 0.1], [1.0, 0.5], [2.0, 1.0], [0.0, 0.3]])
    sweep = fs.simulate(ou, 1.0, (0, 1), 50, 4, device="cpu", seed=6, params=params)
    for i, p in enumerate(params):
        one = fs.simulate(ou, 1.0, (0, 1), 50, 1, device="cpu", seed=6, params=p, first_path=i)
        assert np.array_equal(sweep.x[i], one.x[0])


def test_per_path_x0_rows(ou):
    x0 = np.linspace(-1, 1, 50).reshape(50, 1)
    r = fs.simulate(ou, x0, (0, 1), 10, 50, device="cpu", save_at=[0.0])
    assert np.array_equal(r.paths[0], x0)
    r1 = fs.simulate(ou, x0[:, 0], (0, 1), 10, 50, device="cpu", save_at=[0.0])
    assert np.array_equal(r1.paths[0], x0)


def test_normal_initial_state_drawn_in_kernel():
    model = fs.BrownianMotion(sigma=1.0, dim=3)
    r = fs.simulate(model, fs.Normal([1.0, -2.0, 0.0], [0.5, 2.0, 1.0]), (0, 1), 4, 50_000,
                    device="cpu", seed=77, save_at=[0.0])
    x = r.paths[0]
    fails = []
    for j, (m, s) in enumerate(((1.0, 0.5), (-2.0, 2.0), (0.0, 1.0))):
        fails += sc.normal_sample(x[:, j], mean=m, var=s * s, label=f"x0[{j}]")
    fails += sc.uncorrelated(x[:, 0], x[:, 1], "x0 components")
    assert not fails, "\n".join(fails)


def scalar_drift(t, x, p, out):
    out[0] = 0.0
    out[1] = 0.0


def scalar_diffusion(t, x, p, out):
    out[0] = p[0]
    out[1] = -p[1]


def general_diffusion(t, x, p, out):
    out[0, 0] = 1.0
    out[0, 1] = 0.0
    out[0, 2] = 0.5
    out[1, 0] = 0.3
    out[1, 1] = 2.0
    out[1, 2] = 0.0


def test_scalar_noise_drives_all_components_with_one_wiener_process():
    model = fs.SDE(scalar_drift, scalar_diffusion, dim=2, noise="scalar", params=(1.0, 2.0))
    r = fs.simulate(model, 0.0, (0, 2), 20, 20_000, device="cpu", seed=4)
    assert np.allclose(r.x[:, 1], -2.0 * r.x[:, 0], rtol=1e-12, atol=1e-12)
    fails = sc.normal_sample(r.x[:, 0], var=2.0, label="scalar-noise X_2")
    assert not fails, "\n".join(fails)


def test_general_noise_covariance_is_g_g_transpose_t():
    model = fs.SDE(scalar_drift, general_diffusion, dim=2, noise="general", noise_dim=3)
    t1 = 1.5
    r = fs.simulate(model, 0.0, (0, t1), 15, 100_000, device="cpu", seed=5)
    g = np.array([[1.0, 0.0, 0.5], [0.3, 2.0, 0.0]])
    cov = g @ g.T * t1
    fails = []
    for j in range(2):
        fails += sc.normal_sample(r.x[:, j], var=cov[j, j], label=f"X[{j}]")
    n = r.x.shape[0]
    c01 = np.mean(r.x[:, 0] * r.x[:, 1])
    se = math.sqrt((cov[0, 0] * cov[1, 1] + cov[0, 1] ** 2) / n)
    fails += sc.close("cov(X0, X1)", c01, cov[0, 1], se)
    assert not fails, "\n".join(fails)


def test_float32_and_float64_paths_agree(ou):
    a = fs.simulate(ou, 1.0, (0, 1), 100, 2000, device="cpu", seed=1, dtype="float32")
    b = fs.simulate(ou, 1.0, (0, 1), 100, 2000, device="cpu", seed=1, dtype="float64")
    assert a.x.dtype == np.float32 and b.x.dtype == np.float64
    # The float64 normal refines the float32 one (same top 23 bits of each uniform), so
    # paths agree to float32 rounding, except where a radius uniform is tiny (a tail
    # normal, |z| > ~3.5), where the 23-bit uniform is coarse: there z differs by up to
    # ~5e-3 (test_philox), i.e. up to sigma sqrt(h) 5e-3 = 2.5e-4 in one step here.
    diff = np.abs(a.x.astype(np.float64) - b.x)[:, 0]
    assert np.quantile(diff, 0.99) < 1e-5, np.quantile(diff, 0.99)
    assert diff.max() < 1e-3, diff.max()


def blowup_drift(t, x, p, out):
    out[0] = x[0] * x[0]


def test_nonfinite_paths_are_counted():
    model = fs.ODE(blowup_drift, dim=1)
    x0 = np.array([1.0, -1.0, 2.0, 0.0, -3.0]).reshape(5, 1)
    r = fs.simulate(model, x0, (0, 3), 3000, 5, method="euler", device="cpu", stats=True)
    # x' = x^2 blows up before t = 3 from x0 = 1 and 2; stays finite from 0, -1, -3
    assert r.n_nonfinite == 2
    assert r.count[-1, 0] == 3
    np.testing.assert_allclose(r.mean[-1, 0], np.mean(r.x[[1, 3, 4], 0]))


def test_result_metadata(ou):
    r = fs.simulate(ou, 1.0, (0, 1), 10, 100, device="cpu", seed=3, dtype="float32")
    assert r.method == "euler_maruyama" and r.device == "cpu" and r.dtype == "float32"
    assert r.rng_version == fs.RNG_VERSION and r.n_steps == 10 and r.seed == 3
    assert r.elapsed_s > 0 and r.path_steps_per_s > 0
    assert r.paths is None and r.mean is None and r.x.shape == (100, 1)
    assert "OU" in repr(r)


def test_to_xarray(ou):
    pytest.importorskip("xarray")
    r = fs.simulate(ou, 1.0, (0, 1), 10, 100, device="cpu", save_at=2, first_path=50)
    ds = r.to_xarray()
    assert ds["paths"].dims == ("time", "path", "component")
    assert int(ds.path[0]) == 50 and ds.attrs["rng_version"] == fs.RNG_VERSION


def test_sliced_run_equals_one_call(ou, monkeypatch):
    """Long runs are cut into chunk-aligned kernel calls; the result must not change."""
    import fastsde.api as api

    kw = dict(device="cpu", seed=12, save_at=4, stats=True, keep_paths=True)
    one = fs.simulate(ou, fs.Normal(0, 1), (0, 1), 20, 5000, **kw)
    monkeypatch.setattr(api, "SLICE_PATH_STEPS", 20 * api.CHUNK_PATHS)  # one chunk a call
    sliced = fs.simulate(ou, fs.Normal(0, 1), (0, 1), 20, 5000, progress=False, **kw)
    per_path = fs.simulate(ou, np.linspace(0, 1, 5000), (0, 1), 20, 5000,
                           params=np.tile([1.0, 0.5], (5000, 1)), progress=False, **kw)
    for name in ("x", "paths", "mean", "var", "count"):
        assert np.array_equal(getattr(one, name), getattr(sliced, name)), name
    assert per_path.x.shape == (5000, 1) and np.all(per_path.count == 5000)


def test_keyboard_interrupt_leaves_the_interpreter_usable():
    script = textwrap.dedent("""
        import os, signal, threading, time
        # A process started in the background by a non-interactive shell inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler; an interactive
        # interpreter has it, so install it as such a user would have it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import fastsde as fs
        m = fs.OU(1.0, 0.5)
        fs.simulate(m, 0.0, (0, 1), 10, 100, device="cpu")   # compile first
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        t = time.perf_counter()
        try:
            # 3 x 10^10 path-steps: a minute or more, so finishing first is impossible,
            # and a missed interrupt fails the test in minutes, not at the timeout.
            fs.simulate(m, 0.0, (0, 1), 1000, 3 * 10**7, device="cpu", stats=True,
                        progress=False)
            print("finished?!")
        except KeyboardInterrupt:
            print("interrupted after %.1f s" % (time.perf_counter() - t))
        r = fs.simulate(m, 0.0, (0, 1), 10, 100, device="cpu")
        print("usable", r.x.shape)
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("interrupted after"), out.stdout
    assert float(lines[0].split()[2]) < 30.0, out.stdout
    assert "usable (100, 1)" in out.stdout


def test_plot(ou, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    r = fs.simulate(ou, 1.0, (0, 1), 20, 200, device="cpu", save_at=10)
    fig = r.plot(exact_density=lambda x: np.exp(-x**2))
    fig.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="component"):
        r.plot(component=3)
