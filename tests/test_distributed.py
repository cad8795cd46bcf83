"""fastsde.distributed: a Dask run equals the single-process run, whatever the task size,
and survives a worker process killed mid-run.

One LocalCluster of 2 worker processes serves the module, so each worker compiles the OU
kernel once, and the OU kernel with the observables and stopping rule below (MC) once: the
Monte Carlo tests all share that one kernel (histograms and antithetic pairs are run-time
arguments). The worker-kill test comes last: the restarted worker compiles again.
"""

import inspect
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

import fastsde as fs
from fastsde import cli

distributed = pytest.importorskip("distributed")
fd = pytest.importorskip("fastsde.distributed")

# Statistics equal the single-process ones to float64 rounding: they differ only by the
# order of a few float64 additions in the pairwise merge and by M2 = var * (count - 1).
RTOL = 1e-12
N_STEPS = 50
T_SPAN = (0.0, 1.0)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def ou_model():
    # theta = 1, sigma = 0.5: the CLI's default OU, so the CLI test reuses the kernel.
    return fs.OU(theta=1.0, sigma=0.5)


def single(model, n_paths, **kw):
    kw.setdefault("stats", True)
    return fs.simulate(model, 1.0 if "x0" not in kw else kw.pop("x0"), T_SPAN, N_STEPS,
                       n_paths, device="cpu", progress=False, **kw)


def dask_run(client, model, n_paths, **kw):
    x0 = kw.pop("x0", 1.0)
    return fd.simulate(model, x0, T_SPAN, N_STEPS, n_paths, device="cpu", client=client,
                       progress=False, **kw)


def assert_same(res, ref, n_paths, x=True):
    if x:
        assert res.x.dtype == ref.x.dtype
        assert np.array_equal(res.x, ref.x), "final states differ from the single process"
    if ref.mean is not None:
        assert np.array_equal(res.count, ref.count)
        assert res.count.max() == n_paths  # every path counted once
        np.testing.assert_allclose(res.mean, ref.mean, rtol=RTOL, atol=0)
        np.testing.assert_allclose(res.var, ref.var, rtol=RTOL, atol=0)
    assert res.n_nonfinite == ref.n_nonfinite
    assert np.array_equal(res.t, ref.t)
    assert res.n_paths == n_paths and res.method == ref.method and res.seed == ref.seed


def obs_square(t, x, p):
    return x[0] * x[0]


def obs_high(t, x, p):
    return 1.0 if x[0] > 1.0 else 0.0


def above_level(t, x, p):
    """Stop the first time X > 1.4 (from x0 = 1: a fair share of paths stop by t = 1)."""
    return x[0] - 1.4


# One kernel for every Monte Carlo test: (OU, these observables, this stopping rule). The
# histogram's range leaves values below and above it, so below / above are checked too.
MC = dict(observables={"sq": obs_square, "high": obs_high}, stop_when=above_level,
          histogram=dict(bins=16, range=(0.0, 1.2)))


def assert_same_mc(res, ref, n_paths, x=True):
    """assert_same, plus observables, hitting times and histogram: counts exactly,
    moments and estimates to float64 rounding, stored hitting times bit for bit."""
    assert_same(res, ref, n_paths, x=x and ref.x is not None)
    assert res.antithetic == ref.antithetic
    assert res.obs_names == ref.obs_names
    if ref.obs_names:
        assert res.obs_count.dtype == ref.obs_count.dtype
        assert np.array_equal(res.obs_count, ref.obs_count)
        np.testing.assert_allclose(res.obs_mean, ref.obs_mean, rtol=RTOL, atol=0)
        np.testing.assert_allclose(res.obs_var, ref.obs_var, rtol=RTOL, atol=0)
        for name in ref.obs_names:
            for t in ref.t:
                got, want = res.estimate(name, t), ref.estimate(name, t)
                assert got.n == want.n
                np.testing.assert_allclose([got.value, got.se], [want.value, want.se],
                                           rtol=RTOL, atol=0)
    assert (res.hit_count is None) == (ref.hit_count is None)
    if ref.hit_count is not None:
        assert res.hit_count == ref.hit_count
        np.testing.assert_allclose([res.hit_mean, res.hit_var], [ref.hit_mean, ref.hit_var],
                                   rtol=RTOL, atol=0)
        if not ref.antithetic:
            for name in ("hit_time", "hit_probability"):
                got, want = res.estimate(name), ref.estimate(name)
                assert got.n == want.n
                np.testing.assert_allclose([got.value, got.se], [want.value, want.se],
                                           rtol=RTOL, atol=0)
    if x and ref.hit_time is not None:
        assert np.array_equal(res.hit_time, ref.hit_time), "hitting times differ"
    assert (res.histogram is None) == (ref.histogram is None)
    if ref.histogram is not None:
        for field in ("edges", "counts", "below", "above"):
            got, want = getattr(res.histogram, field), getattr(ref.histogram, field)
            assert got.dtype == want.dtype and np.array_equal(got, want), field


