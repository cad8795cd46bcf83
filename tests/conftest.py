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
