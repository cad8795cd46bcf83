"""Models and observables shared by the Monte Carlo and multilevel tests
(tests/test_montecarlo.py, tests/test_mlmc.py) and the CUDA comparisons
(tests/test_cuda.py): the same plain functions give the same kernel key, so each CPU
kernel compiles once per CI run (the disk cache serves the other)."""

import math

import fastsde as fs


def linear_drift(t, x, p, out):
    out[0] = p[0] - p[1] * x[0]


def linear_diffusion(t, x, p, out):
    out[0] = p[2] + p[3] * x[0]


#: dX = (a - b X) dt + (c + d X) dW, params (a, b, c, d): OU is (0, theta, sigma, 0), GBM
#: is (0, -mu, 0, sigma). One kernel serves both families.
LINEAR = fs.SDE(linear_drift, linear_diffusion, dim=1, noise="diagonal",
                params=(0.0, 1.0, 0.5, 0.0), name="linear")


def obs_x(t, x, p):
    return x[0]


def obs_square(t, x, p):
    return x[0] * x[0]


def obs_call(t, x, p):
    return max(x[0] - 1.0, 0.0)


LINEAR_OBS = {"x": obs_x, "sq": obs_square, "call": obs_call}


def box_drift(t, x, p, out):
    out[0] = 0.0


def box_diffusion(t, x, p, out):
    out[0] = p[0]


def outside_box(t, x, p):
    """Positive outside [lo, hi] = [p[1], p[2]]."""
    return max(p[1] - x[0], x[0] - p[2])


def obs_stopped(t, x, p):
    return 1.0 if (x[0] <= p[1] or x[0] >= p[2]) else 0.0


#: Brownian motion sigma W stopped on leaving [lo, hi], params (sigma, lo, hi).
BOX = fs.SDE(box_drift, box_diffusion, dim=1, noise="additive", params=(1.0, 0.0, 1.0),
             name="bm_box")
BOX_OBS = {"stopped": obs_stopped}


def ou_params(theta, sigma):
    return (0.0, theta, sigma, 0.0)


def gbm_params(mu, sigma):
    return (0.0, -mu, 0.0, sigma)


def above_1_2(t, x, p):
    """Positive above 1.2."""
    return x[0] - 1.2


# --- multilevel Monte Carlo (tests/test_mlmc.py and the CUDA comparisons) ---------------

#: The European call of the multilevel tests: S0 = K = 100, r = 0.05, sigma = 0.2, T = 1.
MLMC_GBM = fs.GBM(mu=0.05, sigma=0.2)
#: exp(-r T) computed once in Python: the payoff then uses only * and max, so the CPU and
#: a GPU (libdevice's exp) round it alike.
DISCOUNT = math.exp(-0.05)


def mlmc_call(t, x, p):
    return DISCOUNT * max(x[0] - 100.0, 0.0)
