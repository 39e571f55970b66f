"""Evaluating array kernels in blocks: elementwise ones in cache-sized pieces, ragged ones (a row of its own length per
element: quadrature nodes, a class's spectrum) in padded groups of similar lengths.
May import: numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Points per pass of the elementwise kernels. One pass over a whole array streams each of the
#: kernel's dozen temporaries through main memory; in blocks of this size they stay in the CPU
#: cache, which makes the kernels 2-3x faster with bit-identical results (benchmarks/theory_speed.py).
BLOCK = 8192


def blockwise(kernel, x: np.ndarray) -> np.ndarray:
    """``kernel`` (elementwise, float64 in and out) applied to ``x`` block by block: same values, less memory traffic."""
    flat = x.reshape(-1)
    if flat.size <= BLOCK:
        return kernel(flat).reshape(x.shape)
    out = np.empty_like(flat)
    for start in range(0, flat.size, BLOCK):
        out[start : start + BLOCK] = kernel(flat[start : start + BLOCK])
    return out.reshape(x.shape)


def ragged_blocks(lengths, budget: int = 1 << 20, slack: float = 0.25) -> Iterator[np.ndarray]:
    """Groups of element indices for a kernel that gives element i a row of ``lengths[i]`` entries, padded to its
    group's longest: elements sorted by length, a group's lengths within ``slack`` (plus 8) of its shortest, so padding
    wastes at most about ``slack / (1 + slack)`` of a linear kernel's work, and ``group size x longest <= budget``
    entries (a single longer element alone). Every index appears in exactly one group."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < order.size:
        first, stop = lengths[order[start]], start + 1
        while (
            stop < order.size
            and lengths[order[stop]] <= (1 + slack) * first + 8
            and (stop + 1 - start) * lengths[order[stop]] <= budget
        ):
            stop += 1
        yield order[start:stop]
        start = stop


def class_slices(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, edges): one stable sort of ``labels`` (ints in [0, num_classes)) that puts every class's rows together;
    class c's rows are ``order[edges[c] : edges[c + 1]]``, in their original order. O(N log N) once, where a mask per
    class would cost O(C N)."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(num_classes + 1))