@pytest.mark.parametrize("paths_per_task", [512, 1536, 4096, 10**6, None])
def test_identical_to_single_process(client, ou_model, paths_per_task):
    """5000 paths (not a multiple of 512: the last task is short), 6 save times."""
    n = 5000
    ref = single(ou_model, n, save_at=5, seed=3)
    res = dask_run(client, ou_model, n, save_at=5, seed=3, keep_x=True,
                   paths_per_task=paths_per_task)
    assert_same(res, ref, n)
    expected_tasks = -(-n // min(paths_per_task, n)) if paths_per_task else None
    if expected_tasks:
        assert res.extra["n_tasks"] == expected_tasks
    assert res.extra["n_workers"] == 2 and res.device == "cpu"


def test_per_path_x0_params_and_saved_paths(client, ou_model):
    """Per-path rows are cut to each task's slice; saved paths come back in order."""
    n = 3000
    rng = np.random.default_rng(7)
    x0 = rng.normal(size=n)
    params = np.column_stack([rng.uniform(0.5, 2.0, n), np.full(n, 0.5)])
    ref = single(ou_model, n, x0=x0, params=params, save_at=10, keep_paths=True, seed=11)
    res = dask_run(client, ou_model, n, x0=x0, params=params, save_at=10, keep_paths=True,
                   seed=11, keep_x=True, paths_per_task=1024)
    assert_same(res, ref, n)
    assert np.array_equal(res.paths, ref.paths)


def test_normal_x0_fresh_seed_and_first_path(client, ou_model):
    """seed=None is drawn once on the client; first_path shifts every task alike."""
    n = 2500
    res = dask_run(client, ou_model, n, x0=fs.Normal(0.5, 2.0), seed=None, first_path=10**9,
                   keep_x=True, paths_per_task=512)
    assert isinstance(res.seed, np.random.SeedSequence)
    ref = single(ou_model, n, x0=fs.Normal(0.5, 2.0), seed=res.seed, first_path=10**9)
    assert_same(res, ref, n)
    assert res.first_path == 10**9


def test_statistics_only_and_x_only(client, ou_model):
    n = 2048
    ref = single(ou_model, n, seed=5)
    res = dask_run(client, ou_model, n, seed=5, paths_per_task=512)
    assert res.x is None and res.n_paths == n and res.dim == 1
    assert_same(res, ref, n, x=False)
    res = dask_run(client, ou_model, n, seed=5, stats=False, keep_x=True, paths_per_task=1024)
    assert res.mean is None and np.array_equal(res.x, ref.x)


@pytest.mark.parametrize("method,increments", [("sra1", "gaussian"),
                                               ("sra1", "three_point"),
                                               ("euler_maruyama", "two_point")])
def test_methods_and_increments_identical(client, ou_model, method, increments):
    """A scheme with extra normals and the discrete increments: the same bits from the
    tasks as from one process (the streams follow the global path index)."""
    n = 1500
    ref = single(ou_model, n, method=method, increments=increments, save_at=2, seed=8)
    res = dask_run(client, ou_model, n, method=method, increments=increments, save_at=2,
                   seed=8, keep_x=True, paths_per_task=512)
    assert_same(res, ref, n)
    assert res.method == method and res.increments == increments


def test_signature_takes_every_simulate_argument():
    """Every public argument of fastsde.simulate, in its order and with its default (but
    stats=True and keep_x=False, the documented distributed defaults)."""
    one = {n: p for n, p in inspect.signature(fs.simulate).parameters.items()
           if not n.startswith("_")}
    dist = inspect.signature(fd.simulate).parameters
    assert [n for n in dist if n in one] == list(one)
    for name, param in one.items():
        expected = {"stats": True, "keep_x": False}.get(name, param.default)
        assert dist[name].default == expected, name
    assert {"client", "paths_per_task"} <= set(dist)


@pytest.mark.parametrize("paths_per_task,used", [(1, 512), (513, 1024), (7000, 7168),
                                                 (None, None)])
def test_monte_carlo_outputs_identical_any_task_size(client, ou_model, paths_per_task, used):
    """Observables, stop_when and a histogram, 9000 paths: any paths_per_task >= 1 is
    rounded up to the 512-path chunk grid and gives the single-process result."""
    n = 9000
    ref = single(ou_model, n, save_at=5, seed=21, **MC)
    res = dask_run(client, ou_model, n, save_at=5, seed=21, keep_x=True,
                   paths_per_task=paths_per_task, **MC)
    assert_same_mc(res, ref, n)
    assert 0 < ref.hit_count < n and np.isinf(ref.hit_time).any()
    if used is not None:
        assert res.extra["paths_per_task"] == used
        assert res.extra["n_tasks"] == -(-n // used)


def test_histogram_counts_exact(client, ou_model):
    """In-range counts, below and above are the single-process integers, and every path
    is counted once at every save time."""
    n = 5000
    ref = single(ou_model, n, save_at=5, seed=8, **MC)
    res = dask_run(client, ou_model, n, save_at=5, seed=8, paths_per_task=1024, **MC)
    h = res.histogram
    assert res.x is None and res.hit_time is None
    assert h.counts.shape == (6, 1, 16) and h.counts.dtype == np.int64
    assert np.array_equal(h.counts.sum(axis=-1) + h.below + h.above, np.full((6, 1), n))
    assert h.below[-1].sum() > 0 and h.above.sum() > 0  # both tails are exercised
    assert_same_mc(res, ref, n, x=False)


def test_antithetic_observables_identical(client, ou_model):
    """antithetic=True: tasks start on the chunk grid (even paths), observables are
    accumulated per pair, final states and hitting times are bit-identical."""
    n = 4096
    ref = single(ou_model, n, save_at=5, seed=13, antithetic=True, **MC)
    res = dask_run(client, ou_model, n, save_at=5, seed=13, antithetic=True, keep_x=True,
                   paths_per_task=1000, **MC)
    assert res.antithetic and res.extra["n_tasks"] == 4
    assert np.array_equal(res.obs_count[-1], np.full(2, n // 2))  # pairs, not paths
    assert_same_mc(res, ref, n)
    with pytest.raises(ValueError, match="antithetic"):
        res.estimate("hit_time")


def test_statistics_only_streaming(client, ou_model):
    """keep_x=False, stats=False: only observables, hitting statistics and histogram come
    back, equal to a single-process streaming run with the same arguments."""
    n = 6000
    kw = dict(save_at=5, seed=17, stats=False, keep_paths=False, keep_x=False, **MC)
    ref = single(ou_model, n, **kw)
    res = dask_run(client, ou_model, n, paths_per_task=2048, **kw)
    assert ref.x is None and ref.hit_time is None
    assert res.x is None and res.hit_time is None and res.paths is None and res.mean is None
    assert res.n_paths == n and res.dim == 1
    assert_same_mc(res, ref, n, x=False)


def late_oob_drift(t, x, p, out):
    i = 0 if x[0] < 0.5 else 3
    out[i] = 1.0


def test_debug_passes_through(client):
    """debug=True reaches the workers: a write out of bounds after t0 (so the client's
    pre-flight at t0 cannot see it) is a ModelError from the worker's bounds checking."""
    model = fs.ODE(late_oob_drift, dim=1, name="late_oob_dask")
    with pytest.raises(fs.ModelError, match="late_oob_dask.*found by debug=True"):
        fd.simulate(model, 0.0, T_SPAN, 20, 512, method="euler", device="cpu", debug=True,
                    client=client, progress=False)


def _blowing_up_params(n):
    """OU params with theta = 1e8 on paths 7, 1007, 2007, ... (Euler-Maruyama with
    h = 0.02 overflows there), theta = 1 elsewhere."""
    params = np.tile([1.0, 0.5], (n, 1))
    params[7::1000, 0] = 1e8
    return params


@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_on_nonfinite_over_all_tasks(client, ou_model, policy):
    """Non-finite paths in several tasks are counted over all of them; "raise" raises
    once with the merged result, "warn" warns once."""
    n = 4096
    params = _blowing_up_params(n)
    ref = single(ou_model, n, params=params, seed=6)
    assert ref.n_nonfinite == 5
    kw = dict(params=params, seed=6, stats=True, keep_x=True, paths_per_task=512,
              on_nonfinite=policy)
    if policy == "raise":
        with pytest.raises(fs.NonFiniteError, match="5 of 4096 paths") as info:
            dask_run(client, ou_model, n, **kw)
        res = info.value.result
    else:
        with pytest.warns(RuntimeWarning, match="5 of 4096 paths") as record:
            res = dask_run(client, ou_model, n, **kw)
        assert len([w for w in record if "finite" in str(w.message)]) == 1
    assert res.extra["n_tasks"] == 8 and res.n_nonfinite == 5
    assert np.array_equal(res.x, ref.x, equal_nan=True)
    assert np.array_equal(res.count, ref.count) and res.count.max() == n - 5
    np.testing.assert_allclose(res.mean, ref.mean, rtol=RTOL, atol=0)
    np.testing.assert_allclose(res.var, ref.var, rtol=RTOL, atol=0)


def test_merge_detects_a_lost_task(client, ou_model):
    """The equality check is not vacuous: dropping one task's paths (a run of n - 512
    paths) changes count and the statistics beyond the tolerance."""
    n = 4096
    ref = single(ou_model, n, seed=3)
    short = dask_run(client, ou_model, n - 512, seed=3, paths_per_task=512)
    with pytest.raises(AssertionError):
        assert_same(short, ref, n, x=False)
    assert not np.allclose(short.mean, ref.mean, rtol=RTOL, atol=0)
    assert not np.allclose(short.var, ref.var, rtol=RTOL, atol=0)


def test_user_function_error_surfaces(client):
    """A drift that raises inside the compiled kernel: the client gets the same exception
    type and message, and the other tasks are cancelled."""
    model = fs.SDE(raising_drift, unit_diffusion, dim=1, name="raising")
    with pytest.raises(ValueError, match="raising_drift: state left the model's domain"):
        fd.simulate(model, 0.0, T_SPAN, 10, 2048, device="cpu", client=client,
                    paths_per_task=512, progress=False)
    deadline = time.time() + 10
    while time.time() < deadline and _fastsde_tasks(client):
        time.sleep(0.05)
    assert not _fastsde_tasks(client), "tasks left on the scheduler after the error"


def raising_drift(t, x, p, out):
    if t > 0.5:
        raise ValueError("raising_drift: state left the model's domain")
    out[0] = -x[0]


def unit_diffusion(t, x, p, out):
    out[0] = 1.0


def _scheduler_tasks(dask_scheduler):
    return {str(k): ts.state for k, ts in dask_scheduler.tasks.items()
            if str(k).startswith("fastsde-")}


def _times_started(dask_scheduler, keys):
    """How often each key went to 'processing' (on some worker), from the scheduler's log."""
    counts = dict.fromkeys(keys, 0)
    for record in dask_scheduler.transition_log:
        key, finish = str(record[0]), record[2]
        if key in counts and finish == "processing":
            counts[key] += 1
    return counts


def _fastsde_tasks(client):
    return client.run_on_scheduler(_scheduler_tasks)


@pytest.mark.parametrize("kw,exc,words", [
    (dict(client="tcp://127.0.0.1:8786"), TypeError, "client must be a distributed.Client"),
    (dict(client=42), TypeError, "client must be a distributed.Client"),
    (dict(paths_per_task=0), ValueError, "paths_per_task.*got 0"),
    (dict(paths_per_task=-512), ValueError, "paths_per_task.*got -512"),
    (dict(paths_per_task=2.5), TypeError, "paths_per_task.*2.5"),
    (dict(paths_per_task=True), TypeError, "paths_per_task.*True"),
    (dict(paths_per_task="512"), TypeError, "paths_per_task.*'512'"),
    (dict(keep_x="yes"), TypeError, "keep_x"),
    (dict(progress="no"), TypeError, "progress"),
    (dict(debug="yes"), TypeError, "debug"),
    (dict(on_nonfinite="ignore"), ValueError, "on_nonfinite"),
    (dict(observables={"hit_time": obs_square}), ValueError, "reserved"),
    (dict(observables={"a": lambda t, x: x[0]}), fs.ModelError, "three arguments"),
    (dict(stop_when="x > 1"), TypeError, "stop_when"),
    (dict(histogram=dict(bins=0, range=(0, 1))), ValueError, "histogram"),
    (dict(antithetic=True, first_path=1), ValueError, "antithetic"),
    (dict(antithetic=True, n_paths=4001), ValueError, "antithetic"),
    (dict(antithetic="yes"), TypeError, "antithetic"),
    (dict(n_paths=0), ValueError, "n_paths"),
    (dict(method="heun_typo"), ValueError, "heun_typo"),
    (dict(save_at=7), ValueError, "save_at"),
    (dict(stats=False), ValueError, "would return nothing"),
])
def test_bad_arguments_raise_before_any_cluster(monkeypatch, ou_model, kw, exc, words):
    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started before the arguments were checked")

    monkeypatch.setattr(fd, "connect", no_cluster)
    args = dict(n_paths=4000)
    args.update(kw)
    n_paths = args.pop("n_paths")
    with pytest.raises(exc, match=words):
        fd.simulate(ou_model, 1.0, T_SPAN, N_STEPS, n_paths, device="cpu", **args)


def test_closed_client_is_refused(client, ou_model):
    c = distributed.Client(client.scheduler.address)
    c.close()
    with pytest.raises(ValueError, match="client must be running"):
        fd.simulate(ou_model, 1.0, T_SPAN, N_STEPS, 100, device="cpu", client=c)


def test_output_too_large_before_any_task(client, ou_model):
    with pytest.raises(fs.OutputTooLargeError, match="keep_x"):
        dask_run(client, ou_model, 10**12, keep_x=True)
    assert not _fastsde_tasks(client)


def test_connect_rejects_bad_address():
    with pytest.raises(ValueError, match="address"):
        fd.connect("not an address")
    with pytest.raises(TypeError, match="address"):
        fd.connect(None)


def test_cli_dask_address(client, capsys):
    """`fastsde run --dask tcp://...` prints the merged statistics, equal to a plain run."""
    argv = ["run", "--model", "ou", "--paths", "3000", "--steps", "50", "--json",
            "--device", "cpu", "--stats", "--save-at", "5", "--seed", "2"]
    assert cli.main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    address = client.scheduler.address
    assert cli.main(argv + ["--dask", address, "--paths-per-task", "1024"]) == 0
    dist = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(dist["mean"], plain["mean"], rtol=RTOL)
    np.testing.assert_allclose(dist["var"], plain["var"], rtol=RTOL)
    # The plain run's final mean comes from x; the Dask run's from the merged statistics.
    np.testing.assert_allclose(dist["final_mean"], plain["final_mean"], rtol=1e-10)
    np.testing.assert_allclose(dist["final_var"], plain["final_var"], rtol=1e-10)
    assert dist["n_paths"] == 3000


def test_cli_errors_are_one_line(capsys):
    assert cli.main(["run", "--dask", "nowhere", "--paths", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastsde run: error:") and "address" in err and "\n" not in err
    # OutputTooLargeError (a FastSDEError) from the plain path: 10^11 final states.
    assert cli.main(["run", "--paths", str(10**11), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastsde run: error:") and "GiB" in err and "\n" not in err


def test_embedded_local_cluster(ou_model):
    """client=None starts a LocalCluster (one worker process per core) and closes it."""
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    n = 2048
    res = fd.simulate(ou_model, 1.0, T_SPAN, N_STEPS, n, device="cpu", seed=4, keep_x=True,
                      progress=False)
    assert res.extra["n_workers"] == fd._usable_cpus()
    assert_same(res, single(ou_model, n, seed=4), n)
    deadline = time.time() + 20
    while time.time() < deadline:
        left = {p.pid for p in psutil.Process().children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE} - before
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"worker processes left running: {left}"


def test_worker_killed_mid_run(client, ou_model):
    """SIGKILL a worker process while it runs a task: Dask re-runs its tasks elsewhere and
    the result is the single-process one, every path counted once: final states and
    hitting times bit for bit, histogram and hit counts exactly, statistics, observables
    and hitting-time estimates to float64 rounding."""
    n, per = 16 * 4096, 4096
    steps = 1000  # ~0.2 s per task on one thread, so the kill lands mid-run
    ref = fs.simulate(ou_model, 1.0, T_SPAN, steps, n, device="cpu", seed=9, stats=True,
                      save_at=10, progress=False, **MC)
    pids = client.run(os.getpid)
    out = {}

    def target():
        try:
            out["res"] = fd.simulate(ou_model, 1.0, T_SPAN, steps, n, device="cpu", seed=9,
                                     save_at=10, keep_x=True, paths_per_task=per,
                                     client=client, progress=False, **MC)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["exc"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    victim = killed_keys = None
    deadline = time.time() + 120
    while time.time() < deadline and thread.is_alive():
        tasks = _fastsde_tasks(client)
        processing = {w: [k for k in keys if str(k).startswith("fastsde-")]
                      for w, keys in client.processing().items()}
        busy = [w for w, keys in processing.items() if keys and w in pids]
        # Some tasks done and released (fewer than 16 known), a worker busy with one.
        if 0 < len(tasks) < 16 and busy:
            victim, killed_keys = busy[0], processing[busy[0]]
            os.kill(pids[victim], signal.SIGKILL)
            break
        time.sleep(0.02)
    thread.join(180)
    assert victim is not None, "the run ended before a worker could be killed"
    assert not thread.is_alive()
    if "exc" in out:
        raise out["exc"]
    res = out["res"]
    assert pids[victim] not in client.run(os.getpid).values(), "the worker was not killed"
    assert killed_keys, "the killed worker held no task"
    started = client.run_on_scheduler(_times_started, keys=[str(k) for k in killed_keys])
    assert all(c >= 2 for c in started.values()), f"killed tasks not re-run: {started}"
    assert res.extra["n_tasks"] == 16
    assert_same_mc(res, ref, n)
    assert np.array_equal(res.count, np.full((11, 1), n))
    assert 0 < res.hit_count < n
    assert np.array_equal(res.histogram.counts.sum(axis=-1) + res.histogram.below
                          + res.histogram.above, np.full((11, 1), n))


def mlmc_call(t, x, p):
    return max(x[0] - 1.0, 0.0)


def mlmc_lookback(t, x, p):
    return x[0] - x[1]  # S_T - min S


def test_mlmc_identical_to_single_process(client):
    """fastsde.distributed.mlmc: every level batch cut into tasks on the chunk grid; the
    value, the paths per level and the cost are those of fs.mlmc, bit for bit."""
    gbm = fs.GBM(mu=0.05, sigma=0.2)
    kw = dict(method="milstein", n0=2, seed=4, progress=False)
    ref = fs.mlmc(gbm, 1.0, T_SPAN, mlmc_call, 0.002, **kw)
    res = fd.mlmc(gbm, 1.0, T_SPAN, mlmc_call, 0.002, client=client, paths_per_task=1000,
                  **kw)
    assert res.value == ref.value and res.se == ref.se and res.cost == ref.cost
    assert [lv.n_paths for lv in res.levels] == [lv.n_paths for lv in ref.levels]
    assert res.extra["n_tasks"] > len(res.levels)
    # A lookback payoff: the running minimum travels with the level's spec to the workers.
    ref = fs.mlmc(gbm, 1.0, T_SPAN, mlmc_lookback, 0.005, running_min=0, **kw)
    res = fd.mlmc(gbm, 1.0, T_SPAN, mlmc_lookback, 0.005, running_min=0, client=client,
                  paths_per_task=1000, **kw)
    assert res.value == ref.value and res.cost == ref.cost
    assert set(inspect.signature(fs.mlmc).parameters) <= set(
        inspect.signature(fd.mlmc).parameters)
