"""The demo's figure: drawn in the figure process of ``fastsde demo``
(:class:`fastsde.cli._FigureProcess`), or in the demo's own process when that one fails.

The figure process runs this file as a script (``runpy.run_path``), not as a module of
the package: it needs matplotlib and the pickled arrays (numpy), not fastsde, whose
import cost the figure process 0.07-0.1 s of a second run's second (its importing numba
is not needed either). So this file imports nothing of fastsde's.
"""

import os
import pickle
import sys


def draw(layout):
    """The demo's Figure, of its own (no pyplot: no global state, no GUI backend chosen,
    a shorter import), with what ``layout`` (:func:`fastsde.cli._demo_figure_layout`)
    holds drawn; returns (figure, axes), or None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(11, 4))
    # Fixed margins: tight_layout would draw the figure once more to measure its labels.
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw=dict(left=0.06, right=0.985, bottom=0.13,
                                                   top=0.92, wspace=0.2))
    ax0.fill_between(layout["t"], -2 * layout["band"], 2 * layout["band"], color="k",
                     alpha=0.12, label="exact mean ± 2 sd")
    ax0.set(xlabel="t", ylabel="X_t", title=f"{layout['name']}: 60 of the paths")
    ax0.legend(loc="upper right")
    ax1.plot(layout["grid"], layout["stationary"], "k", label="N(0, sigma^2 / (2 theta))")
    ax1.set(xlabel="x", ylabel="density", title="final state vs stationary density")
    return fig, (ax0, ax1)


def finish(fig, axes, layout, data):
    """Draw :func:`fastsde.cli._demo_figure_data`'s ``data`` on :func:`draw`'s
    figure and write it (a .png: the Agg canvas, which savefig picks); returns its path."""
    ax0, ax1 = axes
    ax0.plot(layout["t"], data["paths"], lw=0.6, alpha=0.7)
    # One filled outline instead of 200 bar patches: the same histogram, drawn faster.
    ax1.stairs(data["density"], data["edges"], fill=True, alpha=0.6,
               label=f"X_{layout['t1']:g}, {layout['n_final']:,} paths")
    ax1.legend(loc="upper right")
    fig.savefig(layout["png"], dpi=110)
    return layout["png"]


def serve():
    """The figure process's side of :class:`fastsde.cli._FigureProcess`: read the layout
    (a pickle on stdin), import matplotlib and draw what it holds while the demo
    simulates, then draw the run's data (a second pickle) and answer on stdout."""
    layout = pickle.load(sys.stdin.buffer)
    made = draw(layout)
    if made is None:
        print("no matplotlib", flush=True)
        return 0
    # Draw once before the data comes: the Agg canvas, the fonts, the ticks and the
    # layout's artists are made then, and the drawing that follows the data is short.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(made[0]).draw()
    data = pickle.load(sys.stdin.buffer)
    print("wrote " + finish(*made, layout, data), flush=True)
    # The demo waits for this process's end: skip the interpreter's teardown (a process
    # of ours with nothing left to flush or close).
    os._exit(0)


if __name__ == "__main__":
    serve()
