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

import numpy as np


#: The figure's resolution (dots per inch): the canvas is drawn at it once, and written.
DPI = 110


def draw(layout):
    """The demo's Figure, of its own (no pyplot: no global state, no GUI backend chosen,
    a shorter import), with what ``layout`` (:func:`fastsde.cli._demo_figure_layout`)
    holds drawn and the run's artists made empty; returns the :class:`Drawing`, or None
    without matplotlib.

    The axis limits come from the layout, not from the data: the paths' panel spans
    +-4.5 stationary sd (an OU path from 0 never has a larger sd), the density panel up
    to 1.2 times the larger of the stationary and the final exact peak. The data then
    changes no tick, label or limit, and :func:`finish` draws only the data's artists
    over the canvas drawn before it came.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(11, 4), dpi=DPI)
    # Fixed margins: tight_layout would draw the figure once more to measure its labels.
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw=dict(left=0.06, right=0.985, bottom=0.13,
                                                   top=0.92, wspace=0.2))
    t, grid = layout["t"], layout["grid"]
    ax0.fill_between(t, -2 * layout["band"], 2 * layout["band"], color="k", alpha=0.12,
                     label="exact mean ± 2 sd")
    ax0.set(xlabel="t", ylabel="X_t",
            title=f"{layout['name']}: {layout['n_fan']} of the paths",
            xlim=(t[0], t[-1]), ylim=(grid[0], grid[-1]))
    # Animated: the canvas's full draw leaves them out; finish draws them over it.
    paths = ax0.plot(t, np.full((t.size, layout["n_fan"]), np.nan), lw=0.6, alpha=0.7,
                     animated=True)
    legend0 = ax0.legend(loc="upper right")
    n_bins = layout["n_bins"]
    histogram = ax1.stairs(np.zeros(n_bins), np.linspace(grid[0], grid[-1], n_bins + 1),
                           fill=True, alpha=0.6, animated=True,
                           label=f"X_{layout['t1']:g}, {layout['n_final']:,} paths")
    stationary, = ax1.plot(grid, layout["stationary"], "k", animated=True,
                           label="N(0, sigma^2 / (2 theta))")
    final_peak = 1.0 / np.sqrt(2.0 * np.pi * layout["band"][-1] ** 2)
    ax1.set(xlabel="x", ylabel="density", title="final state vs stationary density",
            xlim=(grid[0], grid[-1]),
            ylim=(0.0, 1.2 * max(layout["stationary"].max(), final_peak)))
    legend1 = ax1.legend(handles=[stationary, histogram], loc="upper right")
    # Drawn over the data in this order, as a full draw orders them (zorder): the
    # stationary line over the histogram, the frame over the paths, the legends over
    # everything. The frame is left out of the background too: drawn twice, its
    # antialiased edges came out darker than in a full draw.
    spines = list(ax0.spines.values()) + list(ax1.spines.values())
    over = [stationary] + spines + [legend0, legend1]
    for artist in spines + [legend0, legend1]:
        artist.set_animated(True)
    return Drawing(FigureCanvasAgg(fig), paths, histogram, over)


class Drawing:
    """The demo's figure: its Agg canvas, the run's artists (``paths``, ``histogram``)
    and those drawn over them (``over``)."""

    def __init__(self, canvas, paths, histogram, over):
        self.canvas, self.paths, self.histogram, self.over = canvas, paths, histogram, over
        self.background = None

    def draw_background(self):
        """Draw everything but the run's artists (fonts, ticks, labels, the layout's
        artists): the longer part of the drawing, done before the data comes."""
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.canvas.figure.bbox)


def finish(drawing, layout, data):
    """Draw :func:`fastsde.cli._demo_figure_data`'s ``data`` over the drawing's
    background and write it as a PNG at ``layout["png"]``; returns its path."""
    if drawing.background is None:
        drawing.draw_background()
    for line, path in zip(drawing.paths, data["paths"].T):
        line.set_ydata(path)
    drawing.histogram.set_data(data["density"], data["edges"])
    canvas = drawing.canvas
    canvas.restore_region(drawing.background)
    for artist in drawing.paths + [drawing.histogram] + drawing.over:
        artist.axes.draw_artist(artist)
    # The canvas as drawn, written as it is: savefig would draw the whole figure again.
    from matplotlib.image import imsave
    imsave(layout["png"], np.asarray(canvas.buffer_rgba()), dpi=DPI, format="png")
    return layout["png"]


def serve():
    """The figure process's side of :class:`fastsde.cli._FigureProcess`: read the layout
    (a pickle on stdin), import matplotlib and draw what it holds while the demo
    simulates, then draw the run's data (a second pickle) and answer on stdout."""
    layout = pickle.load(sys.stdin.buffer)
    drawing = draw(layout)
    if drawing is None:
        print("no matplotlib", flush=True)
        return 0
    drawing.draw_background()
    data = pickle.load(sys.stdin.buffer)
    print("wrote " + finish(drawing, layout, data), flush=True)
    # The demo waits for this process's end: skip the interpreter's teardown (a process
    # of ours with nothing left to flush or close).
    os._exit(0)


if __name__ == "__main__":
    serve()
