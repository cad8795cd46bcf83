"""The method table: each integration scheme with the metadata that decides where it fits."""

from dataclasses import dataclass

from .errors import IncompatibleMethodError
from .kernels import steps


#: Increment kinds (``simulate(..., increments=...)``) and what each matches of the
#: Gaussian increment: "gaussian" all of it (strong methods need it); "three_point"
#: (+-sqrt(3h) with probability 1/6 each, 0 with 2/3) the moments up to the fifth, enough
#: for weak order 2; "two_point" (+-sqrt(h)) those up to the third, enough for weak order 1.
INCREMENTS = ("gaussian", "three_point", "two_point")
CALCULI = ("ito", "stratonovich")


@dataclass(frozen=True)
class Method:
    """An integration scheme and its metadata.

    Attributes
    ----------
    name : str
    ode : bool
        Integrates ODEs.
    sde_noise : tuple of str
        Noise kinds of SDEs it integrates (empty: ODEs only).
    order : float or None
        Deterministic (ODE) order of convergence.
    strong_order, weak_order : float or None
        Orders on SDEs with general (multiplicative) noise of the kinds it accepts.
    strong_order_additive, weak_order_additive : float or None
        Orders on SDEs with additive noise.
    calculus : str
        Stochastic calculus it converges to, "ito" or "stratonovich". A method applied to
        additive noise only (``heun``, ``sra1``) fits either: there they coincide.
    drift_evals : int
        Drift evaluations per step.
    description : str
    diffusion_evals : int
        Diffusion evaluations per step (SDEs).
    random_variables : tuple of str
        Random variables drawn per step and noise component with Gaussian increments:
        "dW" (the Wiener increment, stream 0) and "dZ" (an independent N(0, h) of stream
        ``STREAM_EXTRA`` that forms I_(1,0); docs/random-streams.md).
    increments : tuple of str
        Increment kinds it accepts: "gaussian" only for strong methods; weak order 2
        methods also "three_point"; weak order 1 methods also "two_point".
    reference : str
    extra_normals_when : {"gaussian", "several_noises"}
        When a step draws dZ: with Gaussian increments only (``sra1``, ``sriw1``: with
        discrete increments they take I_(1,0) = h dW / 2), or whenever the model has more
        than one noise component, whatever the increments (``dri1``'s I~ variables).
    """

    name: str
    ode: bool
    sde_noise: tuple
    order: float
    strong_order: float
    weak_order: float
    strong_order_additive: float
    weak_order_additive: float
    calculus: str
    drift_evals: int
    description: str
    ode_factory: object = None
    sde_factory: object = None
    diffusion_evals: int = 0
    random_variables: tuple = ("dW",)
    increments: tuple = ("gaussian",)
    reference: str = ""
    extra_normals_when: str = "gaussian"

    @property
    def extra_normals(self):
        """Whether a step can draw the extra normals dZ (see :meth:`draws_extra`)."""
        return "dZ" in self.random_variables

    def draws_extra(self, increments, noise_dim):
        """Whether a step of this method draws the extra normals dZ (stream 2) for a run
        with these increments and this many noise components."""
        if not self.extra_normals:
            return False
        if self.extra_normals_when == "several_noises":
            return noise_dim > 1
        return increments == "gaussian"

    def fits(self, model):
        """Whether this method integrates ``model``."""
        if model.kind == "ode":
            return self.ode
        if model.noise not in self.sde_noise:
            return False
        # Ito and Stratonovich SDEs coincide where the diffusion does not depend on x.
        return model.noise == "additive" or model.calculus == self.calculus

    def factory(self, model):
        """The step factory from :mod:`fastsde.kernels.steps` for ``model``."""
        return self.ode_factory if model.kind == "ode" else self.sde_factory


_DIAGONAL = ("additive", "diagonal", "scalar")
_ANY_NOISE = ("additive", "diagonal", "scalar", "general")
_KP = "Kloeden & Platen, Numerical Solution of SDEs (1992)"
_ROESSLER = "Roessler, SIAM J. Numer. Anal. 48 (2010) 922-952"

