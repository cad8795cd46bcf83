"""One step of each scheme, written once as plain allocation-free Python.

Each ``make_*`` factory closes over the target-compiled user functions (``drift``,
``diffusion``), the noise contraction ``noise_term`` and the compile-time constants
(``dim`` and the run's dtype), and returns a plain function with the common signature

    step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new)

that the target driver (cpu.py, cuda.py) compiles. ``t``, ``t_mid`` and ``t_next`` are
``t0 + k h``, ``t0 + (k + 1/2) h`` and ``t0 + (k + 1) h`` (``t1`` on the last step),
computed by the driver from the step index. ``dw`` holds the Wiener increments of the
step (``sqrt(h) z``, shape (noise_dim,)). ``f0``-``f3``, ``xt`` (dim,) and ``g0``, ``g1``
(the diffusion's out shape) are scratch. The step writes the new state into ``x_new``
and must not touch ``x``.
"""


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


NOISE_TERMS = {"additive": "noise_diagonal", "diagonal": "noise_diagonal",
               "scalar": "noise_scalar", "general": "noise_general"}


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


def make_euler(drift, diffusion, noise_term, dim, dtype):
    """Explicit Euler for ODEs: x' = x + h u(t, x)."""

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
        drift(t, x, p, f0)
        for i in range(dim):
            x_new[i] = x[i] + h * f0[i]

    return step


def make_heun_ode(drift, diffusion, noise_term, dim, dtype):
    """Heun (explicit trapezoid) for ODEs, order 2."""
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
        drift(t, x, p, f0)
        for i in range(dim):
            xt[i] = x[i] + h * f0[i]
        drift(t_next, xt, p, f1)
        for i in range(dim):
            x_new[i] = x[i] + half * h * (f0[i] + f1[i])

    return step


def make_heun_sde(drift, diffusion, noise_term, dim, dtype):
    """Stochastic Heun for additive noise: trapezoid in the drift and in sigma(t)."""
    half = dtype(0.5)

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
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


def make_rk4(drift, diffusion, noise_term, dim, dtype):
    """Classical fourth-order Runge-Kutta for ODEs."""
    half = dtype(0.5)
    sixth = dtype(1.0 / 6.0)
    two = dtype(2.0)

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
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


def make_euler_maruyama(drift, diffusion, noise_term, dim, dtype):
    """Euler-Maruyama for Ito SDEs with any noise kind."""

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
        drift(t, x, p, f0)
        diffusion(t, x, p, g0)
        for i in range(dim):
            x_new[i] = x[i] + h * f0[i] + noise_term(g0, dw, i)

    return step
