"""Pure array math: convolution lowering, softmax, losses and a numerical gradient.

Nothing here keeps state or knows about layers. Images are *channels-last*,
``(N, H, W, C)``: with the channel axis last, the lowered matrix of a
convolution is a reshape of a window view and the GEMM output is already an
image, so no transposes sit in the hot loop.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "conv_output_size",
    "pad_images",
    "im2col",
    "softmax",
    "log_softmax",
    "column_sums",
    "max_pool_2x2",
    "max_pool_2x2_backward",
    "cross_entropy",
    "numerical_gradient",
]


def conv_output_size(size, kernel, stride=1, pad=0):
    """Number of window positions of a convolution along one axis."""
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"a kernel of {kernel} with padding {pad} does not fit an input of "
            f"size {size}; increase the padding or use a smaller kernel"
        )
    return out


def pad_images(x, pad, value=0.0):
    """Pad the two spatial axes of ``(N, H, W, C)`` images by ``pad`` pixels."""
    if pad == 0:
        return x
    n, h, w, c = x.shape
    out = np.full((n, h + 2 * pad, w + 2 * pad, c), value, dtype=x.dtype)  # np.pad: same, 3x the overhead
    out[:, pad : pad + h, pad : pad + w] = x
    return out


def im2col(x, kh, kw, stride=1, pad=0, out=None):
    """Lower a convolution's input to a matrix: one row per output pixel.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    kh, kw : int
        Kernel height and width.
    stride, pad : int
    out : ndarray, optional
        A buffer to fill instead of allocating: ``(N*OH*OW, KH*KW*C)``
        C-ordered, or its transpose when C == 1 (what a previous call returned).

    Returns
    -------
    cols : ndarray of shape (N*OH*OW, KH*KW*C)
        Row ``(n, i, j)`` holds the window under output pixel ``(i, j)`` of
        image ``n``, ordered (ky, kx, channel). For one channel the matrix is
        stored column-major (a transposed view): the copy then moves runs of
        OW pixels instead of runs of 3, about 4x faster, and BLAS takes either
        order at no cost.
    """
    n, h, w, c = x.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    xp = np.ascontiguousarray(pad_images(x, pad))
    sn, sh, sw, sc = xp.strides
    # A read-only view (N, OH, OW, KH, KW*C) of the windows, no copy yet: in a
    # contiguous image the KW*C values of one window row lie side by side, so
    # the copy below moves runs of KW*C values (3x longer than runs of C).
    win = as_strided(
        xp, (n, oh, ow, kh, kw * c), (sn, sh * stride, sw * stride, sh, sc), writeable=False
    )
    if c == 1:
        cols_t = np.empty((kh * kw, n * oh * ow), dtype=x.dtype) if out is None else out.T
        # (N, OH, OW, KH, KW) -> (KH, KW, N, OH, OW)
        np.copyto(cols_t.reshape(kh, kw, n, oh, ow), win.transpose(3, 4, 0, 1, 2))
        return cols_t.T
    cols = np.empty((n * oh * ow, kh * kw * c), dtype=x.dtype) if out is None else out
    np.copyto(cols.reshape(n, oh, ow, kh, kw * c), win)
    return cols


def column_sums(a):
    """Sums over every axis but the last: ``(..., C) -> (C,)``.

    A matrix-vector product with a vector of ones: BLAS does it several times
    faster than numpy's reduction over leading axes (bias gradients, batch norm).
    ``np.dot`` rather than ``@``: for a product with few outputs numpy's matmul
    holds the GIL while BLAS runs, and stalls the other training thread.
    """
    a2 = a.reshape(-1, a.shape[-1])
    return np.dot(np.ones(len(a2), dtype=a.dtype), a2)


# The usual 2x2 max pool with stride 2, as two pairwise maxima: first of
# neighbouring columns, then of neighbouring rows (a reshape puts row pairs
# side by side, so that half runs over long contiguous rows). The two
# comparisons made on the way record where each maximum came from, left
# before right and top before bottom: the first maximum in reading order, as
# in MaxPool2D's general algorithm. Backward then only spreads the gradient
# through those two masks, without touching the input again (about twice as
# fast as finding the maxima anew while the input is out of cache). The
# general algorithm is the oracle in tests/test_layers.py.


def max_pool_2x2(x, training=False):
    """2x2 max pooling with stride 2 of images ``x`` (N, H, W, C), H and W even.

    Returns ``(out, state)``: ``out`` of shape (N, H/2, W/2, C), and for
    ``training`` the masks :func:`max_pool_2x2_backward` needs (else None).
    """
    n, h, w, c = x.shape
    cols = x.reshape(n * h, w // 2, 2, c)  # column pairs
    left, right = cols[:, :, 0], cols[:, :, 1]
    m = np.maximum(left, right)
    rows = m.reshape(n * h // 2, 2, w // 2 * c)  # row pairs of the column maxima
    top, bottom = rows[:, 0], rows[:, 1]
    out = np.maximum(top, bottom).reshape(n, h // 2, w // 2, c)
    if not training:
        return out, None
    return out, (left >= right, top >= bottom, x.shape)


def max_pool_2x2_backward(grad, state):
    """Input gradient (N, H, W, C) of :func:`max_pool_2x2` from ``grad``
    (N, H/2, W/2, C) and the ``state`` its forward returned."""
    from_left, from_top, shape = state
    n, h, w, c = shape
    g = grad.reshape(n * h // 2, w // 2 * c)
    g_rows = np.empty((n * h // 2, 2, w // 2 * c), dtype=grad.dtype)
    np.multiply(g, from_top, out=g_rows[:, 0])  # multiply by a bool mask: 5x faster than np.where
    np.subtract(g, g_rows[:, 0], out=g_rows[:, 1])  # the rest goes to the bottom row
    g_rows = g_rows.reshape(n * h, w // 2, c)
    dx = np.empty((n * h, w // 2, 2, c), dtype=grad.dtype)
    np.multiply(g_rows, from_left, out=dx[:, :, 0])
    np.subtract(g_rows, dx[:, :, 0], out=dx[:, :, 1])
    return dx.reshape(shape)


def log_softmax(z):
    """Row-wise log-softmax of logits ``z`` (N, K); never overflows."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z):
    """Row-wise softmax of logits ``z`` (N, K); rows sum to one."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(log_probs, y, sample_weight=None, label_smoothing=0.0):
    """Mean negative log-likelihood of integer labels ``y``.

    With ``sample_weight`` the mean is weighted: ``sum(w * nll) / sum(w)``, so
    an integer weight counts exactly like that many repeated samples.

    With ``label_smoothing`` = eps the target of a sample is not its one-hot
    label but ``(1 - eps) * onehot + eps / K`` over the K classes (Szegedy et
    al. 2016, "Rethinking the Inception architecture", section 7): its loss is
    ``(1 - eps) * nll + eps * mean_k(-log p_k)``.
    """
    nll = -log_probs[np.arange(len(y)), y]
    if label_smoothing:
        eps = log_probs.dtype.type(label_smoothing)
        nll = (1 - eps) * nll - eps * log_probs.mean(axis=1)
    if sample_weight is None:
        return float(nll.mean(dtype=np.float64))
    sw = np.asarray(sample_weight, dtype=np.float64)
    return float(np.dot(sw, nll) / sw.sum())


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference gradient of the scalar function ``f()`` w.r.t. ``x``.

    ``x`` is perturbed in place, one element at a time, and restored; ``f``
    takes no arguments and must read ``x``. Use float64: in float32 the
    differences drown in rounding.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)  # a view: writes reach x
    flat_g = grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + eps
        f_plus = f()
        flat_x[i] = old - eps
        f_minus = f()
        flat_x[i] = old
        flat_g[i] = (f_plus - f_minus) / (2 * eps)
    return grad
