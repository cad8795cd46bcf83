"""fastsde: millions of ODE/SDE paths at the speed of the hardware."""

__version__ = "0.1.0"

from .api import compile, simulate  # noqa: E402
from .errors import (DeviceError, FastSDEError, IncompatibleMethodError,  # noqa: E402
                     ModelError, NonFiniteError, OutputTooLargeError)
from .kernels.philox import RNG_VERSION  # noqa: E402
from .methods import METHODS, Method  # noqa: E402
from .model import ODE, SDE, Normal  # noqa: E402
from . import metrics  # noqa: E402
from .generative import GaussianMixture, GaussianMixturePath  # noqa: E402
from .mlp import MLPField  # noqa: E402
from .models import GBM, OU, BrownianMotion  # noqa: E402
from .result import Result  # noqa: E402
from .montecarlo import Estimate, Histogram  # noqa: E402
from .mlmc import MLMCResult, mlmc, mlmc_test  # noqa: E402

__all__ = ["simulate", "compile", "SDE", "ODE", "Normal", "OU", "GBM", "BrownianMotion", "Result",
           "Estimate", "Histogram", "METHODS", "Method", "RNG_VERSION", "FastSDEError", "ModelError",
           "IncompatibleMethodError", "DeviceError", "NonFiniteError", "OutputTooLargeError",
           "GaussianMixturePath", "GaussianMixture", "MLPField", "metrics", "mlmc", "mlmc_test", "MLMCResult",
           "__version__"]
