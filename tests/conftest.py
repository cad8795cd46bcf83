import os
import subprocess
import sys

import numpy as np
import pytest

import fastsde as fs


@pytest.fixture(scope="session")
def ou():
    """theta = 1, sigma = 0.5: shared across tests so its kernels compile once."""
    return fs.OU(theta=1.0, sigma=0.5)


def linear_flow_drift(t, x, p, out):
    out[0] = -p[0] * x[0]


@pytest.fixture(scope="session")
def linear_flow():
    """u = -theta x with flow psi_t(x0) = e^{-theta t} x0."""
    return fs.ODE(linear_flow_drift, dim=1, params=(1.5,), name="linear_flow")


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(12345)


# --- the CUDA simulator run (tests/test_cuda.py::test_device_tests_under_the_simulator) ---

SIMULATOR_TEST = "test_device_tests_under_the_simulator"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(session, config, items):
    """Run the simulator check last: its subprocess starts with the session (below)."""
    last = [item for item in items if item.name == SIMULATOR_TEST]
    for item in last:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session", autouse=True)
def simulator_run(request, tmp_path_factory):
    """Start ``pytest -m cuda tests/test_cuda.py`` under NUMBA_ENABLE_CUDASIM=1 in a
    subprocess when the session starts (only when that check is selected and numba.cuda
    cannot run in this process); the check waits for it at the end of the session."""
    wanted = any(item.name == SIMULATOR_TEST for item in request.session.items)
    in_simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
    if not wanted or in_simulator:
        yield None
        return
    from fastsde.kernels import cuda_available

    if cuda_available()[0]:
        yield None
        return
    log_path = tmp_path_factory.mktemp("cudasim") / "pytest.log"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider",
           os.path.join(ROOT, "tests", "test_cuda.py")]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    yield proc, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()
