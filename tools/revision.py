"""Load a module of ``fastsde/kernels`` as it is at another git revision, beside this
checkout's, for the side-by-side tools (ab_normals.py, ab_kernel.py, fmath_same_bits.py)."""

import importlib.util
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load_kernel_module(rev, name):
    """``fastsde/kernels/<name>.py`` at git revision ``rev`` (or the file ``rev``, a version
    not yet committed), imported as ``fastsde.kernels._<name>_rev``: inside the package, so
    that its relative imports resolve to this checkout's modules."""
    if os.path.isfile(rev):
        with open(rev) as f:
            source = f.read()
    else:
        source = subprocess.run(["git", "show", f"{rev}:fastsde/kernels/{name}.py"],
                                check=True, capture_output=True, text=True,
                                cwd=ROOT).stdout
    path = os.path.join(tempfile.mkdtemp(), f"{name}_rev.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"fastsde.kernels._{name}_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a module may look itself up (cpu.py hashes its source)
    spec.loader.exec_module(module)
    return module
