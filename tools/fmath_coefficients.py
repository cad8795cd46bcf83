"""Derive the polynomial coefficients of fastsde/kernels/fmath.py (needs mpmath).

Each polynomial is a near-minimax Chebyshev fit (``mpmath.chebyfit``) at 60 digits of the
function on the interval the kernel code uses it on; the printed coefficients (highest
degree first, Horner order) are pasted into fmath.py, where tests/test_fmath.py measures
the resulting functions against the correctly rounded values.

    python tools/fmath_coefficients.py
"""

import mpmath

mpmath.mp.dps = 60


def tanh_odd_part(z):
    """(tanh x - x) / x^3 as a function of z = x^2 (its limit -1/3 at 0)."""
    if z == 0:
        return mpmath.mpf(-1) / 3
    x = mpmath.sqrt(z)
    return (mpmath.tanh(x) - x) / (x * z)


def exp_tail(r):
    """(e^r - 1 - r) / r^2 (its limit 1/2 at 0)."""
    if r == 0:
        return mpmath.mpf(1) / 2
    return (mpmath.exp(r) - 1 - r) / (r * r)


def erf_odd_part(z):
    """(erf x - x) / x as a function of z = x^2 (its limit 2/sqrt(pi) - 1 at 0)."""
    if z == 0:
        return 2 / mpmath.sqrt(mpmath.pi) - 1
    x = mpmath.sqrt(z)
    return (mpmath.erf(x) - x) / x


def erfc_scaled(x):
    """erfc(x) e^(x^2), smooth and slowly varying (about 1 / (x sqrt(pi)) for large x)."""
    return mpmath.erfc(x) * mpmath.exp(x * x)


def fit_erfc_scaled(k, top, n_coefficients):
    """Q = erfc(x) e^(x^2) on [1, top] as a polynomial in u = (x - k) / (x + k), and the
    largest error of Q times e^(-x^2) (what erf's result carries) on 600 points."""
    k = mpmath.mpf(k)
    lo, hi = (1 - k) / (1 + k), (top - k) / (top + k)
    c = mpmath.chebyfit(lambda u: erfc_scaled(k * (1 + u) / (1 - u)), [lo, hi],
                        n_coefficients)
    worst = 0
    for i in range(600):
        x = 1 + (top - 1) * mpmath.mpf(i) / 599
        u = (x - k) / (x + k)
        worst = max(worst, abs(mpmath.polyval(c, u) - erfc_scaled(x)) * mpmath.exp(-x * x))
    return c, worst


def show(name, coefficients, error):
    print(f"# {name}: max abs error of the fit {mpmath.nstr(error, 3)}")
    print(f"{name} = (" + ",\n    ".join(repr(float(c)) for c in coefficients) + ")")


def main():
    ln3_2 = mpmath.log(3) / 2
    # float32 tanh: |x| < ln(3)/2, where 1 - 2 / (e^2x + 1) would lose bits to the
    # subtraction.
    c, err = mpmath.chebyfit(tanh_odd_part, [0, ln3_2 ** 2], 5, error=True)
    show("F32_TANH_C", c, err)
    half_ln2 = mpmath.log(2) / 2
    c, err = mpmath.chebyfit(exp_tail, [-half_ln2 * 1.01, half_ln2 * 1.01], 6, error=True)
    show("F32_EXP_C", c, err)
    # float64 e^r = 1 + r + r^2 Q(r): degree 10 (degree 9 leaves 1.4e-17 in r^2 Q, 0.13 ulp
    # of e^r near -ln2/2; degree 10, 2.7e-19).
    c = mpmath.chebyfit(exp_tail, [-half_ln2 * 1.01, half_ln2 * 1.01], 11)
    grid = [half_ln2 * 1.01 * (2 * mpmath.mpf(i) / 800 - 1) for i in range(801)]
    err = max(abs(mpmath.polyval([mpmath.mpf(float(a)) for a in c], r) - exp_tail(r)) * r * r
              for r in grid)
    show("F64_EXP_C (the error is that of r^2 Q with the float64 coefficients)", c, err)
    # float64 tanh, the same interval.
    c, err = mpmath.chebyfit(tanh_odd_part, [0, ln3_2 ** 2], 11, error=True)
    show("F64_TANH_C", c, err)
    # erf: x + x P(x^2) on |x| <= 1; 1 - e^(-x^2) Q above, where an error e in Q costs
    # e e^(-x^2) absolute, against erf's ulp of 2^-24 / 2^-53 near 1. Q = erfc e^(x^2)
    # as a polynomial in u = (x - K) / (x + K) (Schonfelder's variable, which maps
    # [1, inf) into [-1, 1) and straightens Q's 1 / x tail): one polynomial of degree 7
    # on [1, 4] for float32 (erf rounds to 1 above 3.92), of degree 15 on [1, 6] for
    # float64 (above 5.93), where in x itself [1, 6] took two of degree 15 and 21.
    c, err = mpmath.chebyfit(erf_odd_part, [0, 1], 7, error=True)
    show("F32_ERF_P", c, err)
    c, err = fit_erfc_scaled(2, 4, 8)
    show("F32_ERF_Q (K = 2; the error is that of Q e^(-x^2))", c, err)
    c, err = mpmath.chebyfit(erf_odd_part, [0, 1], 12, error=True)
    show("F64_ERF_P", c, err)
    c, err = fit_erfc_scaled(2.5, 6, 16)
    show("F64_ERF_Q (K = 2.5; the error is that of Q e^(-x^2))", c, err)


if __name__ == "__main__":
    main()
