"""Statistical battery for fastsde's normals and Philox words (not part of CI).

    python bench/battery.py [--normals 1e9] [--dtype float32|float64|both] [--out FILE]

Draws normals exactly as the kernels do (stream 0, numbers q = 0..n_per_path-1 of many
paths) and reports, against theory: mean, variance, skewness and excess kurtosis with
their standard errors; a binned Kolmogorov-Smirnov distance and a chi-square of the
histogram (65,536 equal bins on [-6, 6], exact bin probabilities); Anderson-Darling on a
10^6 subsample; serial correlations at lags 1-8 and correlations across adjacent paths;
frequencies beyond 3, 4, 5 sigma against 2 (1 - Phi(k)); and for the raw 32-bit words a
byte-level chi-square and Marsaglia's birthday-spacings test. Writes a markdown report.
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time

import numba
import numpy as np
from numba import njit, prange
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastsde import streams  # noqa: E402
from fastsde.kernels import philox  # noqa: E402
from fastsde.kernels.cpu import _rng  # noqa: E402

philox4x32_10 = _rng.philox4x32_10

N_BINS = 65536
LO, HI = -6.0, 6.0
LAGS = 8


def make_normal_pass(block_fn):
    @njit(parallel=True)
    def normal_pass(k0, k1, n_paths, blocks_per_path, moments, hist, tails, lagsum, crosssum):
        """Per path: moments, histogram, tail counts, lagged products, product with the next
        path's number of the same index (partial sums per path, merged on the host)."""
        scale = N_BINS / (HI - LO)
        for i in prange(n_paths):
            path = np.uint64(i)
            nxt = np.uint64(i + 1)
            s1 = s2 = s3 = s4 = 0.0
            prev = np.zeros(LAGS, np.float64)
            lag = np.zeros(LAGS, np.float64)
            cross = 0.0
            t3 = t4 = t5 = 0
            for b in range(blocks_per_path):
                z = block_fn(k0, k1, np.uint64(b), np.uint64(0), path)
                w = block_fn(k0, k1, np.uint64(b), np.uint64(0), nxt)
                for m in range(4):
                    v = np.float64(z[m])
                    s1 += v
                    v2 = v * v
                    s2 += v2
                    s3 += v2 * v
                    s4 += v2 * v2
                    a = abs(v)
                    t3 += a > 3.0
                    t4 += a > 4.0
                    t5 += a > 5.0
                    k = int((v - LO) * scale)
                    if k < 0:
                        k = 0
                    elif k >= N_BINS:
                        k = N_BINS - 1
                    hist[i % hist.shape[0], k] += 1
                    for L in range(LAGS):
                        lag[L] += v * prev[L]
                    for L in range(LAGS - 1, 0, -1):
                        prev[L] = prev[L - 1]
                    prev[0] = v
                    cross += v * np.float64(w[m])
            moments[i, 0] = s1
            moments[i, 1] = s2
            moments[i, 2] = s3
            moments[i, 3] = s4
            tails[i, 0] = t3
            tails[i, 1] = t4
            tails[i, 2] = t5
            for L in range(LAGS):
                lagsum[i, L] = lag[L]
            crosssum[i] = cross

    return normal_pass


@njit(parallel=True)
def byte_counts(k0, k1, n_blocks, counts):
    for c in prange(counts.shape[0]):
        per = n_blocks // counts.shape[0]
        for b in range(c * per, (c + 1) * per):
            w = philox4x32_10(np.uint64(b), np.uint64(0), np.uint64(c), np.uint64(0),
                                   k0, k1)
            for m in range(4):
                x = w[m]
                for s in range(4):
                    counts[c, (x >> np.uint64(8 * s)) & np.uint64(255)] += 1


