"""How kernels are compiled: what each new model or method compiles, what it shares with
the kernels before it, and that the shared pieces keep the hot loop's machine code.

A new model's first result is mostly compile time (bench/first_result.py measures it); the
CPU driver keeps it down by compiling once what does not depend on the model (the RNG's
lane loops, the save point, the launcher that maps chunks over threads) and loading it from
Numba's disk cache afterwards. These tests count Numba's compile events, so a change that
makes every kernel compile a shared piece again fails here, not only in a benchmark.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap

import numba
import numpy as np
import pytest

import fastsde as fs
from fastsde import methods
from fastsde.kernels import cpu, layout

from compile_events import fastsde_compiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json
import sys
import numpy as np
import fastsde as fs
from compile_events import fastsde_compiles


def osc(t, x, p, out):
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1]


def duffing(t, x, p, out):
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1] - 0.1 * x[0] * x[0] * x[0]


def duffing_wide(t, x, p, out):  # a fourth parameter: another parameter width
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1] - p[3] * x[0] * x[0] * x[0]


def noise(t, x, p, out):
    out[0] = 0.0
    out[1] = p[2]


def osc_relaxed(t, x, p, out):  # a third component: another state width
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1]
    out[2] = x[0] - x[2]


def noise3(t, x, p, out):
    out[0] = 0.0
    out[1] = p[2]
    out[2] = 0.1


def energy(t, x, p):
    return 0.5 * (x[1] * x[1] + p[0] * x[0] * x[0])


def run(drift, method, observe, normal_x0, per_path=False):
    params = (1.0, 0.1, 0.3, 0.1) if drift is duffing_wide else (1.0, 0.1, 0.3)
    dim = 3 if drift is osc_relaxed else 2
    model = fs.SDE(drift, noise3 if dim == 3 else noise, dim=dim, noise="additive",
                   params=params)
    extra = dict(observables={"energy": energy}, stats=True) if observe else {}
    x0 = [1.0, 0.0, 0.5][:dim]
    if normal_x0:
        x0 = fs.Normal(x0, [0.1, 0.2, 0.3][:dim])
    if per_path:  # a row of parameters per path
        extra["params"] = np.column_stack([np.linspace(0.5, 1.5, 300),
                                           np.full((300, len(params) - 1), params[1:])])
    res = fs.simulate(model, x0, (0.0, 1.0), 16, 300, method=method, seed=3,
                      device="cpu", progress=False, **extra)
    return res.x


if KERNEL_FIRST:
    # The driver's own entry point before anything else of fastsde's has run (before
    # Numba's threading layer has started), on a cache that holds the kernel.
    from fastsde import methods
    from fastsde.kernels import cpu
    model = fs.SDE(osc, noise, dim=2, noise="additive", params=(1.0, 0.1, 0.3))
    cpu.get_kernel(model, methods.METHODS["euler_maruyama"], np.float64)

def cache_files():
    import os
    top = os.environ["NUMBA_CACHE_DIR"]
    return {os.path.relpath(os.path.join(folder, name), top)
            for folder, _, names in os.walk(top) for name in names}


steps = {}
for name, drift, method, observe, normal_x0, *per_path in STEPS:
    before = cache_files()
    with fastsde_compiles() as compiled:
        x = run(globals()[drift], method, observe, normal_x0, *per_path)
    # Whether Numba's target registries have been loaded by now (it imports
    # numba.np.arraymath then): a compile loads them, loading from the cache need not.
    steps[name] = dict(compiled=compiled, qualnames=compiled.qualnames, x=x.tolist(),
                       registries="numba.np.arraymath" in sys.modules,
                       written=sorted(cache_files() - before))
print(json.dumps(steps))
"""


