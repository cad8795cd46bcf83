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
    # float64 tanh, the same interval.
    c, err = mpmath.chebyfit(tanh_odd_part, [0, ln3_2 ** 2], 11, error=True)
    show("F64_TANH_C", c, err)


if __name__ == "__main__":
    main()
