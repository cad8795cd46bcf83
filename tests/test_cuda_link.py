"""The CUDA backend's launch path without a GPU, and its guards.

1. Link: every kernel is compiled by ``fastsde.kernels.cuda.jit_kernel`` exactly as on a
   GPU (numba-cuda's dispatcher, for an sm_90 device that is faked), which also links it:
   numba-cuda hands the PTX (or, with LTO, the LTO-IR) to nvJitLink and loads the cubin it
   gets back; the fake context keeps that cubin. Its SASS (nvdisasm) must have no more
   fused multiply-adds (DFMA, FFMA) than ``ptxas --fmad=false`` makes of the PTX compiled
   under ``exact_fp``: the remaining ones are the expansions of the correctly rounded
   division and square root (there is no hardware f64 divide) and, in float32, the
   transform's explicit ``fmaf``. With numba-cuda's default ``lto=True`` the link step
   fuses products and sums of its own and these tests fail.
2. The numba-cuda internals check, the device-memory check and the driver check, with the
   queried functions monkeypatched (no GPU here).
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest

import fastsde as fs
from fastsde import methods

IN_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def _backend():
    if IN_SIMULATOR:
        return None, "the CUDA simulator cannot compile PTX (these tests run without it)"
    try:
        from numba import cuda

        if getattr(cuda, "implementation", None) != "NVIDIA":
            return None, "numba-cuda is not installed"
        from fastsde.kernels import cuda as kc
    except ImportError as exc:
        return None, f"the fastsde CUDA backend cannot be imported ({exc})"
    return kc, None


KC, BACKEND_SKIP = _backend()
needs_backend = pytest.mark.skipif(KC is None, reason=str(BACKEND_SKIP))


def _tool(name):
    try:
        from cuda import pathfinder

        return pathfinder.find_nvidia_binary_utility(name)
    except Exception:  # noqa: BLE001
        return None


def _link_skip_reason():
    if KC is None:
        return BACKEND_SKIP
    try:
        from numba.cuda.cudadrv import nvvm
        from numba.cuda.cudadrv.driver import _have_nvjitlink

        if not nvvm.is_available():
            return "the CUDA toolkit's NVVM is not installed (pip install 'fastsde[test]')"
        if not _have_nvjitlink():
            return "nvJitLink (>= 12.3) is not installed (nvidia-nvjitlink-cu12)"
    except Exception as exc:  # noqa: BLE001
        return f"NVVM/nvJitLink cannot be loaded ({' '.join(str(exc).split())[:200]})"
    for tool, wheel in (("nvdisasm", "nvidia-cuda-nvdisasm"),
                        ("ptxas", "nvidia-cuda-nvcc-cu12")):
        if _tool(tool) is None:
            return f"{tool} was not found (pip install {wheel})"
    return None


LINK_SKIP = _link_skip_reason()
needs_link = pytest.mark.skipif(LINK_SKIP is not None, reason=str(LINK_SKIP))

OU = fs.OU(theta=1.0, sigma=0.5)
GBM = fs.GBM(mu=0.3, sigma=0.4, dim=2)


def osc_drift(t, x, p, out):
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1]


OSC = fs.ODE(osc_drift, dim=2, params=(4.0, 0.3), name="oscillator")


@contextlib.contextmanager
def _fake_device(cc, cubins):
    """numba-cuda's view of a device of compute capability ``cc``: the dispatcher and the
    code library ask it for the capability; loading a module records the linked cubin."""
    from numba.cuda import codegen
    from numba.cuda import dispatcher as _dispatcher

    device = types.SimpleNamespace(compute_capability=cc, id=0)

    def create_module_image(image, *args, **kwargs):
        cubins.append(image)
        module = types.SimpleNamespace(initialized=True)
        return types.SimpleNamespace(
            get_function=lambda name: types.SimpleNamespace(module=module, name=name))

    context = types.SimpleNamespace(device=device, create_module_image=create_module_image)
    saved = codegen.devices.get_context, _dispatcher.get_current_device
    codegen.devices.get_context = lambda *a, **k: context
    _dispatcher.get_current_device = lambda: device
    try:
        yield
    finally:
        codegen.devices.get_context, _dispatcher.get_current_device = saved


def _fma_counts(sass):
    return (len(re.findall(r"\bDFMA\b", sass)), len(re.findall(r"\bFFMA\b", sass)))


def _sass(cubin_bytes, tmp):
    path = os.path.join(tmp, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin_bytes)
    return subprocess.run([_tool("nvdisasm"), path], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def _assembled_without_fma(ptx, arch, tmp):
    """SASS of ``ptx`` assembled by ptxas with contraction off: the FMAs it has are the
    ones the PTX asks for (explicit fma, division and square root expansions)."""
    src, out = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "ref.cubin")
    with open(src, "w") as f:
        f.write(ptx)
    subprocess.run([_tool("ptxas"), f"-arch={arch}", "--fmad=false", "-o", out, src],
                   check=True, capture_output=True, timeout=300)
    with open(out, "rb") as f:
        return _sass(f.read(), tmp)


def _linked(pyfunc_or_source, sig, fastmath=False):
    """(dispatcher, cubin bytes) of a kernel compiled by jit_kernel as on an sm_90 GPU."""
    cubins = []
    with _fake_device((9, 0), cubins):
        disp = KC.jit_kernel(pyfunc_or_source, sig, fastmath)
    assert len(cubins) == 1, "the dispatcher did not link the kernel while compiling"
    cubin = cubins[0]
    return disp, bytes(getattr(cubin, "code", cubin))


LINK_VARIANTS = [("ou-euler_maruyama", OU, "euler_maruyama"),
                 ("gbm-heun", GBM, "heun"),
                 ("osc-rk4", OSC, "rk4")]


def _kernels(dtype):
    dtype = np.dtype(dtype).type
    for name, model, method in LINK_VARIANTS:
        yield name, (lambda m=model, meth=method: KC._make_path_kernel(
            m, methods.METHODS[meth], dtype, KC.FASTMATH[dtype], cc=(9, 0))), \
            KC.path_signature(model, dtype), KC.FASTMATH[dtype]
    yield "stats", (lambda: KC.stats_kernel), KC.stats_signature(dtype), False
    yield "hist", (lambda: KC.hist_kernel), KC.hist_signature(dtype), False


@needs_link
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_launch_cubin_has_no_fused_multiply_add_of_its_own(dtype, monkeypatch):
    monkeypatch.setattr(KC, "check_driver", lambda: None)  # no driver here
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, sig, fastmath in _kernels(dtype):
            if fastmath:
                continue  # the fast-math option fuses on purpose
            disp, cubin = _linked(make(), sig, fastmath)
            kernel = next(iter(disp.overloads.values()))
            lib = kernel._codelibrary
            assert not getattr(lib, "_lto", False), f"{name}: linked with LTO"
            with _fake_device((9, 0), []):
                ptx = lib.get_asm_str()  # cached by the compile under exact_fp
            assert "fma.rn.f64" not in ptx, name
            arch = "sm_90a" if ".target sm_90a" in ptx else "sm_90"
            linked = _fma_counts(_sass(cubin, tmp))
            reference = _fma_counts(_assembled_without_fma(ptx, arch, tmp))
            assert linked[0] <= reference[0] and linked[1] <= reference[1], (
                f"{name} {dtype}: the cubin the launch loads has (DFMA, FFMA) = {linked}, "
                f"more than the {reference} of its exact_fp PTX assembled without "
                f"contraction: the link step fused multiply-adds")


@needs_link
def test_link_check_is_not_vacuous(monkeypatch):
    """With numba-cuda's default (LTO through nvJitLink) the same comparison fails."""
    from numba import cuda

    monkeypatch.setattr(KC, "check_driver", lambda: None)
    cubins = []
    model = OU
    source = KC._make_path_kernel(model, methods.METHODS["euler_maruyama"], np.float64,
                                  False, cc=(9, 0))
    with _fake_device((9, 0), cubins):
        disp = cuda.jit(source, fastmath=False, lto=True)
        with KC.exact_fp():
            disp.compile(KC.path_signature(model, np.float64))
    lib = next(iter(disp.overloads.values()))._codelibrary
    with _fake_device((9, 0), []):
        ptx = lib.get_asm_str()
    with tempfile.TemporaryDirectory() as tmp:
        linked = _fma_counts(_sass(bytes(getattr(cubins[0], "code", cubins[0])), tmp))
        reference = _fma_counts(_assembled_without_fma(
            ptx, "sm_90a" if ".target sm_90a" in ptx else "sm_90", tmp))
    assert "fma.rn.f64" not in ptx
    assert linked[0] > reference[0]


