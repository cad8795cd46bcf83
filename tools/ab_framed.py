"""Framed kernels against the same kernels compiled as one ``run_chunk``, in one process.

    python tools/ab_framed.py [--rounds R] [--paths N] [--steps K] [--only WORDS]

A model's CPU kernel is merged from a frame shared by every model of its shape and the
model's step (``fastsde.kernels.cpu._framed_kernel``); the RNG-only ceiling and the
lane-block kernels are still one ``run_chunk`` with the step inlined by Numba. This
script builds both forms of the same kernel for several methods, noise kinds and outputs
(``cpu._frames`` patched to refuse frames for the second), and reports for each:

* the machine code of the kernel's entry function: how many lines of the two
  assemblies differ, symbol names and labels aside (0: the same instructions);
* path-steps/s of each, runs alternating, best of R rounds (this machine's noise is
  several percent between runs of one kernel);
* whether every output (final states, stored paths, statistics, observables,
  histograms, hitting times) is the same, bit for bit.
"""

import argparse
import difflib
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402
from fastsde.kernels import cpu  # noqa: E402


def ou(t, x, p, out):
    out[0] = -p[0] * x[0]


def ou_noise(t, x, p, out):
    out[0] = p[1]


def duffing(t, x, p, out):
    out[0] = x[1]
    out[1] = -x[0] - 0.1 * x[1] - 0.1 * x[0] * x[0] * x[0]


def duffing_noise(t, x, p, out):
    out[0] = 0.0
    out[1] = 0.3


def chain(t, x, p, out):
    out[0] = -x[0] + 0.1 * x[1]
    out[1] = -0.5 * x[1] + 0.2 * x[2]
    out[2] = -0.25 * x[2]


def chain_noise(t, x, p, out):
    out[0] = 0.2 * x[0]
    out[1] = 0.1 * x[1]
    out[2] = 0.3


def pair(t, x, p, out):
    out[0] = -x[0]
    out[1] = -0.5 * x[1]


def pair_noise(t, x, p, out):
    out[0, 0] = 0.2
    out[0, 1] = 0.1 * x[1]
    out[0, 2] = 0.05
    out[1, 0] = 0.0
    out[1, 1] = 0.3
    out[1, 2] = 0.1 * x[0]


def square(t, x, p):
    return x[0] * x[0]


def barrier(t, x, p):
    return x[0] - 1.5


def cases(n_paths):
    ou_model = fs.SDE(ou, ou_noise, 1, noise="additive", params=(1.0, 0.5))
    rows = np.column_stack([np.linspace(0.5, 1.5, n_paths), np.full(n_paths, 0.5)])
    return {
        "OU, Euler-Maruyama, float32, statistics at every step": (
            ou_model, 1.0, dict(method="euler_maruyama", dtype="float32", save_at=1,
                                stats=True)),
        "Duffing, Heun, float64, paths every 10 steps": (
            fs.SDE(duffing, duffing_noise, 2, noise="additive"), [1.0, 0.0],
            dict(method="heun", dtype="float64", save_at=10)),
        "diagonal 3-d, Milstein, float32, observable and histogram": (
            fs.SDE(chain, chain_noise, 3, noise="diagonal"), [1.0, 0.5, 0.2],
            dict(method="milstein", dtype="float32", observables={"square": square},
                 save_at=20, stats=True, histogram=dict(bins=50, range=(-3, 3)))),
        "general 2x3, DRI1, float64": (
            fs.SDE(pair, pair_noise, 2, noise="general", noise_dim=3), [1.0, 0.5],
            dict(method="dri1", dtype="float64")),
        "OU, Euler-Maruyama, float64, stop_when": (
            ou_model, 1.0, dict(method="euler_maruyama", dtype="float64",
                                stop_when=barrier)),
        "OU, SRA1, float32, a parameter row per path": (
            ou_model, 1.0, dict(method="sra1", dtype="float32", params=rows)),
    }


def _entry_asm(kernel):
    """The assembly of the kernel's entry function, names and labels made uniform."""
    framed = kernel.run_chunk is None
    lines, inside = [], False
    for line in kernel.library.get_asm_str().splitlines():
        head = line.rstrip()
        if head.endswith(":") and (("fastsde_kernel_" in head) if framed
                                   else re.match(r'^"?_ZN.*run_chunk', head)):
            inside = True
            continue
        if inside:
            if line.strip().startswith(".Lfunc_end"):
                break
            text = re.sub(r"#.*", "", line)
            text = re.sub(r"\.LBB\d+_\d+", "L", text)
            text = re.sub(r"\.LCPI\d+_\d+", "C", text)
            if text.strip():
                lines.append(text)
    return lines


def _outputs(result):
    arrays = [getattr(result, name, None) for name in
              ("x", "paths", "mean", "var", "hit_times", "histogram")]
    arrays += list((getattr(result, "observables", None) or {}).values())
    return [a for a in arrays if isinstance(a, np.ndarray)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--only", default="", help="run the cases whose name has this word")
    args = ap.parse_args(argv)
    frames = cpu._frames
    print(f"# framed kernel / run_chunk kernel, {args.paths} paths x {args.steps} steps, "
          f"{os.environ.get('NUMBA_NUM_THREADS', 'all')} threads, best of {args.rounds}")
    print("| case | entry's assembly lines | lines differing | framed / run_chunk "
          "path-steps/s | run_chunk path-steps/s | same bits |")
    print("|---|---:|---:|---:|---:|---|")
    for label, (model, x0, options) in cases(args.paths).items():
        if args.only and args.only not in label:
            continue
        tables, results, best, asm = {}, {}, {}, {}
        for framed in (True, False):
            cpu._frames = frames if framed else (lambda *a: False)
            cpu._KERNELS.clear()
            try:
                results[framed] = fs.simulate(model, x0, (0.0, 1.0), args.steps,
                                              args.paths, device="cpu", seed=5,
                                              progress=False, **options)
            finally:
                cpu._frames = frames
            tables[framed] = dict(cpu._KERNELS)
            (kernel,) = tables[framed].values()
            asm[framed] = _entry_asm(kernel)
            best[framed] = float("inf")
        for r in range(args.rounds):
            for framed in ((True, False) if r % 2 == 0 else (False, True)):
                cpu._KERNELS.clear()
                cpu._KERNELS.update(tables[framed])
                results[framed] = fs.simulate(model, x0, (0.0, 1.0), args.steps,
                                              args.paths, device="cpu", seed=5,
                                              progress=False, **options)
                best[framed] = min(best[framed], results[framed].elapsed_s)
        cpu._KERNELS.clear()
        changed = [line for line in difflib.unified_diff(asm[False], asm[True], lineterm="",
                                                         n=0)
                   if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        a, b = _outputs(results[True]), _outputs(results[False])
        same = len(a) == len(b) and all(np.array_equal(u, v, equal_nan=True)
                                        for u, v in zip(a, b))
        rate = args.paths * args.steps / best[False]
        print(f"| {label} | {len(asm[True])} / {len(asm[False])} | {len(changed)} | "
              f"{best[False] / best[True]:.3f} | {rate:.3e} | {same} ({len(a)} arrays) |",
              flush=True)


if __name__ == "__main__":
    main()
