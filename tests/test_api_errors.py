"""Every bad argument of simulate() raises before any work, and the message names it."""

import numpy as np
import pytest

import fastsde as fs


def ok_drift(t, x, p, out):
    out[0] = -x[0]


def ok_diffusion(t, x, p, out):
    out[0] = 1.0


GOOD = dict(x0=0.0, t_span=(0.0, 1.0), n_steps=10, n_paths=100, device="cpu")


def call(model, **changes):
    kw = dict(GOOD, **changes)
    return fs.simulate(model, **kw)


@pytest.mark.parametrize("arg,value,exc", [
    ("x0", "abc", TypeError),
    ("x0", None, TypeError),
    ("x0", np.zeros((3, 2)), ValueError),
    ("x0", np.zeros((100, 2)), ValueError),
    ("x0", float("nan"), ValueError),
    ("x0", np.inf, ValueError),
    ("t_span", (1.0, 0.0), ValueError),
    ("t_span", (0.0, float("nan")), ValueError),
    ("t_span", 5.0, ValueError),
    ("t_span", (0.0, 1.0, 2.0), ValueError),
    ("t_span", (1e10, 1e10 + 1e-5), ValueError),
    ("n_steps", 0, ValueError),
    ("n_steps", 2.5, TypeError),
    ("n_steps", True, TypeError),
    ("n_paths", 0, ValueError),
    ("n_paths", -5, ValueError),
    ("n_paths", "10", TypeError),
    ("method", "rk45", ValueError),
    ("method", 3, TypeError),
    ("method", "euler", fs.IncompatibleMethodError),
    ("device", "gpu", ValueError),
    ("device", None, ValueError),
    ("seed", -1, ValueError),
    ("seed", 1.5, ValueError),
    ("seed", "x", ValueError),
    ("dtype", "float16", ValueError),
    ("dtype", "int32", ValueError),
    ("dtype", object, ValueError),
    ("params", [1.0, 2.0, 3.0], ValueError),
    ("params", np.ones((7, 2)), ValueError),
    ("params", [1.0, np.nan], ValueError),
    ("params", "ab", TypeError),
    ("save_at", 3, ValueError),
    ("save_at", 0, ValueError),
    ("save_at", [0.05], ValueError),
    ("save_at", [0.5, 0.2], ValueError),
    ("save_at", [2.0], ValueError),
    ("save_at", [], ValueError),
    ("save_at", True, TypeError),
    ("stats", "yes", TypeError),
    ("stats", 1, TypeError),
    ("first_path", -1, ValueError),
    ("first_path", 2**64, ValueError),
    ("first_path", 0.5, TypeError),
    ("keep_paths", "no", TypeError),
])
def test_bad_argument_is_named(arg, value, exc):
    with pytest.raises(exc) as info:
        call(fs.OU(1.0, 0.5), **{arg: value})
    message = str(info.value)
    assert arg in message or (arg == "first_path" and "first_path" in message), message


def test_bad_model_is_named():
    with pytest.raises(TypeError, match="model"):
        fs.simulate("ou", **GOOD)


def test_incompatible_method_lists_the_methods_that_fit():
    with pytest.raises(fs.IncompatibleMethodError, match="euler_maruyama"):
        call(fs.OU(1.0, 0.5), method="rk4")
    with pytest.raises(fs.IncompatibleMethodError, match="heun"):
        call(fs.GBM(0.1, 0.2), method="heun")
    ode = fs.ODE(ok_drift, 1)
    with pytest.raises(fs.IncompatibleMethodError, match="rk4"):
        call(ode, method="euler_maruyama")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    from fastsde.kernels import cuda_available

    ok, why = cuda_available()
    if ok:
        pytest.skip("a GPU is present")
    with pytest.raises(fs.DeviceError, match="device='cuda'"):
        call(fs.OU(1.0, 0.5), device="cuda")
    # "auto" falls back to the CPU
    assert call(fs.OU(1.0, 0.5), device="auto").device == "cpu"


