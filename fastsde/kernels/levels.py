"""The sums of a multilevel Monte Carlo level, written once and compiled for both
targets (cpu.py, cuda.py).

A level batch is cut into chunks of ``CHUNK`` pairs (``api.CHUNK_PATHS``, a power of
two). Each pair contributes the six values of :func:`pair_moments` to slot ``slot`` of a
(6, CHUNK) float64 buffer (zeros for the slots past the batch's end and for a pair whose
payoff is not finite, which is counted instead). A chunk's sums are the buffer folded as
a pairwise tree, ``v[i] += v[i + s]`` for i < s, s = CHUNK/2, CHUNK/4, ..., 1: the order
a block of GPU threads adds in parallel and the CPU adds in a loop, so both give the same
bits. The host adds the chunks' sums in chunk order (mlmc.py).
"""

#: What a level accumulates per chunk, in float64: the correction Y = P_f - P_c and its
#: powers up to 4 (Giles's kurtosis check), then P_f and P_f^2.
MLMC_SUMS = ("y", "y2", "y3", "y4", "pf", "pf2")


def pair_moments(y, pf, v, slot):
    """Write a pair's six values into column ``slot`` of ``v`` (6, CHUNK) float64."""
    y2 = y * y
    v[0, slot] = y
    v[1, slot] = y2
    v[2, slot] = y2 * y
    v[3, slot] = y2 * y2
    v[4, slot] = pf
    v[5, slot] = pf * pf


def fold_chunk(v, chunk):
    """The pairwise tree of the module docstring, in a loop (the CPU's order); the sums
    end in column 0. ``chunk`` is a power of two."""
    s = chunk >> 1
    while s > 0:
        for r in range(v.shape[0]):
            for i in range(s):
                v[r, i] += v[r, i + s]
        s >>= 1
