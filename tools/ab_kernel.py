"""The CPU kernel of this checkout against another revision's, side by side in one process.

    python tools/ab_kernel.py REV [--rounds R] [--paths N] [--dtype float32]

Loads ``fastsde/kernels/cpu.py`` as it is at git revision ``REV`` (or the file REV) beside
the current one
(the rest of the package is this checkout's), and runs the runner's OU problem (theta = 1,
sigma = 0.5, X0 = 1, t in [0, 1], 1000 Euler-Maruyama steps, final state only) through
``fastsde.simulate`` with each kernel and with vectorised numpy, alternating within each
round, best of R rounds. Prints path-steps/s, the ratio to numpy and whether the two
kernels gave the same final states (they must: a kernel change is not a stream change).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import fastsde  # noqa: E402
import fastsde.kernels  # noqa: E402
from fastsde.kernels import cpu  # noqa: E402
import run as runner  # noqa: E402
from revision import load_kernel_module  # noqa: E402


def _accepting_current_arguments(module):
    """``module`` with a ``get_kernel`` and a ``check_scratch`` that drop the arguments
    this checkout's api passes and an older revision's do not take (``per_path_params``;
    check_scratch's ``model``), so the two kernels can be compared."""
    import inspect
    import types

    accepted = inspect.signature(module.get_kernel).parameters
    n_scratch_args = len(inspect.signature(module.check_scratch).parameters)
    if "per_path_params" in accepted and n_scratch_args >= 3:
        return module
    wrapper = types.ModuleType(module.__name__)
    wrapper.__dict__.update(module.__dict__)

    def get_kernel(*args, **kwargs):
        return module.get_kernel(*args, **{k: v for k, v in kwargs.items()
                                           if k in accepted})

    def check_scratch(*args):
        return module.check_scratch(*args[:n_scratch_args])
    wrapper.get_kernel = get_kernel
    wrapper.check_scratch = check_scratch
    return wrapper


def with_backend(module, engine):
    """``engine`` run with ``module`` as fastsde's CPU backend."""
    module = _accepting_current_arguments(module)

    def run():
        previous = fastsde.kernels.cpu
        fastsde.kernels.cpu = module
        try:
            return engine()
        finally:
            fastsde.kernels.cpu = previous
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--paths", type=int, default=10**6)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--rng-only", action="store_true",
                    help="time the RNG-only ceiling kernels instead")
    args = ap.parse_args(argv)
    n, dtype = args.paths, args.dtype
    other = load_kernel_module(args.rev, "cpu")
    engines = {
        "numpy": runner.engine_numpy(n, dtype),
        args.rev: with_backend(other, runner.engine_fastsde(n, dtype, args.rng_only)),
        "this checkout": with_backend(cpu, runner.engine_fastsde(n, dtype, args.rng_only)),
    }
    times, outs = runner.best_of_interleaved(list(engines.values()), args.rounds)
    print(f"# {dtype}, {n:.0e} paths x {runner.STEPS} steps"
          f"{', RNG-only ceiling' if args.rng_only else ''}; best of {args.rounds} rounds")
    print(f"# same final states: {np.array_equal(outs[1], outs[2])}")
    print("| kernel | path-steps/s | x numpy |")
    print("|---|---|---|")
    for name, t in zip(engines, times):
        print(f"| {name} | {n * runner.STEPS / t:.3e} | {times[0] / t:.2f} |")


if __name__ == "__main__":
    main()