@njit(parallel=True)
def birthday_spacings(k0, k1, n_trials, m, out):
    """Marsaglia: m birthdays in 2^24 days (top 24 bits of words); count repeated spacings."""
    for trial in prange(n_trials):
        days = np.empty(m, np.int64)
        for j in range(m // 4):
            w = philox4x32_10(np.uint64(j), np.uint64(1), np.uint64(trial), np.uint64(0),
                                   k0, k1)
            for q in range(4):
                days[4 * j + q] = np.int64(w[q] >> np.uint64(8))
        days.sort()
        sp = np.empty(m, np.int64)
        sp[0] = days[0]
        for j in range(1, m):
            sp[j] = days[j] - days[j - 1]
        sp.sort()
        dup = 0
        for j in range(1, m):
            if sp[j] == sp[j - 1]:
                dup += 1
        out[trial] = dup


def run_normals(dtype, n_normals, seed, lines):
    block_fn = _rng.normal_block_f32 if dtype == "float32" else _rng.normal_block_f64
    n_paths = 4096
    blocks_per_path = max(1, int(n_normals) // (4 * n_paths))
    n = n_paths * blocks_per_path * 4
    k0, k1 = streams.key_from_seed(seed)
    moments = np.zeros((n_paths, 4))
    hist = np.zeros((n_paths, N_BINS), np.int64)
    tails = np.zeros((n_paths, 3), np.int64)
    lagsum = np.zeros((n_paths, LAGS))
    crosssum = np.zeros(n_paths)
    start = time.perf_counter()
    make_normal_pass(block_fn)(k0, k1, n_paths, blocks_per_path, moments, hist, tails, lagsum,
                               crosssum)
    elapsed = time.perf_counter() - start
    s = moments.sum(axis=0)
    mean = s[0] / n
    var = s[1] / n - mean**2
    m3 = s[2] / n - 3 * mean * s[1] / n + 2 * mean**3
    m4 = s[3] / n - 4 * mean * s[2] / n + 6 * mean**2 * s[1] / n - 3 * mean**4
    skew = m3 / var**1.5
    kurt = m4 / var**2 - 3.0
    h = hist.sum(axis=0)
    edges = np.linspace(LO, HI, N_BINS + 1)
    cdf = stats.norm.cdf(edges)
    p = np.diff(cdf)
    p[0] += cdf[0]
    p[-1] += 1 - cdf[-1]
    emp = np.cumsum(h) / n
    ks_d = np.max(np.abs(emp - cdf[1:]))
    ks_p = stats.kstwo.sf(ks_d, n) if n < 1e7 else math.exp(-2 * n * ks_d**2) * 2
    expected = n * p
    keep = expected >= 5
    chi2 = np.sum((h[keep] - expected[keep]) ** 2 / expected[keep])
    dof = int(keep.sum()) - 1
    chi2_p = stats.chi2.sf(chi2, dof)
    sub = streams.normals(seed + 1, np.repeat(np.arange(1000), 1000),
                          np.tile(np.arange(1000), 1000), dtype=dtype)
    ad = stats.anderson(sub.astype(np.float64), "norm")
    lag_r = lagsum.sum(axis=0) / (n - np.arange(1, LAGS + 1) * n_paths)
    cross_r = crosssum.sum() / n
    tail_obs = tails.sum(axis=0)
    lines.append(f"### {dtype} normals: {n:,} ({n_paths} paths x {blocks_per_path * 4:,} "
                 f"consecutive numbers), seed {seed}, {elapsed:.1f} s")
    lines.append("")
    lines.append("| statistic | value | theory | SE | z |")
    lines.append("|---|---|---|---|---|")
    for name, val, th, se in (("mean", mean, 0.0, 1 / math.sqrt(n)),
                              ("variance", var, 1.0, math.sqrt(2 / n)),
                              ("skewness", skew, 0.0, math.sqrt(6 / n)),
                              ("excess kurtosis", kurt, 0.0, math.sqrt(24 / n))):
        lines.append(f"| {name} | {val:.3e} | {th} | {se:.2e} | {(val - th) / se:+.2f} |")
    for lag in range(LAGS):
        se = 1 / math.sqrt(n)
        lines.append(f"| lag-{lag + 1} correlation | {lag_r[lag]:.2e} | 0 | {se:.2e} | "
                     f"{lag_r[lag] / se:+.2f} |")
    lines.append(f"| correlation with next path | {cross_r:.2e} | 0 | {1 / math.sqrt(n):.2e} | "
                 f"{cross_r * math.sqrt(n):+.2f} |")
    for k, obs in zip((3, 4, 5), tail_obs):
        pk = 2 * stats.norm.sf(k)
        exp = n * pk
        se = math.sqrt(exp * (1 - pk))
        lines.append(f"| count beyond {k} sigma | {obs:,} | {exp:,.1f} | {se:.1f} | "
                     f"{(obs - exp) / se:+.2f} |")
    lines.append("")
    lines.append(f"- binned KS distance (65,536 bins on [-6, 6]): D = {ks_d:.3e}, "
                 f"p = {ks_p:.3g}")
    lines.append(f"- histogram chi-square: {chi2:.1f} on {dof} dof, p = {chi2_p:.3g}")
    lines.append(f"- Anderson-Darling on 10^6 normals (1000 paths x 1000): A^2 = "
                 f"{ad.statistic:.3f} (5% critical value "
                 f"{ad.critical_values[list(ad.significance_level).index(5.0)]:.3f})")
    lines.append("")


def run_words(seed, n_words, lines):
    k0, k1 = streams.key_from_seed(seed)
    counts = np.zeros((64, 256), np.int64)
    n_blocks = int(n_words) // 4
    start = time.perf_counter()
    byte_counts(k0, k1, n_blocks, counts)
    c = counts.sum(axis=0)
    total = c.sum()
    chi2 = np.sum((c - total / 256) ** 2 / (total / 256))
    lines.append(f"### Philox words, seed {seed}")
    lines.append("")
    lines.append(f"- byte-level chi-square over {total:,} bytes: {chi2:.1f} on 255 dof, "
                 f"p = {stats.chi2.sf(chi2, 255):.3g}")
    m, n_trials = 512, 50_000  # Diehard parameters: lambda = 512^3 / 2^26 = 2
    dups = np.zeros(n_trials, np.int64)
    birthday_spacings(k0, k1, n_trials, m, dups)
    lam = m**3 / (4.0 * 2**24)
    kmax = 12
    obs = np.bincount(np.minimum(dups, kmax), minlength=kmax + 1)
    pk = stats.poisson.pmf(np.arange(kmax + 1), lam)
    pk[-1] = stats.poisson.sf(kmax - 1, lam)
    exp = n_trials * pk
    keep = exp >= 5
    chi2b = np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep])
    dofb = int(keep.sum()) - 1
    lines.append(f"- birthday spacings: {n_trials:,} trials of {m} birthdays in 2^24 days, "
                 f"mean repeated spacings {dups.mean():.3f} vs Poisson lambda {lam:.3f}; "
                 f"chi-square {chi2b:.1f} on {dofb} dof, p = {stats.chi2.sf(chi2b, dofb):.3g} "
                 f"({time.perf_counter() - start:.1f} s)")
    lines.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normals", type=float, default=1e9)
    ap.add_argument("--words", type=float, default=4e9)
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "battery.md"))
    args = ap.parse_args(argv)
    lines = [f"# fastsde statistical battery (RNG_VERSION {philox.RNG_VERSION})", "",
             f"{datetime.date.today().isoformat()}, {platform.machine()}, "
             f"{numba.config.NUMBA_NUM_THREADS} threads, numba {numba.__version__}, "
             f"command: `python bench/battery.py --normals {args.normals:g} --words "
             f"{args.words:g} --dtype {args.dtype}`", ""]
    for dt in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
        run_normals(dt, args.normals, args.seed, lines)
        print("\n".join(lines[-40:]), flush=True)
    run_words(args.seed, args.words, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
