"""Adversarial calls of simulate(): random mixes of valid and invalid arguments.

Every call either returns a well-formed Result or raises TypeError / ValueError /
fastsde.FastSDEError before doing any work, and when exactly one argument is invalid the
message names it. Never a crash, hang or garbage.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsde as fs

OU = fs.OU(theta=1.0, sigma=0.5)


def rot_drift(t, x, p, out):
    out[0] = -x[1]
    out[1] = x[0]


ROT = fs.ODE(rot_drift, dim=2)

N_PATHS = 6
N_STEPS = 12

VALID = {
    "x0": st.one_of(st.floats(-10, 10), st.just(fs.Normal(0.0, 1.0))),
    "t_span": st.tuples(st.floats(-5, 5), st.floats(0.1, 5)).map(lambda p: (p[0], p[0] + p[1])),
    "n_steps": st.sampled_from([N_STEPS]),
    "n_paths": st.sampled_from([N_PATHS]),
    "method": st.sampled_from([None]),
    "seed": st.one_of(st.integers(0, 2**64), st.none()),
    "dtype": st.sampled_from(["float32", "float64", np.float64]),
    "params": st.sampled_from([None]),
    "save_at": st.sampled_from([None, 3, 4, 12]),
    "stats": st.booleans(),
    "first_path": st.integers(0, 2**63),
    "device": st.sampled_from(["cpu"]),
}

INVALID_VALUES = {
    "x0": ([float("nan"), float("inf"), "1.0", None, np.zeros((2, 3)),
                           np.zeros(N_PATHS + 1), [1.0, float("-inf")], True]),
    "t_span": ([(1.0, 1.0), (2.0, 1.0), (0.0, float("inf")), (float("nan"), 1.0),
                               5.0, (0.0,), "ab", (0.0, 1.0, 2.0), None]),
    "n_steps": ([0, -1, 2.0, "10", None, True, 2**41]),
    "n_paths": ([0, -3, 1.5, None, "6", False]),
    "method": (["rk45", "", 7, "EULER", object()]),
    "seed": ([-1, 0.5, "seed", [1, 2], object()]),
    "dtype": (["float16", "int64", "complex128", None, 3, "f8x"]),
    "params": ([[1.0, 2.0, 3.0], np.ones((N_PATHS + 1, 2)), [np.nan, 1.0],
                               [[1.0]], "ab", [1.0, np.inf]]),
    "save_at": ([0, -2, 5, 7, [], [float("nan")], [100.0], True, "x"]),
    "stats": (["yes", 1, None, 0.0]),
    "first_path": ([-1, 2**64, 1.5, "0", None]),
    "device": (["gpu", "CPU", None, 0, ""]),
}


INVALID = {name: st.sampled_from(values) for name, values in INVALID_VALUES.items()}


@st.composite
def calls(draw):
    model = draw(st.sampled_from([OU, ROT]))
    n_bad = draw(st.sampled_from([0, 1, 1, 1, 2]))
    bad = set(draw(st.lists(st.sampled_from(sorted(INVALID)), min_size=n_bad,
                            max_size=n_bad, unique=True)))
    kwargs = {}
    for name in VALID:
        kwargs[name] = draw(INVALID[name] if name in bad else VALID[name])
    if model is ROT and "x0" not in bad and not isinstance(kwargs["x0"], fs.Normal):
        kwargs["x0"] = [kwargs["x0"], 0.0]
    if model is ROT and "params" in bad:
        bad.discard("params")  # an ODE without params accepts any parameter vector length
        kwargs["params"] = None
    return model, kwargs, bad


def check_call(model, kwargs, bad):
    try:
        res = fs.simulate(model, **kwargs)
    except (TypeError, ValueError, fs.FastSDEError) as exc:
        assert bad, f"valid call raised {exc!r}: {kwargs}"
        if len(bad) == 1:
            (name,) = bad
            assert name in str(exc), f"message does not name {name!r}: {exc}"
        return
    assert not bad, f"invalid {bad} accepted: {kwargs}"
    assert res.x.shape == (N_PATHS, model.dim)
    assert res.n_nonfinite == 0 and np.all(np.isfinite(res.x))
    assert res.t[-1] == kwargs["t_span"][1]
    assert res.x.dtype == np.dtype(kwargs["dtype"])
    if kwargs["stats"]:
        assert res.mean.shape == (len(res.t), model.dim)
        assert np.all(res.count == N_PATHS)
    if res.paths is not None:
        assert np.array_equal(res.paths[-1], res.x)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_every_call_returns_a_result_or_names_the_bad_argument(case):
    check_call(*case)


SINGLE = [(name, i) for name, values in INVALID_VALUES.items() for i in range(len(values))]


@pytest.mark.parametrize("name,index", SINGLE)
def test_each_invalid_value_alone_is_refused_and_named(name, index):
    kwargs = dict(x0=0.5, t_span=(0.0, 1.0), n_steps=N_STEPS, n_paths=N_PATHS, method=None,
                  seed=1, dtype="float64", params=None, save_at=None, stats=False,
                  first_path=0, device="cpu")
    kwargs[name] = INVALID_VALUES[name][index]
    check_call(OU, kwargs, {name})


@settings(max_examples=60, deadline=None, derandomize=True)
@given(first=st.integers(0, 2**40), n=st.integers(1, 40), split=st.integers(0, 40),
       seed=st.integers(0, 2**32))
def test_any_split_of_a_path_range_gives_the_same_rows(first, n, split, seed):
    split = min(split, n)
    whole = fs.simulate(OU, fs.Normal(0, 1), (0, 1), 8, n, device="cpu", seed=seed,
                        first_path=first)
    if split > 0:
        a = fs.simulate(OU, fs.Normal(0, 1), (0, 1), 8, split, device="cpu", seed=seed,
                        first_path=first)
        assert np.array_equal(whole.x[:split], a.x)
    if split < n:
        b = fs.simulate(OU, fs.Normal(0, 1), (0, 1), 8, n - split, device="cpu", seed=seed,
                        first_path=first + split)
        assert np.array_equal(whole.x[split:], b.x)
