"""ptxas's resource report for kernels' PTX (no GPU needed): registers, stack frame and
spills per thread, as docs/cuda.md's table states them and the tests keep them."""

import functools
import os
import re
import subprocess
import tempfile
import types

#: docs/cuda.md, "Registers and local memory": registers per thread on sm_90.
#: Path kernels of models whose functions index with compile-time indices (every model of
#: the test suite but the generative ones): at most 64 in float32 and 80 in float64 (at
#: most 64 keeps 4 blocks of 256 threads, 50 % occupancy, resident per SM). Every kernel,
#: the generative models' and the reductions included: at most 128.
MAX_REGISTERS = {"float32": 64, "float64": 80}
#: The higher-order schemes keep more stage values live: SRIW1 four diffusion values and
#: its iterated integrals, DRI1 1 + 4 m diffusion evaluations (13 for the 2 x 3 general
#: noise of the suite). No spills and no stack frame either way (docs/cuda.md).
MAX_REGISTERS_BY_METHOD = {"sriw1": {"float32": 64, "float64": 104},
                           "dri1": {"float32": 96, "float64": 160}}
MAX_REGISTERS_ANY = 128


def tool(name):
    """Path of a CUDA binary utility (ptxas, nvdisasm) from the pip wheels, or None."""
    try:
        from cuda import pathfinder

        return pathfinder.find_nvidia_binary_utility(name)
    except Exception:  # noqa: BLE001
        return None


@functools.lru_cache(maxsize=None)
def resources(ptx, arch="sm_90"):
    """ptxas -v's report of the one kernel in ``ptx``, once per PTX text and ``arch`` in a
    process: the statistics and histogram kernels depend on the dtype alone, and each of
    the register checks of a dtype reads the same two (0.15-0.18 s of ptxas each).

    Returns
    -------
    dict
        ``registers``, ``stack`` (bytes of stack frame), ``spill_stores``,
        ``spill_loads`` (bytes), ``log`` (ptxas's text).
    """
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        done = subprocess.run([tool("ptxas"), "-v", f"-arch={arch}", "-o",
                               os.path.join(tmp, "k.cubin"), src],
                              capture_output=True, text=True, timeout=300)
    log = done.stderr
    # What the launch's link (nvJitLink runs the same assembler) would refuse, e.g. more
    # than 64 KiB of constant data.
    assert done.returncode == 0, f"ptxas cannot assemble the kernel for {arch}:\n{log}"
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                      r"(\d+) bytes spill loads", log)
    registers = re.search(r"Used (\d+) registers", log)
    assert frame and registers, log
    stack, stores, loads = (int(g) for g in frame.groups())
    # A mapping that cannot be changed: the report is shared by every caller.
    return types.MappingProxyType(dict(registers=int(registers.group(1)), stack=stack,
                                       spill_stores=stores, spill_loads=loads, log=log))


def check(name, ptx, max_registers, max_stack=0):
    """Assert ptxas's report for ``ptx``: no spills, a stack frame of at most
    ``max_stack`` bytes (0: everything in registers), at most ``max_registers``."""
    r = resources(ptx)
    assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{name} spills: {r['log']}"
    assert r["stack"] <= max_stack, (
        f"{name}: {r['stack']}-byte stack frame (at most {max_stack} allowed): an array "
        f"the kernel indexes with a run-time index lives in local memory\n{r['log']}")
    assert r["registers"] <= max_registers, (
        f"{name}: {r['registers']} registers per thread, more than {max_registers}\n"
        f"{r['log']}")
    return r
