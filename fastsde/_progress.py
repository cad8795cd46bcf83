"""The progress bar class: tqdm's, as a notebook widget in Jupyter and as text elsewhere.

Imported only when a run asks for a bar. ``tqdm.auto`` picks the same class but also
imports ``tqdm.asyncio``, hence asyncio and ssl: 0.05-0.1 s of a short run's start, for
an ``async for`` that fastsde never uses.
"""

import warnings

from tqdm.std import TqdmExperimentalWarning

with warnings.catch_warnings():
    # tqdm.autonotebook warns in a notebook that its widget is experimental; tqdm.auto
    # silences the same warning.
    warnings.simplefilter("ignore", category=TqdmExperimentalWarning)
    from tqdm.autonotebook import tqdm

__all__ = ["tqdm"]
