"""Kernel math (philox, steps), written once, and the per-target drivers (cpu, cuda)."""

import functools

CUDA_INSTALL_HINT = ("pip install 'fastsde[cuda]' (numba-cuda and the CUDA 12 toolkit "
                     "libraries from PyPI)")


def cuda_driver_absent():
    """True when no NVIDIA driver library can be loaded here (so no GPU can be used),
    found without importing numba.cuda (which costs about 0.5 s at import, every
    ``device="auto"`` run on a machine without a GPU). False means only "maybe":
    :func:`cuda_available` decides. Under the CUDA simulator, or with
    ``NUMBA_CUDA_DRIVER`` naming a driver, it is False.
    """
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    if os.environ.get("NUMBA_CUDA_DRIVER"):
        return False
    return not _driver_library_loads()


@functools.lru_cache(maxsize=None)
def _driver_library_loads():
    """Whether the NVIDIA driver library loads (tried once per process: a few ms)."""
    import ctypes
    import os
    import sys

    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("win"):
        candidates = ["nvcuda.dll"]
    else:
        # Where numba.cuda looks (the loader's path, then /usr/lib and /usr/lib64), and
        # WSL's driver folder.
        names = ["libcuda.so", "libcuda.so.1"]
        candidates = names + [os.path.join(d, n) for d in ("/usr/lib", "/usr/lib64",
                                                            "/usr/lib/wsl/lib")
                              for n in names]
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate)
        except OSError:
            continue
        return True
    return False


def cuda_available():
    """Whether the CUDA backend can run here.

    Returns
    -------
    (bool, str)
        ``(True, "")``, or ``(False, reason)`` where the reason says what is missing:
        numba-cuda, the NVIDIA driver, a GPU, or the CUDA toolkit's NVVM compiler.
        Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the backend is available.
    """
    try:
        from numba import cuda
    except ImportError as exc:
        return False, f"numba.cuda cannot be imported ({exc}); {CUDA_INSTALL_HINT}"
    if getattr(cuda, "implementation", None) != "NVIDIA":
        return False, (f"numba-cuda is not installed (only numba's deprecated built-in CUDA "
                       f"target was found); {CUDA_INSTALL_HINT}")
    try:
        from . import cuda as _backend
    except Exception as exc:  # noqa: BLE001 - numba-cuda's modules can fail in any way
        return False, (f"the fastsde CUDA backend cannot be imported "
                       f"({type(exc).__name__}: {exc})")
    if _backend.simulator_enabled():
        return True, ""
    from numba.cuda.cudadrv import driver as drv

    try:
        drv.driver.ensure_initialized()
        error = drv.driver.initialization_error
    except Exception as exc:  # noqa: BLE001 - CudaSupportError and friends
        error = exc
    if error is not None:
        text = " ".join(str(error).split())
        if "NO_DEVICE" in text or "(100)" in text:
            return False, f"no CUDA GPU was found (the NVIDIA driver is installed: {text})"
        return False, f"the NVIDIA CUDA driver could not be loaded ({text})"
    try:
        if drv.driver.get_device_count() < 1:
            return False, "no CUDA GPU was found (the NVIDIA driver reports 0 devices)"
    except Exception as exc:  # noqa: BLE001
        return False, f"the CUDA driver could not count devices ({exc})"
    try:
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return False, ("the CUDA toolkit's NVVM compiler was not found (a GPU and driver "
                           f"are present); {CUDA_INSTALL_HINT}")
    except Exception as exc:  # noqa: BLE001
        return False, f"NVVM could not be checked ({exc}); {CUDA_INSTALL_HINT}"
    return True, ""
