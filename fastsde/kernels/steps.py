"""One step of each scheme, written once as plain allocation-free Python.

Each ``make_*`` factory closes over the target-compiled user functions (``drift``,
``diffusion``), the noise contraction ``noise_term``, the per-component increment
``increment_of``, the diffusion matrix's entry ``column_of(g, i, k)`` and the
compile-time constants (``dim`` and the run's dtype), and
returns a plain function with the common signature

    step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new)

that the target driver (cpu.py, cuda.py) compiles. ``t``, ``t_mid`` and ``t_next`` are
``t0 + k h``, ``t0 + (k + 1/2) h`` and ``t0 + (k + 1) h`` (``t1`` on the last step),
computed by the driver from the step index. ``dw`` holds the Wiener increments of the
step (``sqrt(h) z``, shape (noise_dim,); with discrete increments the two- or
three-point values). ``dz`` (noise_dim,) holds the extra normals of the schemes that
need them (``sqrt(h) z'`` from the stream ``STREAM_EXTRA``, independent of ``dw``; zeros
with discrete increments and for the other schemes). ``f0``-``f3``, ``xt`` (dim,) and
``g0``-``g3`` (the diffusion's out shape) are scratch; schemes for diagonal and scalar
noise, whose diffusion has the drift's shape, may use ``f2``, ``f3`` for diffusion values.
The step writes the new state into ``x_new`` and must not touch ``x``.
"""

import math


def noise_diagonal(g, dw, i):
    """Component i of g dW for diagonal and additive noise (g has shape (dim,))."""
    return g[i] * dw[i]


def noise_scalar(g, dw, i):
    """Component i of g dW for one Wiener process shared by all components."""
    return g[i] * dw[0]


def noise_general(g, dw, i):
    """Component i of G dW for a (dim, noise_dim) diffusion matrix."""
    acc = g[i, 0] * dw[0]
    for j in range(1, dw.shape[0]):
        acc += g[i, j] * dw[j]
    return acc


def increment_diagonal(dw, i):
    """The increment driving component i under diagonal and additive noise."""
    return dw[i]


def increment_scalar(dw, i):
    """The increment driving component i under scalar noise (one Wiener process)."""
    return dw[0]


def column_diagonal(g, i, k):
    """Row i of column k of the diffusion matrix under diagonal and additive noise (g holds
    the diagonal)."""
    return g[i] if i == k else g[i] * 0


def column_scalar(g, i, k):
    """Row i of the one column of the diffusion under scalar noise."""
    return g[i]


def column_general(g, i, k):
    """Row i of column k of a (dim, noise_dim) diffusion matrix."""
    return g[i, k]


COLUMNS_OF = {"additive": "column_diagonal", "diagonal": "column_diagonal",
              "scalar": "column_scalar", "general": "column_general"}
NOISE_TERMS = {"additive": "noise_diagonal", "diagonal": "noise_diagonal",
               "scalar": "noise_scalar", "general": "noise_general"}
#: The increment of component i, by noise kind (general noise has no such thing: the
#: schemes that use it do not accept general noise).
INCREMENTS_OF = {"additive": "increment_diagonal", "diagonal": "increment_diagonal",
                 "scalar": "increment_scalar", "general": "increment_scalar"}


def out_cleared(fn, shape, dtype):
    """``fn(t, x, p, out)`` called with ``out`` set to zero first.

    The contract of user functions: ``out`` starts at zero on every call, as in the
    Python pre-flight, so a function may write only the entries that are not zero (a
    sparse general-noise matrix, a drift with a constant component). The scratch ``out``
    is uninitialised memory otherwise (stack, registers or heap): left alone, an entry the
    function never writes held garbage. When the function writes every entry, the zero
    stores are dead and LLVM removes them after inlining.
    """
    zero = dtype(0.0)
    if len(shape) == 2:
        rows, cols = shape

        def call(t, x, p, out):
            for i in range(rows):
                for j in range(cols):
                    out[i, j] = zero
            fn(t, x, p, out)
    else:
        n = shape[0]

        def call(t, x, p, out):
            for i in range(n):
                out[i] = zero
            fn(t, x, p, out)
    return call