# --- the disk cache --------------------------------------------------------------------

CACHE_CHILD = r"""
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import test_cuda_link as T
from numba.cuda.cudadrv import driver
from fastsde import methods

T.KC.check_driver = lambda: None  # no driver here
links = []
linker = driver._Linker


def counting_linker(*args, **kwargs):
    links.append(1)
    return linker(*args, **kwargs)


driver._Linker = counting_linker
models = {"ou": T.OU, "gbm": T.GBM}
out = {}
cubins = []
with T._fake_device((9, 0), cubins):
    for name in sys.argv[2:]:
        before, linked = len(cubins), len(links)
        kernel = T.KC.get_kernel(models[name], methods.METHODS["euler_maruyama"], np.float64)
        for disp in (kernel.path, kernel.stats):  # what a launch does: load the cubin
            next(iter(disp.overloads.values()))._codelibrary.get_cufunc()
        out[name] = dict(
            misses=sum(sum(d._cache_misses.values()) for d in (kernel.path, kernel.stats)),
            hits=sum(sum(d._cache_hits.values()) for d in (kernel.path, kernel.stats)),
            links=len(links) - linked,
            cubins=[hashlib.sha256(bytes(getattr(c, "code", c))).hexdigest()
                    for c in cubins[before:]])
print(json.dumps(out))
"""


