"""The method table: each integration scheme with the metadata that decides where it fits."""

from dataclasses import dataclass

from .errors import IncompatibleMethodError
from .kernels import steps


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
        Stochastic calculus it converges to ("ito"; Heun is applied to additive noise only,
        where Ito and Stratonovich coincide).
    drift_evals : int
        Drift evaluations per step.
    description : str
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

    def fits(self, model):
        """Whether this method integrates ``model``."""
        if model.kind == "ode":
            return self.ode
        return model.noise in self.sde_noise

    def factory(self, model):
        """The step factory from :mod:`fastsde.kernels.steps` for ``model``."""
        return self.ode_factory if model.kind == "ode" else self.sde_factory


METHODS = {
    "euler": Method("euler", True, (), 1.0, None, None, None, None, "ito", 1,
                    "explicit Euler for ODEs", ode_factory=steps.make_euler),
    "heun": Method("heun", True, ("additive",), 2.0, None, None, 1.0, 2.0, "ito", 2,
                   "Heun (explicit trapezoid); stochastic Heun for additive noise",
                   ode_factory=steps.make_heun_ode, sde_factory=steps.make_heun_sde),
    "rk4": Method("rk4", True, (), 4.0, None, None, None, None, "ito", 4,
                  "classical fourth-order Runge-Kutta for ODEs", ode_factory=steps.make_rk4),
    "euler_maruyama": Method("euler_maruyama", False,
                             ("additive", "diagonal", "scalar", "general"), None, 0.5, 1.0,
                             1.0, 1.0, "ito", 1, "Euler-Maruyama for Ito SDEs",
                             sde_factory=steps.make_euler_maruyama),
}


def fitting_methods(model):
    """Names of the methods that integrate ``model``."""
    return [name for name, m in METHODS.items() if m.fits(model)]


def default_method(model):
    """Heun for ODEs, Euler-Maruyama for SDEs."""
    return "heun" if model.kind == "ode" else "euler_maruyama"


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
        what = "an ODE" if model.kind == "ode" else f"an SDE with {model.noise} noise"
        raise IncompatibleMethodError(
            f"method {method!r} does not integrate {what} ({model!r}); methods that fit: "
            f"{fitting_methods(model)}")
    return m