def _child(steps, cache_dir, kernel_first=False, prelude=""):
    code = (prelude + f"STEPS = {steps!r}\nKERNEL_FIRST = {kernel_first!r}\n"
            + textwrap.dedent(CHILD))
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir,
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_processes():
    """A first process with an empty cache runs one model with two methods and then a
    second model; a second process with the same cache runs them again."""
    steps = [("first", "osc", "euler_maruyama", False, False),
             ("per_path_params", "osc", "euler_maruyama", False, False, True),
             ("other_method", "osc", "heun", False, False),
             ("other_outputs", "osc", "euler_maruyama", True, False),
             ("other_model", "duffing", "euler_maruyama", False, False),
             ("other_width", "duffing_wide", "euler_maruyama", False, False),
             ("other_dim", "osc_relaxed", "euler_maruyama", False, False),
             ("normal_x0", "osc", "euler_maruyama", False, True)]
    with tempfile.TemporaryDirectory(prefix="fastsde-compile-") as cache:
        first = _child(steps, cache)
        # Without the kernel with a row of parameters per path: the kernels the first
        # process compiled after it must not need its pieces.
        again = _child([s for s in steps if s[0] != "per_path_params"], cache)
        # Exits 0 (_child asserts it): it aborted in LLVM before the driver started
        # Numba's threading layer itself ("Symbol not found: get_thread_id").
        _child([], cache, kernel_first=True)
        # A kernel compiled after others were loaded from the cache (what the second
        # model wrote to the cache removed: its kernel and its functions, not the frame
        # it shares with the first).
        removed = first["other_model"]["written"]
        assert [name for name in removed if "fastsde-kernel-" in name], removed
        for name in removed:
            os.remove(os.path.join(cache, name))
        after_loads = _child([s for s in steps if s[0] in ("first", "other_model")], cache)
    return first, again, after_loads


def test_the_first_kernel_compiles_the_shared_pieces_once(two_processes):
    first, _, _ = two_processes
    names = first["first"]["compiled"]
    for piece in ("run_chunk_frame", "model_step", "save_block", "block_start",
                  "block_finish", "fill_normals", "_launch_parallel"):
        assert names.count(piece) == 1, f"{piece} compiled {names.count(piece)} times: {names}"
    # fs.Normal initial states are not asked for: their normals are not compiled.
    assert "normal_block" not in names, names


def test_normal_initial_states_compile_only_their_normals(two_processes):
    """The kernel is the same for fixed and fs.Normal initial states; the normals of the
    latter are compiled on first need and called by address."""
    first, _, _ = two_processes
    assert first["normal_x0"]["compiled"] == ["normal_block"], first["normal_x0"]["compiled"]


@pytest.mark.parametrize("step", ["other_method", "other_model", "other_width",
                                  "other_dim"])
def test_a_new_method_or_model_compiles_only_its_step_or_its_frame(two_processes, step):
    """Euler-Maruyama -> Heun on the same model, a new drift of the same width, one with
    another parameter width, or one with another state width (three components, not
    two): the RNG's lane loops, the save point, the block's start and finish (initial
    states, parameter rows, final states and hitting times) and the launcher are the
    first kernel's. A new method or drift compiles only its step (and for a new model its
    drift and diffusion, compiled once per model and dtype); the frame around the step
    (run_chunk without the model) is the first kernel's, since it depends on the state
    and parameter widths, not on the model's functions. Another width compiles a frame
    too. A network's parameter width is its number of weights: each new architecture
    would otherwise compile the block's pieces again."""
    first, _, _ = two_processes
    expected = ["model_step"]
    if step != "other_method":
        expected += ["model_diffusion", "model_drift"]
    if step in ("other_width", "other_dim"):
        expected += ["run_chunk_frame"]
    assert sorted(first[step]["compiled"]) == sorted(expected), first[step]["compiled"]


def test_observables_compile_their_save_point_and_frame(two_processes):
    """Observables are compiled into the save point, which the frame calls; the step is
    the first kernel's. The first observable of a shape compiles the frame, typed with
    a save point of stand-ins (the merge binds the call to the kernel's own: see
    test_observables_of_one_number_share_a_frame), and the kernel's save point.
    Statistics and stored paths are run-time choices of the same kernel (they compile
    nothing)."""
    first, _, _ = two_processes
    assert sorted(first["other_outputs"]["compiled"]) == ["run_chunk_frame", "save_block",
                                                          "save_block"]


