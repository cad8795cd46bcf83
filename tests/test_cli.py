import json

import pytest

from fastsde import cli


def test_run_json(capsys):
    assert cli.main(["run", "--model", "ou", "--paths", "2000", "--steps", "50", "--json",
                     "--device", "cpu", "--stats", "--save-at", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_paths"] == 2000 and out["method"] == "euler_maruyama"
    assert len(out["t"]) == 6 and len(out["mean"]) == 6


def test_run_bad_argument_is_reported(capsys):
    assert cli.main(["run", "--paths", "0", "--device", "cpu"]) == 2
    assert "n_paths" in capsys.readouterr().err


def test_demo_small(capsys, tmp_path):
    assert cli.main(["demo", "--paths", "20000", "--steps", "200", "--t1", "40",
                     "--device", "cpu", "--png", str(tmp_path / "d.png")]) == 0
    out = capsys.readouterr().out
    assert "euler_maruyama" in out and "heun" in out and "2.000000" in out


@pytest.mark.parametrize("method,h", [("euler_maruyama", 0.04), ("heun", 0.04)])
def test_discrete_stationary_variance_formula(method, h):
    """The demo's 'scheme own var' is the fixed point of the scheme's variance recursion."""
    theta, sigma = 0.25, 1.0
    v = cli.ou_discrete_stationary_var(method, theta, sigma, h)
    a = theta * h
    if method == "euler_maruyama":
        nxt = (1 - a) ** 2 * v + sigma**2 * h
    else:
        nxt = (1 - a + a * a / 2) ** 2 * v + (1 - a / 2) ** 2 * sigma**2 * h
    assert nxt == pytest.approx(v, rel=1e-12)