def _cache_child(cache_dir, *names):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    run = subprocess.run([sys.executable, "-c", CACHE_CHILD, os.path.dirname(__file__),
                          *names], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@needs_link
def test_kernels_load_from_the_disk_cache_with_the_cubin_they_were_linked_to(tmp_path):
    """A second process finds the path and statistics kernels in the disk cache (no
    compile, no link) and loads the cubin the first process linked under exact_fp, byte
    for byte; another model's kernel is not mistaken for it (a miss, compiled)."""
    first = _cache_child(tmp_path, "ou")["ou"]
    assert first["misses"] == 2 and first["hits"] == 0 and first["links"] == 2, first
    second = _cache_child(tmp_path, "ou", "gbm")
    again, other = second["ou"], second["gbm"]
    assert again["misses"] == 0 and again["hits"] == 2 and again["links"] == 0, again
    assert again["cubins"] == first["cubins"], (again["cubins"], first["cubins"])
    # GBM compiles its own path kernel and shares the float64 statistics kernel.
    assert other["misses"] == 1 and other["links"] == 1, other
    assert other["cubins"][0] not in first["cubins"]


# --- numba-cuda internals --------------------------------------------------------------

@needs_backend
def test_internals_check_passes_with_the_installed_numba_cuda():
    KC.check_numba_cuda_internals()


@needs_backend
def test_internals_check_names_the_missing_internal(monkeypatch):
    from numba.cuda.cudadrv import nvvm

    monkeypatch.delattr(nvvm, "compile_ir")
    with pytest.raises(ImportError) as err:
        KC.check_numba_cuda_internals()
    text = str(err.value)
    assert "numba.cuda.cudadrv.nvvm.compile_ir" in text
    assert KC.numba_cuda_version() in text and KC.NUMBA_CUDA_SUPPORTED in text


@needs_backend
def test_internals_check_reports_a_module_that_breaks_on_import(monkeypatch, tmp_path):
    """numba-cuda 0.30.4 under numpy 2.5 stops importing numba.cuda.cudaimpl with an
    AttributeError (np.row_stack); the check turns any such failure into an ImportError
    naming the module, the error and both versions, which cuda_available reports."""
    (tmp_path / "fastsde_broken_module.py").write_text(
        "raise AttributeError(\"module 'numpy' has no attribute 'row_stack'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as err:
        KC.check_numba_cuda_internals((("fastsde_broken_module", "x", "a test"),))
    text = str(err.value)
    assert "fastsde_broken_module" in text and "row_stack" in text, text
    assert KC.numba_cuda_version() in text and np.__version__ in text, text
    assert KC.NUMPY_SUPPORTED_WITH_CUDA in text, text


def test_cuda_available_reports_a_backend_that_breaks_on_import(monkeypatch):
    """Any exception from importing the backend is a reason, not a crash of
    device="auto"."""
    import builtins

    import fastsde.kernels as kernels
    from fastsde import api

    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 1 and fromlist and "cuda" in fromlist and name == "":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(kernels, "cuda", None, raising=False)
    monkeypatch.delitem(sys.modules, "fastsde.kernels.cuda", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    ok, why = kernels.cuda_available()
    assert not ok and "AttributeError" in why and "row_stack" in why, why
    monkeypatch.setattr(kernels, "cuda_driver_absent", lambda: False)
    assert api._resolve_device("auto") == "cpu"


@needs_backend
def test_internals_check_requires_the_lto_option(monkeypatch):
    from numba import cuda

    def jit(func_or_sig=None, device=False, **kws):
        return None

    monkeypatch.setattr(cuda, "jit", jit)
    with pytest.raises(ImportError, match=r"cuda\.jit\(lto=\.\.\.\)"):
        KC.check_numba_cuda_internals()


@needs_backend
def test_pyproject_pins_the_supported_range():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        text = f.read()
    assert text.count(f'"numba-cuda[cu12]{KC.NUMBA_CUDA_SUPPORTED}", '
                      f'"numpy{KC.NUMPY_SUPPORTED_WITH_CUDA}"') == 2
    from packaging.specifiers import SpecifierSet

    assert KC.numba_cuda_version() in SpecifierSet(KC.NUMBA_CUDA_SUPPORTED)


# --- device memory ----------------------------------------------------------------------

@needs_backend
def test_batch_that_does_not_fit_raises_a_clear_error():
    parts = (("final state", 8), ("saved states", 8000))
    KC.check_batch_fits(512, 8008, 100, free=10 * 2**20, parts=parts)  # 3.9 MiB: fits
    KC.check_batch_fits(512, 8008, 100, free=None, parts=parts)  # unknown: not checked
    with pytest.raises(fs.OutputTooLargeError) as err:
        KC.check_batch_fits(512, 8008, 100, free=2**20, parts=parts)
    text = str(err.value)
    for part in ("512 paths", "3.9 MiB", "1.0 MiB free", "8008 bytes per path",
                 "saved states 8000", "keep_x=False", "keep_paths=False", "device='cpu'"):
        assert part in text, part


@needs_backend
def test_batches_follow_free_memory():
    assert KC._batch_paths(10**6, 512, 100, free=None) == 10**6 // 512 * 512 + 512
    assert KC._batch_paths(10**6, 512, 100, free=2 * 512 * 100 * 3) == 3 * 512
    assert KC._batch_paths(10**6, 512, 100, free=10) == 512  # smallest: one chunk


@needs_backend
def test_run_checks_memory_before_allocating(monkeypatch):
    """``run`` raises before any device allocation when one chunk of paths does not fit."""
    from numba import cuda

    monkeypatch.setattr(KC, "_free_device_bytes", lambda: 4096)

    def no_alloc(*a, **k):
        raise AssertionError("allocated on the device before the memory check")

    monkeypatch.setattr(cuda, "to_device", no_alloc)
    monkeypatch.setattr(cuda, "device_array", no_alloc)
    args = types.SimpleNamespace(
        n_paths=2048, chunk=512, x0_mean=np.zeros(2), x0_std=np.zeros(2),
        x0_rows=np.zeros((1, 2)), x0_mode=KC.X0_SHARED, params=np.zeros((1, 1)),
        save_steps=np.arange(1, 11), x_out=np.zeros((0, 2)), paths_out=np.zeros((11, 0, 2)),
        st_count=np.zeros((4, 10, 2)), ob_count=np.zeros((0, 0, 0)),
        hit_count=np.zeros((0, 1, 1)), hit_out=np.zeros(0), hist=np.zeros((0, 0, 2, 3)),
        hist_edges=np.zeros((2, 2)))  # the fields of layout.KernelArgs that run reads
    with pytest.raises(fs.OutputTooLargeError, match="GPU memory"):
        KC.run(None, args)


# --- driver -----------------------------------------------------------------------------

@pytest.fixture
def driver(monkeypatch):
    monkeypatch.setattr(KC, "_DRIVER_CHECKED", [])
    monkeypatch.setattr(KC, "_nvvm_ptx_version", lambda: (8, 8))
    monkeypatch.setattr(KC, "_nvjitlink_version", lambda: (12, 9))

    def setup(backend, version):
        monkeypatch.setattr(KC, "_link_backend", lambda: backend)
        monkeypatch.setattr(KC, "_driver_version", lambda: version)

    return setup


@needs_backend
def test_driver_link_needs_a_driver_that_knows_the_ptx(driver):
    driver("driver", (12, 4))
    with pytest.raises(fs.DeviceError) as err:
        KC.check_driver()
    text = str(err.value)
    assert "CUDA 12.4" in text and "ISA 8.8" in text and "CUDA 12.9" in text
    assert "nvJitLink" in text


@needs_backend
def test_driver_new_enough_passes_once(driver):
    driver("driver", (12, 9))
    KC.check_driver()
    assert KC._DRIVER_CHECKED == [True]


@needs_backend
def test_nvjitlink_link_needs_only_the_major_version(driver):
    driver("nvjitlink", (12, 0))
    KC.check_driver()  # a cubin: minor-version compatibility
    KC._DRIVER_CHECKED.clear()
    driver("nvjitlink", (11, 8))
    with pytest.raises(fs.DeviceError, match=r"CUDA 11\.8.*nvJitLink 12\.9"):
        KC.check_driver()


@needs_backend
def test_the_link_backend_and_ptx_version_can_be_read_without_a_gpu():
    assert KC._link_backend() in ("nvjitlink", "driver")
    version = KC._nvvm_ptx_version()
    assert version is None or version >= (7, 8)
