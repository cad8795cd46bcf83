#!/usr/bin/env python
"""Where a new model's first result spends its compile time, per compiled function.

Runs one ``fs.simulate`` of bench/first_result.py's model (the README's damped
oscillator, 1000 paths x 100 steps) in this process and listens to Numba's compile
events: for every function Numba compiles it reports the time spent in it exclusive of
the functions it compiles in turn (typing another dispatcher's call compiles that one
first), how much of that is under the LLVM lock (optimisation and code generation) and
how many times it was compiled. Use an empty
cache to see a new user's first run::

    NUMBA_CACHE_DIR=$(mktemp -d) python tools/compile_profile.py [--dtype float32]
        [--method heun] [--top 20] [--demo | --mlp 3-16-8-2 [--activation tanh]]

``--mlp`` profiles a network's flow instead (fs.MLPField of those widths, random weights,
Euler steps on 1000 paths): the kernel with the lane-block forward pass.
"""

import argparse
import os
import sys
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--method", default="euler_maruyama")
    p.add_argument("--top", type=int, default=20, help="rows to print (20)")
    p.add_argument("--demo", action="store_true",
                   help="profile the kernels of `fastsde demo` instead (OU, float32, "
                        "stats, Euler-Maruyama then Heun; small sizes)")
    p.add_argument("--mlp", default=None, metavar="WIDTHS",
                   help="profile an MLPField flow of these widths (e.g. 3-16-8-2: input "
                        "d + 1, output d) instead of the oscillator")
    p.add_argument("--activation", default="tanh",
                   help="the network's activation with --mlp (tanh)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    from numba.core import event

    stack = []  # [name, start, child time, llvm time]
    exclusive = defaultdict(float)
    llvm = defaultdict(float)
    count = defaultdict(int)
    llvm_start = []

    def name_of(ev):
        disp = (ev.data or {}).get("dispatcher")
        fn = getattr(disp, "py_func", None)
        name = getattr(fn, "__qualname__", repr(disp)) if fn else repr(disp)
        # A framed kernel's frame and step merged and optimised by LLVM
        # (fastsde.kernels.cpu._framed_kernel), announced as a compile of the frame.
        stage = (ev.data or {}).get("fastsde_stage")
        return f"{stage} of {name}" if stage else name

    class Compile(event.Listener):
        def on_start(self, ev):
            stack.append([name_of(ev), time.perf_counter(), 0.0])

        def on_end(self, ev):
            name, start, child = stack.pop()
            spent = time.perf_counter() - start
            exclusive[name] += spent - child
            count[name] += 1
            if stack:
                stack[-1][2] += spent

    class Llvm(event.Listener):
        def on_start(self, ev):
            llvm_start.append(time.perf_counter())

        def on_end(self, ev):
            spent = time.perf_counter() - llvm_start.pop()
            if not llvm_start:
                llvm[stack[-1][0] if stack else "(outside a compile)"] += spent

    event.register("numba:compile", Compile())
    event.register("numba:llvm_lock", Llvm())

    import numpy as np

    import fastsde as fs

    t_import = time.perf_counter() - t0

    # The model of bench/first_result.py, from its source, so that both time one model.
    from first_result import MODEL_SOURCE

    functions = {}
    exec(compile(MODEL_SOURCE, "<first_result model>", "exec"), functions)
    osc = fs.SDE(functions["drift"], functions["diffusion"], dim=2, noise="diagonal",
                 params=(1.0, 0.1, 0.3), name="oscillator")
    t1 = time.perf_counter()
    if args.mlp:
        widths = [int(w) for w in args.mlp.split("-")]
        rng = np.random.default_rng(1)
        layers = [(rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in)), rng.normal(0, 0.1, n_out))
                  for n_in, n_out in zip(widths[:-1], widths[1:])]
        flow = fs.MLPField(layers, args.activation).ode()
        res = fs.simulate(flow, x0=fs.Normal(0.0, 1.0), t_span=(0.0, 1.0), n_steps=10,
                          n_paths=1000, method="euler", dtype=args.dtype, seed=0,
                          progress=False)
    elif args.demo:
        for method in ("euler_maruyama", "heun"):
            res = fs.simulate(fs.OU(theta=0.25, sigma=1.0), 0.0, (0.0, 40.0), 100, 1000,
                              method=method, dtype="float32", seed=0, stats=True,
                              progress=False)
    else:
        res = fs.simulate(osc, x0=[1.0, 0.0], t_span=(0.0, 10.0), n_steps=100, n_paths=1000,
                      method=args.method, dtype=args.dtype, seed=0, progress=False)
    t_first = time.perf_counter() - t1
    assert args.demo or np.all(np.isfinite(res.x))
    total = sum(exclusive.values())
    print(f"import fastsde {t_import:.2f} s; first simulate {t_first:.2f} s, of which "
          f"compiling {total:.2f} s (LLVM {sum(llvm.values()):.2f} s)")
    print(f"{'function':60s} {'exclusive s':>11s} {'LLVM s':>7s} {'compiles':>8s}")
    for name in sorted(exclusive, key=exclusive.get, reverse=True)[:args.top]:
        print(f"{name[:60]:60s} {exclusive[name]:11.2f} {llvm.get(name, 0.0):7.2f} "
              f"{count[name]:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
