"""Kernel math (philox, steps), written once, and the per-target drivers (cpu, cuda)."""


def cuda_available():
    """Whether the CUDA backend can run here: (ok, reason when not)."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always ships numba.cuda
        return False, f"numba.cuda cannot be imported ({exc})"
    try:
        from . import cuda as _backend  # noqa: F401
    except ImportError as exc:
        return False, f"the fastsde CUDA backend is not available ({exc})"
    try:
        if not cuda.is_available():
            return False, "no CUDA driver or GPU was found (numba.cuda.is_available() is False)"
    except Exception as exc:  # noqa: BLE001
        return False, f"the CUDA driver could not be initialised ({exc})"
    return True, ""
