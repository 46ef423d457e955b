"""The compiled scan of search by meaning (``vectors.scores``); imported only when a meaning search runs.

numba (in the lock already through librosa; a direct requirement now): numpy has no int8 x float32
product without first widening the whole matrix to float32 (1.4 GB written and read per query at
900,000 passages); this loop widens in registers and LLVM vectorises it (fastmath lets it reorder the
additions: the scores equal the float32 product's up to rounding). ``cache=True`` keeps the machine
code between processes (in ``__pycache__`` beside this file, else numba's per-user cache).
"""

import numpy as np
from numba import njit


@njit(fastmath=True, cache=True, nogil=True)
def dot_rows(mat, q, out):  # pragma: no cover - compiled
    n, d = mat.shape
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += np.float32(mat[i, j]) * q[j]
        out[i] = acc