METHODS = {
    "euler": Method("euler", True, (), 1.0, None, None, None, None, "ito", 1,
                    "explicit Euler for ODEs", ode_factory=steps.make_euler,
                    reference="Euler (1768)"),
    "heun": Method("heun", True, ("additive",), 2.0, None, None, 1.0, 2.0, "ito", 2,
                   "Heun (explicit trapezoid); stochastic Heun for additive noise",
                   ode_factory=steps.make_heun_ode, sde_factory=steps.make_heun_sde,
                   diffusion_evals=2, reference=_KP + ", sec. 15.1"),
    "rk4": Method("rk4", True, (), 4.0, None, None, None, None, "ito", 4,
                  "classical fourth-order Runge-Kutta for ODEs", ode_factory=steps.make_rk4,
                  reference="Kutta (1901)"),
    "euler_maruyama": Method("euler_maruyama", False, _ANY_NOISE, None, 0.5, 1.0,
                             1.0, 1.0, "ito", 1, "Euler-Maruyama for Ito SDEs",
                             sde_factory=steps.make_euler_maruyama, diffusion_evals=1,
                             increments=("gaussian", "two_point"),
                             reference=_KP + ", sec. 9.1 and 14.1"),
    "milstein": Method("milstein", False, _DIAGONAL, None, 1.0, 1.0, 1.0, 1.0, "ito", 1,
                       "Milstein for Ito SDEs, derivative-free (Runge-Kutta form)",
                       sde_factory=steps.make_milstein, diffusion_evals=2,
                       reference=_KP + ", sec. 11.1 (eq. 11.1.5)"),
    "euler_heun": Method("euler_heun", False, _ANY_NOISE, None, 0.5, 1.0, 1.0, 1.0,
                         "stratonovich", 1,
                         "Euler-Heun for Stratonovich SDEs (strong order 1 for "
                         "commutative noise)", sde_factory=steps.make_euler_heun,
                         diffusion_evals=2, increments=("gaussian", "two_point"),
                         reference=_KP + "; torchsde / diffrax 'heun'"),
    "sra1": Method("sra1", False, ("additive",), None, 1.5, 2.0, 1.5, 2.0, "ito", 2,
                   "Roessler's SRA1 for additive noise", sde_factory=steps.make_sra1,
                   diffusion_evals=2, random_variables=("dW", "dZ"),
                   increments=("gaussian", "three_point"), reference=_ROESSLER),
    "sriw1": Method("sriw1", False, _DIAGONAL, None, 1.5, 2.0, 1.5, 2.0, "ito", 2,
                    "Roessler's SRIW1 (SRI1W1) for Ito SDEs with diagonal or scalar noise",
                    sde_factory=steps.make_sriw1, diffusion_evals=4,
                    random_variables=("dW", "dZ"), increments=("gaussian", "three_point"),
                    reference=_ROESSLER),
    "dri1": Method("dri1", False, _ANY_NOISE, None, None, 2.0, None, 2.0, "ito", 3,
                   "Debrabant and Roessler's DRI1, weak order 2 for Ito SDEs with any noise "
                   "kind (3 diffusion evaluations per step with one noise component, 1 + 4 m "
                   "with m)", sde_factory=steps.make_dri1, diffusion_evals=3,
                   random_variables=("dW", "dZ"), increments=("gaussian", "three_point"),
                   reference="Debrabant & Roessler, Appl. Numer. Math. 59 (2009) 582-594",
                   extra_normals_when="several_noises"),
}


def fitting_methods(model):
    """Names of the methods that integrate ``model``."""
    return [name for name, m in METHODS.items() if m.fits(model)]


def default_method(model):
    """Heun for ODEs, Euler-Maruyama for SDEs."""
    return "heun" if model.kind == "ode" else "euler_maruyama"


def resolve_increments(increments, method):
    """Check ``increments`` against the table and the method's weak order.

    Raises
    ------
    TypeError, ValueError
        Not one of :data:`INCREMENTS`.
    IncompatibleMethodError
        The method does not take this kind (a strong method, or a weak order that the
        kind's moments cannot carry); the message lists the kinds it takes.
    """
    if not isinstance(increments, str):
        raise TypeError(f"increments must be one of {list(INCREMENTS)}; got {increments!r}")
    if increments not in INCREMENTS:
        raise ValueError(f"increments must be one of {list(INCREMENTS)}; got {increments!r}")
    if increments not in method.increments:
        takes = [k for k, m in METHODS.items() if increments in m.increments]
        raise IncompatibleMethodError(
            f"increments={increments!r} does not fit method {method.name!r}, which takes "
            f"{list(method.increments)}; methods that take {increments!r}: {takes}. "
            f"Discrete increments give weak (expectation) accuracy only: their paths are "
            f"not Brownian paths")
    return increments


def resolve_method(method, model):
    """Look ``method`` up in the table and check that it fits ``model``.

    Raises
    ------
    TypeError, ValueError
        ``method`` is not a name in the table.
    IncompatibleMethodError
        The method does not integrate this model; the message lists those that do.
    """
    if method is None:
        method = default_method(model)
    if not isinstance(method, str):
        raise TypeError(f"method must be a method name (str) or None; got {method!r}; "
                        f"allowed: {sorted(METHODS)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    m = METHODS[method]
    if not m.fits(model):
        what = ("an ODE" if model.kind == "ode" else
                f"an SDE with {model.noise} noise in the {model.calculus} calculus")
        raise IncompatibleMethodError(
            f"method {method!r} does not integrate {what} ({model!r}); methods that fit: "
            f"{fitting_methods(model)}")
    return m
