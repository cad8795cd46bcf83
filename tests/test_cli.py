import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastsde
from fastsde import cli
from fastsde.models import OU

#: Small runs of the model the other tests use (OU, Euler-Maruyama, float64, CPU).
SMALL = ["run", "--model", "ou", "--paths", "1000", "--steps", "10", "--device", "cpu",
         "--seed", "3"]


def _main(argv):
    """cli.main's exit status, also when argparse exits."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def no_simulate(monkeypatch):
    """Fail a test whose bad flag reaches simulate instead of being refused before."""
    def boom(*args, **kwargs):
        raise AssertionError("simulate was called")

    monkeypatch.setattr(cli, "simulate", boom)


def test_run_json(capsys):
    assert cli.main(["run", "--model", "ou", "--paths", "2000", "--steps", "50", "--json",
                     "--device", "cpu", "--stats", "--save-at", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_paths"] == 2000 and out["method"] == "euler_maruyama"
    assert len(out["t"]) == 6 and len(out["mean"]) == 6


def test_run_bad_argument_is_reported(capsys):
    assert cli.main(["run", "--paths", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsde run: error: --paths must be >= 1") and "n_paths" not in err


DEMO_SMALL = ["demo", "--paths", "20000", "--steps", "200", "--t1", "40", "--device", "cpu"]


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_small(capsys, tmp_path):
    png = tmp_path / "d.png"
    assert cli.main(DEMO_SMALL + ["--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "euler_maruyama" in out and "heun" in out and "2.000000" in out
    pytest.importorskip("matplotlib")
    assert f"wrote {png}" in out and _is_png(png)


def test_demo_figure_is_drawn_here_when_its_process_fails(capsys, tmp_path, monkeypatch):
    """The figure process cannot start Python (it exits at once, before any answer):
    this process draws the figure itself, from the same data."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(cli.sys, "executable", "/bin/false")
    png = tmp_path / "d.png"
    assert cli.main(DEMO_SMALL + ["--png", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out and _is_png(png)


def _figure_pixels(layout, data, path, blit=True, over=None):
    """The demo's figure for ``data`` as its figure process writes it (drawn over the
    background made before the data; ``over`` replaces the artists drawn over the data),
    or as a full draw of the same figure (``blit=False``); RGBA pixels, shape (440, 1210, 4)."""
    from matplotlib.image import imread

    from fastsde import _demo_figure as demo_figure

    drawing = demo_figure.draw(layout)
    if blit:
        drawing.draw_background()
        if over is not None:
            drawing.over = over(drawing)
        demo_figure.finish(drawing, {**layout, "png": str(path)}, data)
    else:
        for line, values in zip(drawing.paths, data["paths"].T):
            line.set_ydata(values)
        drawing.histogram.set_data(data["density"], data["edges"])
        for artist in drawing.canvas.figure.findobj():
            artist.set_animated(False)
        drawing.canvas.figure.savefig(path, dpi=demo_figure.DPI)
    return imread(path)


def test_demo_figure_drawn_over_its_background_is_the_full_drawing(tmp_path):
    """The figure process draws everything but the run's data before the data comes and
    the data's artists over it afterwards: the picture is savefig's of the same figure,
    pixel for pixel. Without the legends drawn last (the data then covers them) it is
    not."""
    pytest.importorskip("matplotlib")
    model = OU(theta=0.25, sigma=1.0)
    layout = cli._demo_figure_layout(model, 40.0, 200, 20000, None)
    rng = np.random.default_rng(0)
    grid = layout["grid"]
    density, edges = np.histogram(rng.normal(0.0, np.sqrt(model.stationary_var), 20000),
                                  bins=200, range=(grid[0], grid[-1]), density=True)
    data = dict(paths=np.cumsum(rng.normal(0.0, 0.15, (201, 60)), axis=0), density=density,
                edges=edges)
    full = _figure_pixels(layout, data, tmp_path / "full.png", blit=False)
    blit = _figure_pixels(layout, data, tmp_path / "blit.png")
    assert full.shape == blit.shape == (440, 1210, 4)
    differ = np.abs(blit - full).max(axis=2) > 0
    assert not differ.any(), f"{differ.sum()} pixels differ from a full draw"
    no_legends = _figure_pixels(layout, data, tmp_path / "no_legends.png",
                                over=lambda d: [a for a in d.over if "Legend" not in
                                                type(a).__name__])
    assert (np.abs(no_legends - full).max(axis=2) > 0).sum() > 100


def test_the_figure_process_does_not_import_fastsde():
    """The figure process runs fastsde/_demo_figure.py as a script: it imports matplotlib
    and numpy, not fastsde (whose import cost it 0.07-0.1 s of a second run's second)."""
    from fastsde import _demo_figure

    code = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastsde', 'numba')))")
    out = subprocess.run([sys.executable, "-c", code, _demo_figure.__file__], cwd="/",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_demo_ends_its_figure_process_when_the_run_fails(capsys, monkeypatch):
    """A run that fails after the figure process started (here every simulate call)
    reports the error and leaves no process behind."""
    made = []
    init = cli._FigureProcess.__init__

    def recording_init(self, layout):
        init(self, layout)
        made.append(self)

    def failing_simulate(*args, **kwargs):
        raise ValueError("n_paths: refused for this test")

    monkeypatch.setattr(cli._FigureProcess, "__init__", recording_init)
    monkeypatch.setattr(cli, "simulate", failing_simulate)
    assert cli.main(DEMO_SMALL) == 2
    assert "refused for this test" in capsys.readouterr().err
    assert len(made) == 1 and made[0].process.poll() is not None


def test_demo_without_matplotlib_says_so(capsys, tmp_path, monkeypatch):
    """A matplotlib that cannot be imported in the figure process: no figure, and the
    demo says how to get one."""
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(fake.parent), os.path.dirname(os.path.dirname(cli.__file__))]))
    png = tmp_path / "d.png"
    assert cli.main(DEMO_SMALL + ["--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and not png.exists()


def _demo_table(out):
    """The demo's rows, without the throughput column (which varies run to run)."""
    return [line.split()[:5] for line in out.splitlines()
            if line.startswith(("euler_maruyama ", "heun "))]


def test_demo_compiles_its_second_kernel_in_a_second_process(capsys, tmp_path):
    """With an empty disk cache the demo compiles Heun's kernel in a second process while
    it compiles Euler-Maruyama's, then loads it: the table is the one this process prints
    with both kernels its own. With the cache filled, no second process is started."""
    argv = ["demo", "--paths", "20000", "--steps", "200", "--t1", "40", "--device", "cpu",
            "--no-plot"]
    assert cli.main(argv) == 0
    here = capsys.readouterr().out
    assert "second process" not in here  # this process holds both kernels (or the cache)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-m", "fastsde"] + argv, env=env,
                           capture_output=True, text=True, timeout=900) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    first, second = runs[0].stdout, runs[1].stdout
    assert ("the heun kernel compiled in a second process while this one compiled "
            "euler_maruyama's (exit status 0)") in first, first
    assert "second process" not in second, second
    assert len(_demo_table(here)) == 2
    assert _demo_table(first) == _demo_table(here) == _demo_table(second)


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


def test_observable_and_histogram_match_the_python_api(capsys):
    argv = SMALL + ["--observable", "call=max(x[0] - 1, 0)", "--observable", "sq=x[0]**2",
                    "--histogram", "8:-1:3"]
    assert cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = fastsde.simulate(OU(theta=1.0, sigma=0.5), 1.0, (0.0, 1.0), 10, 1000,
                           device="cpu", seed=3,
                           observables={"call": lambda t, x, p: max(x[0] - 1.0, 0.0),
                                        "sq": lambda t, x, p: x[0] ** 2},
                           histogram=dict(bins=8, range=(-1.0, 3.0)))
    for name in ("call", "sq"):
        want = res.estimate(name)
        got = out["estimates"][name]
        assert want.value > 0 and want.se > 0
        assert (got["value"], got["se"], tuple(got["ci"]), got["n"]) == \
            (want.value, want.se, want.ci, want.n)
    hist = out["histogram"]
    assert hist["counts"] == res.histogram.counts[-1].tolist()
    assert hist["below"] == res.histogram.below[-1].tolist()
    assert hist["above"] == res.histogram.above[-1].tolist()
    assert sum(hist["counts"][0]) + hist["below"][0] + hist["above"][0] == 1000
    # The text form prints the same numbers (the kernel is cached: no second compile).
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    e = res.estimate("call")
    assert f"call at t = 1: {e.value:.6g} (SE {e.se:.3g}, 95% CI [{e.ci[0]:.6g}, " \
           f"{e.ci[1]:.6g}], n 1000)" in text
    counts = " ".join(str(c) for c in res.histogram.counts[-1, 0])
    assert f"x[0]: below {res.histogram.below[-1, 0]}  counts {counts}  above " \
           f"{res.histogram.above[-1, 0]}" in text


def test_observable_expression_is_compiled_safely():
    model = OU(theta=1.0, sigma=0.5)
    name, fn = cli.parse_observable("v = exp(x[0]) + math.sqrt(p[1]) * pi + (t > 0.5)",
                                    model)
    assert name == "v"
    # Plain Python, with nothing in its globals beyond math and three builtins.
    assert set(fn.__globals__) == {"math", "__builtins__"}
    assert set(fn.__globals__["__builtins__"]) == {"abs", "min", "max"}
    x, p = np.array([0.3]), model.params
    assert fn(1.0, x, p) == np.exp(0.3) + np.sqrt(0.5) * np.pi + 1.0
    assert fn(0.0, x, p) == np.exp(0.3) + np.sqrt(0.5) * np.pi
    # Integers are floats in the generated code, as in the kernel: 2**-1 is 0.5.
    assert cli.parse_observable("h=2**-1 + x[-1]", model)[1](0.0, x, p) == 0.8


@pytest.mark.parametrize("text,why", [
    ("call", "missing '='"),
    ("1st=x[0]", "not a valid identifier"),
    ("for=x[0]", "not a valid identifier"),
    ("hit_time=x[0]", "reserved"),
    ("s=x[0] +", "syntax error"),
    ("s=y[0]", "unknown name 'y'"),
    ("s=open('f')", "'open' is not an allowed function"),
    ("s=x.shape", "attribute 'x.shape' is not allowed"),
    ("s=x[0].__class__", "is not allowed"),
    ("s=(lambda: 1)()", "is not an allowed function"),
    ("s=x", "x must be indexed"),
    ("s=x[1]", "out of range"),
    ("s=p[2]", "out of range"),
    ("s=x[t]", "integer constant index"),
    ("s='text'", "numbers only"),
    ("s=[x[0]]", "List"),
    ("s=exp(x[0], 2)", "takes exactly one argument"),
])
def test_bad_observable_is_refused(capsys, no_simulate, text, why):
    assert _main(SMALL + ["--observable", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsde run: error: argument --observable: ")
    assert repr(text) in err and why in err and "expected NAME=EXPR" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_duplicate_observable_name_is_refused(capsys, no_simulate):
    assert _main(SMALL + ["--observable", "a=x[0]", "--observable", "a = t"]) == 2
    err = capsys.readouterr().err
    assert "--observable: 'a = t': NAME 'a' is given twice (first as 'a=x[0]')" in err


def test_observable_numba_cannot_compile_is_refused(capsys):
    # math.ulp passes the syntax check and runs in Python, but Numba (0.68 at least) has
    # no implementation of it; the kernel's compile error is reported against the flag.
    assert _main(SMALL + ["--observable", "u=math.ulp(x[0])"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsde run: error: argument --observable: 'u=math.ulp(x[0])': "
                          "Numba cannot compile it (")
    assert "ulp" in err and "expected NAME=EXPR" in err and "Traceback" not in err


@pytest.mark.parametrize("text,why", [
    ("10", "1 field instead of 3"),
    ("10:0:1:2", "4 fields instead of 3"),
    ("ten:0:1", "BINS must be an integer"),
    ("2.5:0:1", "BINS must be an integer"),
    ("0:0:1", "BINS must be an integer"),
    ("10:a:1", "LO and HI must be finite"),
    ("10:0:inf", "LO and HI must be finite"),
    ("10:nan:1", "LO and HI must be finite"),
    ("10:1:1", "LO must be < HI"),
    ("10:2:-1", "LO must be < HI"),
])
def test_bad_histogram_is_refused(capsys, no_simulate, text, why):
    assert _main(SMALL + ["--histogram", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastsde run: error: argument --histogram: {text!r}: {why}")


def _option_help(help_text, option):
    """The help block of ``option`` in argparse's output, whitespace collapsed."""
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines)
                 if ln.startswith("  " + option + " ") or ln == "  " + option
                 or ln.startswith("  " + option + ","))
    block = [lines[start]]
    for ln in lines[start + 1:]:
        if not ln.startswith("   "):  # options start at column 2, their help further in
            break
        block.append(ln)
    return " ".join(" ".join(block).split())


@pytest.mark.parametrize("command", ["run", "demo"])
def test_help_shows_every_default(capsys, command):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else \
            "{" + ",".join(action.choices) + "}"
        block = _option_help(text, name)
        assert "(default: " in block, block
        if action.default is not None:
            shown = ",".join(map(str, action.default)) if isinstance(action.default, list) \
                else str(action.default)
            assert f"(default: {shown})" in block, block
    if command == "run":
        model = _option_help(text, "--model")
        # Which parameter each built-in model takes from which flag.
        assert "bm = BrownianMotion, dX = sigma dW, p = (--sigma,)" in model
        assert "ou = OU, dX = -theta X dt + sigma dW, p = (--theta, --sigma)" in model
        assert "(default: 0.5)" in _option_help(text, "--sigma")


@pytest.mark.parametrize("extra,message", [
    (["--steps", "0"], "--steps must be >= 1; got 0"),
    (["--save-at", "3"], "--save-at K must divide --steps=10"),
    (["--dim", "0"], "--dim must be >= 1"),
    (["--sigma", "-1"], "--sigma must be >= 0"),
    (["--t1", "nan"], "--t1 must be a finite number"),
    (["--t1", "0"], "--t1 must be > --t0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--paths-per-task", "512"], "--paths-per-task applies only with --dask"),
])
def test_errors_name_the_flags(capsys, no_simulate, extra, message):
    assert _main(SMALL + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastsde run: error: {message}")


def test_library_errors_are_reported_with_flag_names(capsys):
    # A step too small to advance time is found by simulate itself, whose message names
    # its own arguments (t_span, n_steps): the CLI rewrites them as flags.
    assert _main(SMALL + ["--t0", "1", "--t1", "1.0000000000000002"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastsde run: error: (--t0, --t1)=(1.0, 1.0000000000000002) with "
                          "--steps=10 gives a step")
    assert "n_steps" not in err and "t_span" not in err


def test_cli_names():
    assert cli.cli_names("save_at as an int K must divide n_steps=10; n_paths=5, x0 bad") \
        == "--save-at as an int K must divide --steps=10; --paths=5, --x0 bad"
    # Only whole names: not parts of other words, not quoted keys.
    assert cli.cli_names("my_n_steps, 'n_paths', n_steps2") == "my_n_steps, 'n_paths', n_steps2"
