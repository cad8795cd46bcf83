"""Whether a change to fastsde/kernels/fmath.py kept a function's bits: the function of a
git revision (or of a file: tools/revision.py loads it) against the working tree's, both
compiled for the CPU as the kernels compile them, on every float32 input or, for float64,
on dense sweeps.

    python tools/fmath_same_bits.py REV exp_f64 [exp_f32 ...]

float32: all 2^32 bit patterns (NaNs included). float64: every double within 2^22 ulps of
each boundary constant named on the command line with --around (default: the
exponential's overflow and underflow thresholds and clamp bounds), 2^24 uniform
arguments on each side beyond them, 8 x 2^24 uniform on [-800, 800] and 8 x 2^24
log-uniform magnitudes from the smallest subnormal to 1e308 with both signs, the special
values and 2^21 NaN payloads. Prints the count of differing results per set (with a few
of them) and exits 1 if any differ.
"""

import argparse
import os
import sys

import numpy as np
from numba import njit, prange

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from fastsde.kernels import bits, fmath  # noqa: E402
from fastsde.kernels.target import compile_functions  # noqa: E402
from revision import load_kernel_module  # noqa: E402


def runner(module, name):
    fn = getattr(compile_functions(module, module.FUNCTIONS, njit(error_model="numpy"),
                                   bits.cpu_primitives()), name)

    @njit(parallel=True, error_model="numpy")
    def run(x, out):
        for i in prange(x.size):
            out[i] = fn(x[i])
    return run


def compare(run_a, run_b, x, label):
    a, b = np.empty_like(x), np.empty_like(x)
    run_a(x, a)
    run_b(x, b)
    as_int = np.int32 if x.dtype == np.float32 else np.int64
    differ = np.flatnonzero(a.view(as_int) != b.view(as_int))
    print(f"{label}: {x.size} arguments, {differ.size} differ", flush=True)
    for i in differ[:5]:
        print(f"  x = {x[i]!r}: {a[i]!r} before, {b[i]!r} now")
    return differ.size


def float32_sets():
    step = 2**28
    for start in range(0, 2**32, step):
        yield (f"float32 bit patterns {start:#x}..{start + step - 1:#x}",
               np.arange(start, start + step, dtype=np.uint64).astype(np.uint32)
               .view(np.float32))


def float64_sets(around):
    rng = np.random.default_rng(0)
    for c in around:
        base = np.float64(c).view(np.int64)
        yield (f"within 2^22 ulps of {c!r}",
               (base + np.arange(-2**22, 2**22, dtype=np.int64)).view(np.float64))
    top, bottom = max(around), min(around)
    yield f"uniform beyond {top!r}", rng.uniform(top, top + 1.0, 2**24)
    yield f"uniform below {bottom!r}", rng.uniform(bottom - 1.0, bottom, 2**24)
    for rep in range(8):
        yield f"uniform on [-800, 800] #{rep}", rng.uniform(-800.0, 800.0, 2**24)
        magnitude = np.exp(rng.uniform(np.log(5e-324), np.log(1e308), 2**24))
        yield f"log-uniform magnitudes #{rep}", magnitude * rng.choice([-1.0, 1.0], 2**24)
    yield "special values", np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324,
                                      -5e-324, 2.2250738585072014e-308, 1e308, -1e308,
                                      1.7976931348623157e308, -1.7976931348623157e308])
    payloads = (np.int64(0x7FF0000000000001) + rng.integers(0, 2**51, 2**20)).view(np.float64)
    yield "NaN payloads", np.concatenate([payloads, -payloads])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("names", nargs="+", help="fmath functions of one argument (exp_f64, ...)")
    ap.add_argument("--around", default=None, help="comma list of float64 boundary "
                    "constants (default: F64_EXP_MAX, F64_EXP_MIN, F64_EXP_HI, F64_EXP_LO)")
    args = ap.parse_args(argv)
    before = load_kernel_module(args.rev, "fmath")
    if args.around:
        around = [float(v) for v in args.around.split(",")]
    else:
        around = [fmath.F64_EXP_MAX, fmath.F64_EXP_MIN, fmath.F64_EXP_HI, fmath.F64_EXP_LO]
    total = 0
    for name in args.names:
        print(f"# {name}: {args.rev} against the working tree", flush=True)
        run_before, run_now = runner(before, name), runner(fmath, name)
        sets = float32_sets() if name.endswith("_f32") else float64_sets(around)
        for label, x in sets:
            total += compare(run_before, run_now, x, label)
    print(f"# {total} results differ")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