def test_auto_device_without_a_driver_does_not_import_numba_cuda(monkeypatch):
    """Importing numba.cuda costs about 0.5 s; where no NVIDIA driver library loads,
    device="auto" settles on the CPU without it (a fresh interpreter, to see sys.modules
    as a user's first run does)."""
    import os
    import subprocess
    import sys

    from fastsde.kernels import cuda_driver_absent

    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    if not cuda_driver_absent():
        pytest.skip("an NVIDIA driver library loads here")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, fastsde as fs\n"
            "r = fs.simulate(fs.OU(1.0, 0.5), 0.0, (0, 1), 4, 8, progress=False)\n"
            "assert r.device == 'cpu', r.device\n"
            "print('numba.cuda' in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False", proc.stdout
    # Under the simulator the driver check is not a shortcut: the backend is available.
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert not cuda_driver_absent()


def test_wrong_arity_is_a_model_error():
    def two_args(t, x):
        pass

    with pytest.raises(fs.ModelError, match="two_args"):
        fs.SDE(two_args, ok_diffusion, 1)
    with pytest.raises(fs.ModelError, match="diffusion"):
        fs.SDE(ok_drift, 42, 1)


class _Settings:
    scale = 2.0


SETTINGS = _Settings()


def uses_python_objects(t, x, p, out):
    out[0] = SETTINGS.scale * x[0]


def test_uncompilable_function_is_a_model_error_naming_it():
    model = fs.SDE(ok_drift, uses_python_objects, dim=1)
    with pytest.raises(fs.ModelError, match="uses_python_objects"):
        call(model)


def test_model_constructor_validation():
    with pytest.raises(ValueError, match="noise"):
        fs.SDE(ok_drift, ok_diffusion, 1, noise="multiplicative")
    with pytest.raises(ValueError, match="noise_dim"):
        fs.SDE(ok_drift, ok_diffusion, 2, noise="general")
    with pytest.raises(ValueError, match="noise_dim"):
        fs.SDE(ok_drift, ok_diffusion, 2, noise="diagonal", noise_dim=3)
    with pytest.raises(ValueError, match="dim"):
        fs.ODE(ok_drift, 0)
    with pytest.raises(ValueError, match="params"):
        fs.ODE(ok_drift, 1, params=[1.0, np.inf])
    with pytest.raises(ValueError, match="theta"):
        fs.OU(theta="a", sigma=1.0)
    with pytest.raises(ValueError, match="sigma"):
        fs.GBM(mu=0.1, sigma=-1.0)
    with pytest.raises(ValueError, match="std"):
        fs.Normal(0.0, -1.0)


def test_normal_x0_of_wrong_size_is_named():
    with pytest.raises(ValueError, match="x0"):
        call(fs.BrownianMotion(dim=2), x0=fs.Normal([0.0, 1.0, 2.0], 1.0))


def test_output_too_large_is_refused_before_allocation(monkeypatch):
    import fastsde.api as api

    monkeypatch.setattr(api, "_available_memory", lambda: 10 * 2**20)
    with pytest.raises(fs.OutputTooLargeError, match="GiB") as info:
        call(fs.OU(1.0, 0.5), n_paths=1_000_000, save_at=10)
    assert "save_at" in str(info.value) and "stats" in str(info.value)


def writes_past_out(t, x, p, out):
    out[0] = -x[0]
    out[1] = 0.0


def writes_2d_into_1d(t, x, p, out):
    out[0, 0] = 1.0


def test_out_of_bounds_write_is_caught_before_compiling():
    with pytest.raises(fs.ModelError, match="writes_past_out"):
        call(fs.ODE(writes_past_out, 1))
    with pytest.raises(fs.ModelError, match="writes_2d_into_1d"):
        call(fs.SDE(ok_drift, writes_2d_into_1d, 1))


def test_on_nonfinite_policies():
    model = fs.OU(theta=50.0, sigma=0.1)   # h * theta = 5: Euler-Maruyama explodes
    kw = dict(x0=1.0, t_span=(0.0, 60.0), n_steps=600, n_paths=10, device="cpu")
    r = fs.simulate(model, **kw)
    assert r.n_nonfinite == 10
    with pytest.warns(RuntimeWarning, match="h \\* \\|df/dx\\|"):
        fs.simulate(model, on_nonfinite="warn", **kw)
    with pytest.raises(fs.NonFiniteError, match="10 of 10 paths") as info:
        fs.simulate(model, on_nonfinite="raise", **kw)
    assert info.value.result.n_nonfinite == 10
    with pytest.raises(ValueError, match="on_nonfinite"):
        fs.simulate(model, on_nonfinite="ignore", **kw)
