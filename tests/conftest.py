import os
import signal
import subprocess
import sys
import time

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


#: Seconds each test file took in CI (the sums of ``--durations=0`` of `.ci/run` at 0eeb676,
#: 2-core machine, 2026-12-04): under pytest-xdist the files are handed to the workers
#: longest first, so that no long file starts last while the other worker sits idle. Only
#: the order comes from here; a file not listed goes after those listed.
FILE_SECONDS = {
    "test_cuda.py": 199, "test_generative.py": 114, "test_lane_block.py": 94,
    "test_methods.py": 94, "test_contract_property.py": 90, "test_contract_holes.py": 76,
    "test_mlmc.py": 75, "test_fmath.py": 73, "test_compile.py": 60,
    "test_adversarial.py": 48, "test_unroll.py": 46, "test_lanes.py": 44,
    "test_distributed.py": 37, "test_cuda_link.py": 31, "test_philox.py": 27,
    "test_cli.py": 26, "test_cache_key.py": 25, "test_contract.py": 16,
    "test_physics.py": 13, "test_reliability.py": 11, "test_montecarlo.py": 10,
}


def pytest_configure(config):
    # pytest-xdist hands out files (--dist loadfile) in collection order, not by their
    # number of tests (its default, which put test_adversarial.py's 77 quick tests before
    # test_generative.py's 74 slow ones): the order pytest_collection_modifyitems makes.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    """Under pytest-xdist, files longest first (FILE_SECONDS; the tests of a file keep
    their order); and the simulator check last: its subprocess starts with the session
    (below)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable
    last = [item for item in items if item.name == SIMULATOR_TEST]
    for item in last:
        items.remove(item)
        items.append(item)


class SimulatorRun:
    """The simulator run's files in the session's shared temporary folder: its output
    (``log``) and, once it has ended, its exit status (``status``), written by the
    process that started it, so a test on another pytest-xdist worker can wait for it."""

    WRAPPER = ("import os, subprocess, sys\n"
               "with open(sys.argv[1], 'w') as log:\n"
               "    rc = subprocess.call(sys.argv[3:], stdout=log, stderr=subprocess.STDOUT)\n"
               "with open(sys.argv[2] + '.part', 'w') as f:\n"
               "    f.write(str(rc))\n"
               "os.replace(sys.argv[2] + '.part', sys.argv[2])\n")

    def __init__(self, folder):
        self.log = folder / "pytest.log"
        self.status = folder / "exit-status"
        self.proc = None

    def start(self, cmd, env):
        # Its own process group: a kill at the end of an interrupted session takes the
        # pytest run the wrapper started too.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.WRAPPER, str(self.log), str(self.status)] + cmd,
            env=env, cwd=ROOT, start_new_session=True)

    def returncode(self):
        return int(self.status.read_text()) if self.status.exists() else None

    def wait(self, timeout):
        """The run's exit status, waiting up to ``timeout`` seconds for it to end."""
        deadline = time.monotonic() + timeout
        while self.returncode() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator run did not end in {timeout} s")
            time.sleep(0.5)
        return self.returncode()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="session", autouse=True)
def simulator_run(request, tmp_path_factory):
    """Start ``pytest -m cuda tests/test_cuda.py`` under NUMBA_ENABLE_CUDASIM=1 in a
    subprocess when the session starts (only when that check is selected and numba.cuda
    cannot run in this process); the check waits for it at the end of the session.

    Once per test session: under pytest-xdist every worker runs this fixture (each
    collects every test), and each used to start its own run, all but one killed unread
    at the end: a whole simulator run of CPU time lost on a two-core machine. The workers
    share the parent of their temporary folders; the first to create the marker there
    starts the run, and the check, on whichever worker runs it, reads its files."""
    wanted = any(item.name == SIMULATOR_TEST for item in request.session.items)
    in_simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
    if not wanted or in_simulator:
        yield None
        return
    from fastsde.kernels import cuda_available

    if cuda_available()[0]:
        yield None
        return
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder = shared / "cudasim"
    folder.mkdir(exist_ok=True)
    run = SimulatorRun(folder)
    try:
        os.close(os.open(folder / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another worker of this session started it
        yield run
        return
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=ROOT)
    run.start([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p",
               "no:cacheprovider", os.path.join(ROOT, "tests", "test_cuda.py")], env)
    yield run
    if run.returncode() is None and not (request.session.shouldfail
                                         or request.session.shouldstop):
        # The check may be waiting for it on another worker.
        try:
            run.wait(timeout=900)
        except TimeoutError:
            pass
    run.kill()
