"""Pieces every benchmark script shares: the machine's description and where a run's
table and figure are written."""

import os
import platform

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_description():
    """The processor's model name, LLVM's name for it and its widest SIMD: the figures
    depend on them (AVX-512 runs the kernels' lane loops on 512-bit vectors)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import llvmlite.binding as llvm
    from fastsde.kernels import cpu
    features = llvm.get_host_cpu_features()
    simd = next((name for name in ("avx512f", "avx2", "neon", "sse2") if features.get(name)),
                "no SIMD flag known")
    return (f"{model} (LLVM: {llvm.get_host_cpu_name()}, {simd}; fastsde asks for "
            f"{cpu.VECTOR_BITS}-bit vectors)")


def write_report(text, out, name, figure=None):
    """Write the markdown ``text`` to ``out`` (``bench/results/<name>.md`` when ``out`` is
    None; ``"-"``: print only) and, beside it, the figure ``figure(png_path)`` draws (it
    returns the path, or None without matplotlib)."""
    path = out or os.path.join(RESULTS, f"{name}.md")
    if path == "-":
        return
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {path}")
    if figure is not None:
        png = figure(os.path.splitext(path)[0] + ".png")
        if png:
            print(f"wrote {png}")
