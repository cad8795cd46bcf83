"""Normals per second of this checkout's Gaussian transform against another revision's.

    python tools/ab_normals.py REV [--rounds R]

Loads ``fastsde/kernels/philox.py`` as it is at git revision ``REV`` beside the current
one, compiles both for the CPU the way the kernels do, and times the normals of the
kernel's lane loops (the kernel's lanes and vector width; the Philox words, then their
transform, where the revision has the two stages, else ``normal_block_*`` in one loop) on
one thread, interleaved, best of R rounds. It also says whether both give the same bits on
the first blocks (they must, unless RNG_VERSION differs).
"""

import argparse
import os
import sys
import time

import numba
import numpy as np
from numba import njit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastsde.kernels import bits, cpu, philox  # noqa: E402
from fastsde.kernels.target import compile_functions, module_functions  # noqa: E402
from revision import load_kernel_module  # noqa: E402

LANES = cpu.LANES[np.float32]
VECTOR_BITS = cpu.VECTOR_BITS
prefer_vector_width = cpu._prefer_vector_width


def compiled(module):
    return compile_functions(module, module_functions(module),
                             njit(inline="always", error_model="numpy"),
                             bits.cpu_primitives())


def make_loop(ns, dtype):
    two_stage = hasattr(ns, "block_words")
    if dtype == np.float32:
        normal_block = ns.normal_block_f32
        transform = ns.normals_f32 if two_stage else None
    else:
        normal_block = ns.normal_block_f64
        transform = ns.normals_f64 if two_stage else None
    words = ns.block_words if two_stage else None
    low_words = ns.block_low_words if two_stage else None
    f64 = dtype == np.float64

    @njit(error_model="numpy")
    def loop(n_blocks, k0, k1):
        prefer_vector_width(VECTOR_BITS)
        z = np.zeros(4 * LANES, dtype)
        w = np.zeros(8 * LANES, np.uint32)
        acc = np.zeros(LANES, dtype)
        for b in range(n_blocks):
            if two_stage:
                for lane in range(LANES):
                    w0, w1, w2, w3 = words(k0, k1, np.uint64(b), np.uint64(0), np.uint64(lane))
                    w[lane] = w0
                    w[LANES + lane] = w1
                    w[2 * LANES + lane] = w2
                    w[3 * LANES + lane] = w3
                    if f64:
                        v0, v1, v2, v3 = low_words(k0, k1, np.uint64(b), np.uint64(0),
                                                   np.uint64(lane))
                        w[4 * LANES + lane] = v0
                        w[5 * LANES + lane] = v1
                        w[6 * LANES + lane] = v2
                        w[7 * LANES + lane] = v3
                for lane in range(LANES):
                    if f64:
                        z0, z1, z2, z3 = transform(
                            np.uint64(w[lane]), np.uint64(w[LANES + lane]),
                            np.uint64(w[2 * LANES + lane]), np.uint64(w[3 * LANES + lane]),
                            np.uint64(w[4 * LANES + lane]), np.uint64(w[5 * LANES + lane]),
                            np.uint64(w[6 * LANES + lane]), np.uint64(w[7 * LANES + lane]))
                    else:
                        z0, z1, z2, z3 = transform(
                            np.uint64(w[lane]), np.uint64(w[LANES + lane]),
                            np.uint64(w[2 * LANES + lane]), np.uint64(w[3 * LANES + lane]))
                    z[lane] = z0
                    z[LANES + lane] = z1
                    z[2 * LANES + lane] = z2
                    z[3 * LANES + lane] = z3
            else:
                for lane in range(LANES):
                    z0, z1, z2, z3 = normal_block(k0, k1, np.uint64(b), np.uint64(0),
                                                  np.uint64(lane))
                    z[lane] = z0
                    z[LANES + lane] = z1
                    z[2 * LANES + lane] = z2
                    z[3 * LANES + lane] = z3
            for lane in range(LANES):
                acc[lane] += z[lane] + z[LANES + lane] + z[2 * LANES + lane] + z[3 * LANES + lane]
        return acc

    return loop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--blocks", type=int, default=50_000)
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    variants = {args.rev: compiled(load_kernel_module(args.rev, "philox")),
                "this checkout": compiled(philox)}
    loops = {}
    k0, k1 = np.uint64(0x1234), np.uint64(0x5678)
    for name, ns in variants.items():
        for dtype in (np.float32, np.float64):
            loops[(name, np.dtype(dtype).name)] = loop = make_loop(ns, dtype)
            loop(10, k0, k1)
    for dtype in ("float32", "float64"):
        a, b = (loops[(name, dtype)](64, k0, k1) for name in variants)
        print(f"# {dtype}: same sums over 64 blocks (the same bits): {np.array_equal(a, b)}")
    best = {}
    for _ in range(args.rounds):
        for key, loop in loops.items():
            start = time.perf_counter()
            loop(args.blocks, k0, k1)
            elapsed = time.perf_counter() - start
            best[key] = min(best.get(key, np.inf), elapsed / (args.blocks * LANES * 4) * 1e9)
    print("| dtype | transform | ns per normal (1 thread) | speed-up |")
    print("|---|---|---|---|")
    for dtype in ("float32", "float64"):
        base = best[(args.rev, dtype)]
        for name in variants:
            print(f"| {dtype} | {name} | {best[(name, dtype)]:.3f} | "
                  f"{base / best[(name, dtype)]:.2f} |")


if __name__ == "__main__":
    main()