def make_euler(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Explicit Euler for ODEs: x' = x + h u(t, x)."""

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        for i in range(dim):
            x_new[i] = x[i] + h * f0[i]

    return step


def make_heun_ode(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Heun (explicit trapezoid) for ODEs, order 2."""
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        for i in range(dim):
            xt[i] = x[i] + h * f0[i]
        drift(t_next, xt, p, f1)
        for i in range(dim):
            x_new[i] = x[i] + half * h * (f0[i] + f1[i])

    return step


def make_heun_sde(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Stochastic Heun for additive noise: trapezoid in the drift and in sigma(t)."""
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        diffusion(t_next, x, p, g1)
        for i in range(dim):
            xt[i] = x[i] + h * f0[i] + noise_term(g0, dw, i)
        drift(t_next, xt, p, f1)
        for i in range(dim):
            x_new[i] = (x[i] + half * h * (f0[i] + f1[i])
                        + half * (noise_term(g0, dw, i) + noise_term(g1, dw, i)))

    return step


def make_rk4(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Classical fourth-order Runge-Kutta for ODEs."""
    half = dtype(0.5)
    sixth = dtype(1.0 / 6.0)
    two = dtype(2.0)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        for i in range(dim):
            xt[i] = x[i] + half * h * f0[i]
        drift(t_mid, xt, p, f1)
        for i in range(dim):
            xt[i] = x[i] + half * h * f1[i]
        drift(t_mid, xt, p, f2)
        for i in range(dim):
            xt[i] = x[i] + h * f2[i]
        drift(t_next, xt, p, f3)
        for i in range(dim):
            x_new[i] = x[i] + sixth * h * (f0[i] + two * (f1[i] + f2[i]) + f3[i])

    return step


def make_euler_maruyama(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Euler-Maruyama for Ito SDEs with any noise kind."""

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            x_new[i] = x[i] + h * f0[i] + noise_term(g0, dw, i)

    return step


def make_milstein(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Milstein for Ito SDEs with diagonal, scalar or additive noise, derivative-free
    (Kloeden and Platen 1992, eq. 11.1.5): the derivative term g g' is the difference of
    the diffusion at the supporting value ``x + h f + sqrt(h) g`` and at ``x``, over
    sqrt(h). Strong order 1 where component i's diffusion depends on x_i only (diagonal
    noise) or the noise is scalar; weak order 1.

    The Euler-Maruyama update is computed first, in the same order, and the correction
    added to it: where the diffusion does not depend on x the correction is exactly 0 and
    the paths are those of Euler-Maruyama, bit for bit.
    """
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        sqrt_h = dtype(math.sqrt(h))
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            xt[i] = x[i] + h * f0[i] + sqrt_h * g0[i]
        diffusion(t, xt, p, g1)
        for i in range(dim):
            w = increment_of(dw, i)
            # I_(1,1) / sqrt(h) = (dW^2 - h) / (2 sqrt(h))
            i11 = half * (w * w - h) / sqrt_h
            x_new[i] = x[i] + h * f0[i] + noise_term(g0, dw, i) + (g1[i] - g0[i]) * i11

    return step


def make_euler_heun(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """Euler-Heun for Stratonovich SDEs with any noise kind (torchsde's and diffrax's
    "heun" for Stratonovich): Euler in the drift, the trapezoid in the diffusion between
    x and the predictor ``x + g dW``. Strong order 0.5 (1 for commutative noise), weak
    order 1, converging to the Stratonovich solution."""
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            xt[i] = x[i] + noise_term(g0, dw, i)
        diffusion(t, xt, p, g1)
        for i in range(dim):
            x_new[i] = x[i] + h * f0[i] + half * (noise_term(g0, dw, i)
                                                  + noise_term(g1, dw, i))

    return step


def make_sra1(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """SRA1 (Roessler, SIAM J. Numer. Anal. 48, 2010) for additive noise: strong order
    1.5, weak order 2. Two drift and two diffusion evaluations (the diffusion at t and at
    t + h: it depends on time only); ``I_(1,0) / h = (dW + dZ / sqrt(3)) / 2`` from the
    extra normals ``dz`` (with discrete increments dz is 0, the weak scheme's
    ``I_(1,0) = h dW / 2``)."""
    half = dtype(0.5)
    three_quarters = dtype(0.75)
    three_halves = dtype(1.5)
    third = dtype(1.0 / 3.0)
    two_thirds = dtype(2.0 / 3.0)
    inv_sqrt3 = dtype(1.0 / math.sqrt(3.0))

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        diffusion(t_next, x, p, g1)
        for i in range(dim):
            chi2 = half * (increment_of(dw, i) + increment_of(dz, i) * inv_sqrt3)
            xt[i] = x[i] + three_quarters * h * f0[i] + three_halves * chi2 * g1[i]
        drift(t + three_quarters * h, xt, p, f1)
        for i in range(dim):
            w = increment_of(dw, i)
            chi2 = half * (w + increment_of(dz, i) * inv_sqrt3)
            x_new[i] = (x[i] + h * (third * f0[i] + two_thirds * f1[i])
                        + chi2 * (g0[i] - g1[i]) + w * g1[i])

    return step


def make_sriw1(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """SRIW1 (Roessler, SIAM J. Numer. Anal. 48, 2010, scheme SRI1W1) for Ito SDEs with
    diagonal, scalar or additive noise: strong order 1.5, weak order 2. Two drift and four
    diffusion evaluations per step; the iterated integrals are formed from dW and the
    extra normals dz: I_(1,1) / sqrt(h) = (dW^2 - h) / (2 sqrt(h)),
    I_(1,0) / h = (dW + dZ / sqrt(3)) / 2, I_(1,1,1) / h = (dW^3 - 3 h dW) / (6 h).
    The diffusion values of stages 3 and 4 go into ``f2`` and ``f3`` (diagonal and scalar
    noise: the diffusion has the drift's shape)."""
    half = dtype(0.5)
    quarter = dtype(0.25)
    three_quarters = dtype(0.75)
    three_halves = dtype(1.5)
    third = dtype(1.0 / 3.0)
    two_thirds = dtype(2.0 / 3.0)
    four_thirds = dtype(4.0 / 3.0)
    five_thirds = dtype(5.0 / 3.0)
    sixth = dtype(1.0 / 6.0)
    inv_sqrt3 = dtype(1.0 / math.sqrt(3.0))
    one = dtype(1.0)
    two = dtype(2.0)
    three = dtype(3.0)
    five = dtype(5.0)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        sqrt_h = dtype(math.sqrt(h))
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            chi2 = half * (increment_of(dw, i) + increment_of(dz, i) * inv_sqrt3)
            xt[i] = x[i] + three_quarters * h * f0[i] + three_halves * chi2 * g0[i]
        drift(t + three_quarters * h, xt, p, f1)
        for i in range(dim):
            xt[i] = x[i] + quarter * h * f0[i] + half * sqrt_h * g0[i]
        diffusion(t + quarter * h, xt, p, g1)
        for i in range(dim):
            xt[i] = x[i] + h * f0[i] - sqrt_h * g0[i]
        diffusion(t_next, xt, p, f2)
        for i in range(dim):
            xt[i] = x[i] + quarter * h * f0[i] + sqrt_h * (
                -five * g0[i] + three * g1[i] + half * f2[i])
        diffusion(t + quarter * h, xt, p, f3)
        for i in range(dim):
            w = increment_of(dw, i)
            chi1 = half * (w * w - h) / sqrt_h
            chi2 = half * (w + increment_of(dz, i) * inv_sqrt3)
            chi3 = sixth * (w * w * w - three * h * w) / h
            c0 = -w - chi1 + two * chi2 - two * chi3
            c1 = four_thirds * w + four_thirds * chi1 - four_thirds * chi2 + five_thirds * chi3
            c2 = two_thirds * w - third * chi1 - two_thirds * chi2 - two_thirds * chi3
            c3 = one * chi3
            x_new[i] = (x[i] + h * (third * f0[i] + two_thirds * f1[i])
                        + c0 * g0[i] + c1 * g1[i] + c2 * f2[i] + c3 * f3[i])

    return step


def make_dri1(drift, diffusion, noise_term, increment_of, column_of, dim, dtype):
    """DRI1 (Debrabant and Roessler, Appl. Numer. Math. 59 (2009) 582-594): weak order 2
    for Ito SDEs with any noise kind, with three stages in the drift. Per step: 3 drift
    evaluations and 3 diffusion evaluations for one noise component, 1 + 4 m for m. Its
    random variables: the increments ``dw`` (I^_k: Gaussian or three-point) and, with more
    than one noise component, ``dz`` (I~_k, the variables of the iterated integrals
    I^_(k,l); Debrabant and Roessler use two-point variables, any independent symmetric
    variable of variance h serves at weak order 2, and fastsde takes the extra normals
    of stream 2). Scratch: g0 the diffusion at x, g1 and g2 at the stages of noise l,
    g3 at the stages of the cross terms."""
    sqrt6 = math.sqrt(6.0)
    half = dtype(0.5)
    a021, a031, a032 = dtype(0.5), dtype(-1.0), dtype(2.0)
    a121 = dtype(342.0 / 491.0)
    b021 = dtype((6.0 - sqrt6) / 10.0)
    b031 = dtype((3.0 + 2.0 * sqrt6) / 5.0)
    b121 = dtype(3.0 * math.sqrt(38.0 / 491.0))
    b221 = dtype(-214.0 / 513.0 * math.sqrt(1105.0 / 991.0))
    b222 = dtype(-491.0 / 513.0 * math.sqrt(221.0 / 4955.0))
    alpha1, alpha2, alpha3 = dtype(1.0 / 6.0), dtype(2.0 / 3.0), dtype(1.0 / 6.0)
    c12 = dtype(342.0 / 491.0)
    beta11 = 193.0 / 684.0
    beta12 = dtype(491.0 / 1368.0)
    beta22 = dtype(math.sqrt(491.0 / 38.0) / 6.0)
    beta31 = -4955.0 / 7072.0
    beta32 = dtype(4955.0 / 14144.0)
    beta42 = dtype(-math.sqrt(4955.0 / 221.0) / 8.0)

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        m = dw.shape[0]
        sqrt_h = dtype(math.sqrt(h))
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            xt[i] = x[i] + a021 * h * f0[i] + b021 * noise_term(g0, dw, i)
        drift(t_mid, xt, p, f1)
        for i in range(dim):
            xt[i] = x[i] + a031 * h * f0[i] + a032 * h * f1[i] + b031 * noise_term(g0, dw, i)
        drift(t_next, xt, p, f2)
        for i in range(dim):
            x_new[i] = x[i] + h * (alpha1 * f0[i] + alpha2 * f1[i] + alpha3 * f2[i])
        beta1 = dtype(beta11 + (m - 1) * beta31)
        for l in range(m):
            w = dw[l]
            chi = half * (w * w - h) / sqrt_h
            for i in range(dim):
                xt[i] = x[i] + a121 * h * f0[i] + b121 * sqrt_h * column_of(g0, i, l)
            diffusion(t + c12 * h, xt, p, g1)
            for i in range(dim):
                xt[i] = x[i] + a121 * h * f0[i] - b121 * sqrt_h * column_of(g0, i, l)
            diffusion(t + c12 * h, xt, p, g2)
            for i in range(dim):
                x_new[i] += (column_of(g0, i, l) * w * beta1
                             + column_of(g1, i, l) * (w * beta12 + chi * beta22)
                             + column_of(g2, i, l) * (w * beta12 - chi * beta22))
            if m > 1:
                # The cross terms: the diffusion at the stages H^(l) in every column k != l,
                # with I^_(k,l) = (I^_k I^_l -+ sqrt(h) I~) / 2.
                for sign in (dtype(1.0), dtype(-1.0)):
                    for i in range(dim):
                        xt[i] = x[i] + sign * sqrt_h * (
                            b221 * column_of(g0, i, l)
                            + b222 * (column_of(g1, i, l) + column_of(g2, i, l)))
                    diffusion(t, xt, p, g3)
                    for k in range(m):
                        if k != l:
                            if k < l:
                                ikl = half * (dw[k] * dw[l] - sqrt_h * dz[k])
                            else:
                                ikl = half * (dw[k] * dw[l] + sqrt_h * dz[l])
                            coef = dw[k] * beta32 + sign * ikl * beta42 / sqrt_h
                            for i in range(dim):
                                x_new[i] += column_of(g3, i, k) * coef

    return step