def test_a_new_process_loads_every_piece_from_the_disk_cache(two_processes):
    """Nothing of fastsde's compiles again, and the kernels loaded from the cache (the
    launcher calls each run_chunk by its address) give the same bits. Loading does not
    load Numba's target registries (cpu._KeyedCache.load_overload: they import
    numba.np.arraymath and scipy.linalg, 0.3 s of a process that runs cached kernels).

    The second process skips the kernel with a row of parameters per path: the kernels
    compiled after it in the first process call the block ends by a symbol that must
    not depend on what else that process had compiled (before cpu._piece_signatures
    typed the per-path flag as a plain boolean, they called that kernel's block start,
    and this process aborted: "Symbol not found: fastsde_block_start_...")."""
    first, again, _ = two_processes
    assert first["first"]["registries"]
    assert "per_path_params" not in again
    for step in again:
        assert again[step]["compiled"] == [], (step, again[step]["compiled"])
        np.testing.assert_array_equal(np.array(again[step]["x"]), np.array(first[step]["x"]))
        assert not again[step]["registries"], step


def test_a_kernel_compiled_after_cached_ones_were_loaded(two_processes):
    """A process that loaded a kernel from the cache without Numba's registries, then
    compiles one (the cache lost it): the compile loads them itself, and both kernels
    give the first process's bits."""
    first, _, after_loads = two_processes
    assert after_loads["first"]["compiled"] == [] and not after_loads["first"]["registries"]
    assert sorted(after_loads["other_model"]["compiled"]) == [
        "model_diffusion", "model_drift", "model_step"], after_loads["other_model"]["compiled"]
    assert after_loads["other_model"]["registries"]
    for step in ("first", "other_model"):
        np.testing.assert_array_equal(np.array(after_loads[step]["x"]),
                                      np.array(first[step]["x"]))


def test_a_cached_kernel_finds_block_ends_compiled_in_another_order():
    """A kernel loaded from the disk cache calls block ends that this process compiled
    itself, after other functions: Numba's own symbols carry a per-process counter, so
    the kernel must reach them by names that do not (cpu._piece_symbol). Called by
    Numba's symbols (6e3c596), the process died: here it aborted, in a CI run it
    crashed (SIGSEGV) in `fastsde demo`, which loads Heun's kernel compiled by a
    second process."""
    steps = [("first", "osc", "euler_maruyama", False, False)]
    with tempfile.TemporaryDirectory(prefix="fastsde-compile-") as cache:
        first = _child(steps, cache)
        removed = [name for name in os.listdir(os.path.join(cache, os.listdir(cache)[0]))
                   if "block_start" in name or "block_finish" in name]
        folder = os.path.join(cache, os.listdir(cache)[0])
        for name in removed:
            os.remove(os.path.join(folder, name))
        assert removed, os.listdir(folder)
        # Two functions compiled first: the block ends get other counters than before.
        again = _child(steps, cache, prelude=(
            "import numba\nnumba.njit(lambda v: v + 1.0)(1.0)\n"
            "numba.njit(lambda v: v * 2)(3)\n"))
    assert sorted(again["first"]["compiled"]) == ["block_finish", "block_start"], again
    np.testing.assert_array_equal(np.array(again["first"]["x"]), np.array(first["first"]["x"]))


