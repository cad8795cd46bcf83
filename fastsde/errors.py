"""Exceptions raised by fastsde."""


class FastSDEError(Exception):
    """Base class of the exceptions that fastsde raises on its own account."""


class ModelError(FastSDEError, ValueError):
    """A model is malformed: a user function has the wrong arity, does not compile,
    or writes an ``out`` of the wrong shape. The message names the function."""


class IncompatibleMethodError(FastSDEError, ValueError):
    """The requested method does not fit the model (e.g. Euler on an SDE, or Heun on
    multiplicative Ito noise). The message lists the methods that fit."""


class DeviceError(FastSDEError, RuntimeError):
    """The requested device cannot be used; the message says why."""


class NonFiniteError(FastSDEError, FloatingPointError):
    """Paths left the finite numbers and ``on_nonfinite="raise"`` was asked for."""


class OutputTooLargeError(FastSDEError, MemoryError):
    """The requested stored output would not fit in memory; raised before allocating."""
