"""The fastsde functions that Numba compiles while a block runs (its ``numba:compile``
events), for tests/test_compile.py, in the test process and in child interpreters."""

import re
from contextlib import contextmanager

from numba.core import event


def piece(qualname):
    """A compiled piece's name without the fingerprint that ``cpu.named`` appends."""
    return re.sub(r"_[0-9a-f]{24}$", "", qualname)


class Compiled(list):
    """Piece names; ``qualnames``: the same functions' full qualified names (with the
    fingerprint, as their files in Numba's disk cache are named)."""

    def __init__(self):
        super().__init__()
        self.qualnames = []


@contextmanager
def fastsde_compiles():
    """Yield a list that collects the piece names (``run_chunk``, ``save_block``, ...) of
    the fastsde functions compiled inside the block (:class:`Compiled`); Numba's own
    overloads (``np.empty`` and friends, compiled once per process whatever the kernel)
    are left out."""
    names = Compiled()

    class Listener(event.Listener):
        def on_start(self, ev):
            if (ev.data or {}).get("fastsde_stage") == "merge":
                return  # a framed kernel's merge (cpu._framed_kernel): no Numba compile
            py_func = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
            if py_func is not None and py_func.__module__.startswith("fastsde"):
                names.append(piece(py_func.__qualname__))
                names.qualnames.append(py_func.__qualname__)

        def on_end(self, ev):
            pass

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        yield names
    finally:
        event.unregister("numba:compile", listener)