def test_damaged_frame_and_kernel_files_are_built_again():
    """fastsde's own cache files (a frame's IR, a merged kernel) cut short, as by a
    process killed while writing one on a file system without atomic renames, or left
    from another format: read as absent, built again, the same bits."""
    steps = [("first", "osc", "euler_maruyama", False, False)]
    with tempfile.TemporaryDirectory(prefix="fastsde-compile-") as cache:
        first = _child(steps, cache)
        damaged = [name for name in first["first"]["written"]
                   if os.path.basename(name).startswith(("fastsde-frame-", "fastsde-kernel-"))]
        assert len(damaged) == 2, first["first"]["written"]
        for name in damaged:
            with open(os.path.join(cache, name), "r+b") as f:
                f.truncate(os.path.getsize(os.path.join(cache, name)) // 2)
        again = _child(steps, cache)
    # The model's functions compile again with its step (as for other_model in
    # test_a_kernel_compiled_after_cached_ones_were_loaded).
    assert sorted(again["first"]["compiled"]) == ["model_diffusion", "model_drift",
                                                  "model_step", "run_chunk_frame"], again
    np.testing.assert_array_equal(np.array(again["first"]["x"]), np.array(first["first"]["x"]))


def test_the_rng_lane_loops_are_inlined_into_the_step_loop():
    """fill_normals is compiled on its own (shared, cached) and marked for LLVM to inline:
    a call left in the time loop costs about a tenth of the float32 throughput."""
    def drift(t, x, p, out):
        out[0] = -1.25 * x[0]

    def diffusion(t, x, p, out):
        out[0] = 0.5

    model = fs.SDE(drift, diffusion, dim=1, noise="additive")
    for dtype in (np.float32, np.float64):
        kernel = cpu.get_kernel(model, methods.METHODS["euler_maruyama"], dtype)
        if kernel.from_disk_cache:
            pytest.skip("the kernel was loaded from the disk cache (no IR to inspect)")
        ir = kernel.library.get_llvm_str()
        calls = [line for line in ir.splitlines()
                 if " call " in line and "fill_normals" in line]
        assert ir.count("define") > 0 and not calls, calls[:3]


def test_the_models_step_is_inlined_into_the_kernels_frame():
    """A model's kernel is its frame (run_chunk without the model, shared by every model
    of its shape) merged with the model's step, compiled alone and called through a
    symbol: LLVM inlines the step, so no call of it is left (called, the kernel ran at
    10-27% of its speed)."""
    def drift(t, x, p, out):
        out[0] = -1.5 * x[0] + 0.125 * x[0] * x[0] * x[0]

    def diffusion(t, x, p, out):
        out[0] = 0.375

    model = fs.SDE(drift, diffusion, dim=1, noise="additive")
    for dtype, method in ((np.float32, "heun"), (np.float64, "euler_maruyama")):
        kernel = cpu.get_kernel(model, methods.METHODS[method], dtype)
        assert kernel.run_chunk is None, "a model's kernel is framed"
        if kernel.from_disk_cache:
            pytest.skip("the kernel was loaded from the disk cache (no IR to inspect)")
        ir = kernel.library.get_llvm_str()
        calls = [line for line in ir.splitlines() if " call " in line
                 and ("model_step" in line or cpu.FRAME_STEP_SYMBOL in line)]
        assert ir.count("define") > 0 and not calls, calls[:3]
        assert not [line for line in _defined_functions(ir) if "model_step" in line]


def _debug_pull(t, x, p, out):
    out[0] = -0.75 * x[0]
    out[1] = 0.5 * x[0] - x[1]


def _debug_push(t, x, p, out):
    out[0] = 0.25 * x[1] - x[0]
    out[1] = -1.25 * x[1]


def _debug_late_oob(t, x, p, out):
    # In bounds at t0 (x[0] = 1, so the plain-Python check passes), out of bounds once
    # x[0] has decayed below 0.5: only the kernel's bounds checks can find it.
    out[0] = -x[0]
    out[1 if x[0] > 0.5 else 2] = -x[1]


def test_debug_kernels_share_a_bounds_checked_frame():
    """debug=True kernels are framed too: the frame and the step are compiled with bounds
    checks, and a second model of the shape compiles only its step (its debug kernel:
    1.7-2.3 s as one run_chunk, 0.9-1.3 s framed). Each gives its fast kernel's bits, and
    an index out of bounds after t0 is still caught in a kernel merged from the shared
    frame."""
    def run(drift, debug):
        model = fs.ODE(drift, dim=2, name=drift.__name__)
        return fs.simulate(model, [1.0, 0.5], (0.0, 2.0), 40, 70, method="heun",
                           device="cpu", debug=debug, progress=False)

    run(_debug_pull, True)  # the debug frame of this shape (or it is in the cache)
    with fastsde_compiles() as compiled:
        checked = run(_debug_push, True)
    assert "model_step" in compiled, compiled
    assert not [name for name in compiled if name.startswith("run_chunk")], compiled
    for drift in (_debug_pull, _debug_push):
        assert np.array_equal(run(drift, True).x, run(drift, False).x), drift.__name__
    assert not np.array_equal(checked.x, run(_debug_pull, True).x)
    with fastsde_compiles() as compiled:
        with pytest.raises(fs.ModelError, match="_debug_late_oob.*indexed outside"):
            run(_debug_late_oob, True)
    assert not [name for name in compiled if name.startswith("run_chunk")], compiled


# Functions of this test's own, and a shape no other test runs (two components, four
# parameters, float32, no outputs but the final states): the additive model's frame can
# only come from the diagonal model's.
def _kind_pull(t, x, p, out):
    out[0] = -p[0] * x[0]
    out[1] = -p[1] * x[1]


def _kind_push(t, x, p, out):
    out[0] = p[2] - p[0] * x[0]
    out[1] = p[3] - p[1] * x[1]


def _kind_noise(t, x, p, out):
    out[0] = 0.25
    out[1] = 0.375


def test_noise_kinds_of_one_shape_share_a_frame():
    """Only the step reads the noise kind; the frame sees the noise width and the
    diffusion's shape. A diagonal-noise and an additive-noise model of one width share
    their frame, so the second compiles its step and its functions alone. Each kernel
    runs its own step: with one drift and one constant diffusion the two kinds give the
    same Euler-Maruyama paths, and another drift gives others."""
    params = (0.7, 1.3, 0.2, -0.1)

    def run(drift, noise):
        model = fs.SDE(drift, _kind_noise, dim=2, noise=noise, params=params,
                       name=f"{drift.__name__}_{noise}")
        return fs.simulate(model, [1.0, -0.5], (0.0, 1.0), 30, 200, device="cpu",
                           dtype="float32", seed=5, progress=False).x

    diagonal = run(_kind_pull, "diagonal")  # the frame (or it is in the disk cache)
    with fastsde_compiles() as compiled:
        additive = run(_kind_pull, "additive")
    assert "model_step" in compiled, compiled
    assert not [name for name in compiled if name.startswith("run_chunk")], compiled
    assert np.array_equal(additive, diagonal)
    assert not np.array_equal(run(_kind_push, "additive"), additive)


# A model of this test's own, in float32 with three components and one observable.
def _obs_drift(t, x, p, out):
    out[0] = -0.5 * x[0] + x[1]
    out[1] = -x[0] - 0.3 * x[1]
    out[2] = 0.2 * x[0] - x[2]


def _obs_noise(t, x, p, out):
    out[0] = 0.3
    out[1] = 0.2
    out[2] = 0.1


def _obs_energy(t, x, p):
    return x[0] * x[0] + x[1] * x[1] + x[2] * x[2]


def _obs_second(t, x, p):
    return x[1]


def _obs_third(t, x, p):
    return x[2]


def _obs_uncompilable(t, x, p):
    return math.ulp(x[0])  # runs in Python; Numba has no math.ulp


def test_observables_of_one_number_share_a_frame():
    """The frame calls the save point by name and is keyed by the number of observables,
    not by the observables: the merge binds the call to the save point of the kernel's
    own (cpu._Lowered.save). Another observable compiles its save point alone, and that
    save point is the one the kernel runs: an observable that is a state component gives
    the bits of that component's statistics. A frame read from the disk cache (as in a
    new process) is bound the same way. The frame is typed with stand-ins, not with the
    first request's observables: one that does not compile fails its own request alone."""
    model = fs.SDE(_obs_drift, _obs_noise, dim=3, noise="diagonal", name="obs_frame")

    def run(observable):
        return fs.simulate(model, [0.5, -0.2, 0.1], (0.0, 1.0), 20, 300, device="cpu",
                           dtype="float32", seed=9, stats=True, save_at=5,
                           observables={observable.__name__: observable}, progress=False)

    held = set(cpu._LOWERED)
    with pytest.raises(fs.ModelError, match="_obs_uncompilable"):
        run(_obs_uncompilable)  # the frame's first request (or it is in the cache)
    run(_obs_energy)
    with fastsde_compiles() as compiled:
        second = run(_obs_second)
    assert "save_block" in compiled, compiled
    assert not [name for name in compiled if name.startswith("run_chunk")], compiled
    assert np.array_equal(second.obs_mean[:, 0], second.mean[:, 1])
    # This process forgets the frame's IR: the next kernel reads it from the disk cache.
    for key in set(cpu._LOWERED) - held:
        if "frame" in key[0]:
            del cpu._LOWERED[key]
    third = run(_obs_third)
    assert np.array_equal(third.obs_mean[:, 0], third.mean[:, 2])
    assert not np.array_equal(third.obs_mean, second.obs_mean)


def _half_call(t, x, p):
    return 0.5 * max(x[0] - 1.0, 0.0)


# A model of this test's own: a step of a model other tests run (GBM's, say) may have
# been lowered in this process already, and then only the merge would be left to see.
def _level_drift(t, x, p, out):
    out[0] = 0.1171 * x[0]


def _level_diffusion(t, x, p, out):
    out[0] = 0.3125 * x[0]


def test_mlmc_level_kernels_share_a_frame():
    """A multilevel level kernel is framed as simulate's is: its chunk (the fine and
    coarse paths, the payoff, the pair sums) is a frame shared by every model and method
    of its shape, payoff, stopping and running extrema, merged with the model's step. A
    second method of the model compiles its step alone (0.7 s against 2.8-3.2 s), and
    each kernel runs its own step (tests/test_mlmc.py checks the bits against simulate)."""
    from fastsde import streams

    model = fs.SDE(_level_drift, _level_diffusion, dim=1, noise="diagonal",
                   name="level_gbm")

    def level_sums(method):
        kernel = cpu.get_mlmc_kernel(model, methods.METHODS[method], np.float64,
                                     _half_call, model.n_params)
        key0, key1 = streams.key_from_seed(np.random.SeedSequence(7))
        sums, bad = np.zeros((2, len(cpu.MLMC_SUMS))), np.zeros(2, np.int64)
        kernel(np.array([1.0]), np.zeros((1, 0)), 0.0, 1.0, 4, 2, 1, key0, key1,
               np.uint64(0), 700, 512, sums, bad)
        assert bad.sum() == 0
        return sums

    milstein = level_sums("milstein")  # the frame (or it is in the disk cache)
    with fastsde_compiles() as compiled:
        euler = level_sums("euler_maruyama")
    assert "model_step" in compiled, compiled
    assert not [name for name in compiled if name.startswith("mlmc_chunk")], compiled
    assert not np.array_equal(milstein, euler)
    assert np.array_equal(euler, level_sums("euler_maruyama"))


def _defined_functions(ir):
    return [line for line in ir.splitlines() if line.startswith("define")]


def test_the_block_ends_and_a_networks_field_are_called_not_linked_in():
    """block_start, block_finish and a network's block field are called by their symbols:
    their code, compiled once, is not linked into each kernel's module to be optimised
    and compiled again. The save point, called inside the time loop, stays linked (LLVM
    reads what it touches from its code: without it, stored-path runs lost 5-10%)."""
    def drift(t, x, p, out):
        out[0] = -1.75 * x[0]

    def diffusion(t, x, p, out):
        out[0] = 0.25

    model = fs.SDE(drift, diffusion, dim=1, noise="additive")
    network = fs.mlp.random_mlp([2, 5, 1], "tanh", seed=11).ode()
    for m, method in ((model, "euler_maruyama"), (network, "euler")):
        kernel = cpu.get_kernel(m, methods.METHODS[method], np.float32)
        if kernel.from_disk_cache:
            pytest.skip("the kernel was loaded from the disk cache (no IR to inspect)")
        defined = _defined_functions(kernel.library.get_llvm_str())
        for piece in ("block_start", "block_finish", "block_field"):
            assert not [line for line in defined if piece in line], (piece, m)
        assert [line for line in defined if "save_block" in line], m
        # A network's kernel is a run_chunk of its own; a model's is merged from a frame
        # and the model's step (cpu._framed_kernel).
        entry = "run_chunk" if kernel.lane_block else "fastsde_kernel_"
        assert [line for line in defined if entry in line], m
    assert kernel.lane_block, "the network's kernel has no block field to check"


def test_a_piece_called_by_symbol_refuses_argument_types_it_was_not_compiled_for():
    """_call_compiled calls code compiled beforehand for exactly its argument types (the
    caller's machine code refers to it by symbol): other types are a typing error, not a
    call that reads the arguments as the types the piece was compiled for."""
    @cpu.njit(**cpu._PIECE)
    def piece(a, b):
        return a + b

    cpu._load_pieces([(piece, (cpu.types.float64, cpu.types.float64))])

    @cpu.njit
    def caller(a, b):
        return cpu._call_compiled(piece, (a, b))

    assert caller(1.5, 2.0) == 3.5
    with pytest.raises(numba.core.errors.TypingError, match="compiled for"):
        caller(np.int64(1), np.int64(2))


def test_a_piece_is_never_bound_for_literal_argument_types():
    """A literal in a piece's signature would make the code that calls it depend on what
    else the process compiled (the crash test_a_new_process_loads_every_piece_from_the_
    disk_cache guards against): _load_pieces refuses it before compiling anything."""
    @cpu.njit(**cpu._PIECE)
    def piece(flag):
        return flag

    with pytest.raises(TypeError, match="literal types"):
        cpu._load_pieces([(piece, (cpu.types.literal(False),))])
    assert not piece.overloads


def test_the_launcher_refuses_argument_types_it_was_not_compiled_for():
    """The launcher passes its arguments to run_chunk's address unchecked, so it must
    never run run_chunk on argument types that run_chunk was not compiled for: not by
    compiling itself for them, nor by matching its signature for the other dtype."""
    model = fs.OU(theta=1.0, sigma=0.5)
    for dtype, other in ((np.float64, np.float32), (np.float32, np.float64)):
        kernel = cpu.get_kernel(model, methods.METHODS["euler_maruyama"], dtype)
        n_signatures = len(kernel.launcher.signatures)
        args = layout.empty_args(kernel.sizes, other)
        with pytest.raises(TypeError, match=f"x0_rows has dtype {np.dtype(other)}"):
            cpu.run(kernel, args)
        # Other types than either dtype's: the launcher itself refuses, without compiling.
        odd = args._replace(x0_rows=args.x0_rows.astype(np.int64),
                            x0_mean=args.x0_mean.astype(np.int64))
        with pytest.raises(TypeError, match="No matching definition"):
            kernel.launcher(kernel.address, 0, *odd)
        assert len(kernel.launcher.signatures) == n_signatures


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_initial_states_called_by_address_are_the_streams_normals(dtype):
    """fs.Normal initial states come from normal_block through its address: they are the
    documented stream's normals (q = j in STREAM_INITIAL), bit for bit, in both dtypes,
    and antithetic pairs mirror them."""
    from fastsde import streams
    from fastsde.kernels import philox

    mean = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    std = np.array([0.5, 2.0, 1.0, 0.25, 1.5])
    def zero(t, x, p, out):
        for j in range(5):
            out[j] = 0.0
    model = fs.ODE(zero, dim=5)
    n = 70
    res = fs.simulate(model, fs.Normal(mean, std), (0.0, 1.0), 1, n, seed=11, dtype=dtype,
                      device="cpu", progress=False)
    paths = np.arange(n, dtype=np.uint64)[:, None]
    z = streams.normals(11, paths, np.arange(5)[None, :], stream=philox.STREAM_INITIAL,
                        dtype=dtype)
    expected = (mean.astype(dtype) + std.astype(dtype) * z).astype(dtype)
    np.testing.assert_array_equal(res.x, expected)
    anti = fs.simulate(model, fs.Normal(mean, std), (0.0, 1.0), 1, n, seed=11, dtype=dtype,
                       device="cpu", progress=False, antithetic=True)
    np.testing.assert_array_equal(anti.x[0::2], expected[0::2])
    np.testing.assert_array_equal(anti.x[1::2], (mean.astype(dtype)
                                                 + std.astype(dtype) * -z[0::2]).astype(dtype))


def test_read_only_inputs_run_the_same_kernel_and_give_the_same_bits():
    """A user's read-only arrays (frozen params, per-path params, initial rows) are typed
    by Numba as another type than the kernel's; they are copied before the call instead of
    being refused (or compiling a second kernel)."""
    def drift(t, x, p, out):
        out[0] = -p[0] * x[0]

    def noise(t, x, p, out):
        out[0] = p[1]

    model = fs.SDE(drift, noise, dim=1, noise="additive", params=(1.0, 0.5))
    n = 130
    shared = np.array([1.3, 0.4])
    per_path = np.column_stack([np.linspace(0.5, 2.0, n), np.full(n, 0.3)])
    rows = np.linspace(-1.0, 1.0, n)[:, None]
    for dtype in ("float32", "float64"):
        for params, x0 in ((shared, 0.5), (per_path, rows), (shared, rows)):
            kw = dict(device="cpu", seed=5, dtype=dtype, progress=False)
            want = fs.simulate(model, x0, (0.0, 1.0), 20, n, params=params, **kw).x
            frozen_p, frozen_x0 = params.copy(), x0
            frozen_p.flags.writeable = False
            if isinstance(x0, np.ndarray):
                frozen_x0 = x0.copy()
                frozen_x0.flags.writeable = False
            got = fs.simulate(model, frozen_x0, (0.0, 1.0), 20, n, params=frozen_p, **kw).x
            np.testing.assert_array_equal(got, want)


def test_fs_compile_prepares_the_kernel_that_simulate_then_runs():
    """After fs.compile, runs with the same model, method, dtype, parameter width (and
    on the CPU, shared or per-path parameters) and observables compile nothing, whatever
    their grid, path count, initial-state rows, parameter values, statistics or stored
    paths."""
    scale = 1.0 + np.random.default_rng().random()   # a kernel no other test compiled

    def drift(t, x, p, out):
        out[0] = -p[0] * scale * x[0]

    def noise(t, x, p, out):
        out[0] = p[1]

    def square(t, x, p):
        return x[0] * x[0]

    model = fs.SDE(drift, noise, dim=1, noise="additive", params=(1.0, 0.5))
    obs = {"square": square}
    n = 64
    per_path = np.column_stack([np.linspace(0.5, 2.0, n), np.full(n, 0.3)])
    with fastsde_compiles() as compiled:
        fs.compile(model, dtype="float32", device="cpu", observables=obs)
    assert {"run_chunk_frame", "model_step"} <= set(compiled), compiled
    with fastsde_compiles() as compiled:
        fs.compile(model, dtype="float32", device="cpu", observables=obs,
                   params=per_path[:5])
    # Another kernel: a row of parameters per path is a frame of its own, the step the
    # same.
    assert "run_chunk_frame" in compiled, compiled
    rows = np.linspace(-1.0, 1.0, n)[:, None]

    with fastsde_compiles() as compiled:
        fs.simulate(model, rows, (0.0, 2.0), 50, n, params=per_path, dtype="float32",
                    device="cpu", observables=obs, stats=True, progress=False)
        fs.simulate(model, 0.3, (1.0, 3.0), 7, 2 * n, dtype="float32", device="cpu",
                    observables=obs, save_at=7, antithetic=True, progress=False)
    assert compiled == [], compiled
    assert fs.compile(model, dtype="float32", device="cpu", observables=obs) < 1.0


def test_fs_compile_refuses_what_simulate_refuses():
    model = fs.OU(theta=1.0, sigma=0.5)
    with pytest.raises(ValueError, match="dtype"):
        fs.compile(model, dtype="float16")
    with pytest.raises(fs.IncompatibleMethodError):
        fs.compile(model, method="euler")
    with pytest.raises(ValueError, match="device"):
        fs.compile(model, device="tpu")
