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
    "conv2d",
    "conv2d_kernel_grad",
    "conv2d_input_grad",
    "conv2d_backward",
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
    xp = np.ascontiguousarray(pad_images(x, pad))
    return _lower(_windows(xp, kh, kw, stride), kw, out)


def _windows(xp, kh, kw, stride):
    """A read-only view (N, OH, OW, KH, KW*C) of the windows of the (padded,
    contiguous) images ``xp``, no copy yet: in a contiguous image the KW*C
    values of one window row lie side by side, so the copy that lowers them
    moves runs of KW*C values (3x longer than runs of C). Slicing it along
    N gives a block's windows at no cost (making it takes ~20 us)."""
    n, h, w, c = xp.shape
    oh, ow = conv_output_size(h, kh, stride), conv_output_size(w, kw, stride)
    sn, sh, sw, sc = xp.strides
    return as_strided(xp, (n, oh, ow, kh, kw * c), (sn, sh * stride, sw * stride, sh, sc), writeable=False)


def _lower(win, kw, out=None):
    """Copy a window view from :func:`_windows` into its im2col matrix (see :func:`im2col`)."""
    n, oh, ow, kh, kwc = win.shape
    if kwc == kw:  # one channel
        cols_t = np.empty((kh * kw, n * oh * ow), dtype=win.dtype) if out is None else out.T
        # (N, OH, OW, KH, KW) -> (KH, KW, N, OH, OW)
        np.copyto(cols_t.reshape(kh, kw, n, oh, ow), win.transpose(3, 4, 0, 1, 2))
        return cols_t.T
    cols = np.empty((n * oh * ow, kh * kwc), dtype=win.dtype) if out is None else out
    np.copyto(cols.reshape(n, oh, ow, kh, kwc), win)
    return cols


#: Bytes of the lowered matrix of one block of images in :func:`conv2d`: about
#: half a core's L2 cache, so that the block's im2col rows are still in cache
#: when the matrix product reads them. Lowering all images at once instead
#: writes the matrix out to memory and reads it back (45 MB for a batch of 50
#: 28x28 images with 32 channels): the blocks are about 1.3x faster, and
#: nothing of that size is kept for the backward pass.
CONV_BLOCK_BYTES = 1 << 20


def _lowered_blocks(x, kh, kw, stride, pad):
    """``(rows, cols)`` for blocks of the images ``x`` (N, H, W, C), in order:
    ``cols`` is the im2col matrix of a block (:func:`im2col`), ``rows`` the
    slice of the whole batch's im2col rows it holds. A block's lowered matrix
    fills about :data:`CONV_BLOCK_BYTES` (at least one image a block); each
    full block is lowered into the same buffer, so use ``cols`` before asking
    for the next one."""
    n, c = len(x), x.shape[-1]
    win = _windows(np.ascontiguousarray(pad_images(x, pad)), kh, kw, stride)  # padded once, not block by block
    per_image = win.shape[1] * win.shape[2]  # output pixels: rows of the lowered matrix
    b = max(1, CONV_BLOCK_BYTES // (per_image * kh * kw * c * x.itemsize))
    buffer = None
    for start in range(0, n, b):
        block = win[start : start + b]
        cols = _lower(block, kw, out=buffer if len(block) == b else None)
        if len(block) == b:
            buffer = cols
        yield slice(start * per_image, (start + len(block)) * per_image), cols


def conv2d(x, w, stride=1, pad=0):
    """2-D convolution (cross-correlation) of channels-last images.

    Each block of images is lowered (:func:`im2col`) and multiplied by the
    kernels, ``cols @ w.reshape(K*K*C, F)``, into its part of the output,
    block after block (see :data:`CONV_BLOCK_BYTES`).

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    w : ndarray of shape (KH, KW, C, F)
        HWIO kernels, of ``x``'s dtype.
    stride, pad : int

    Returns
    -------
    out : ndarray of shape (N, OH, OW, F)
    """
    n, h, width, _ = x.shape
    kh, kw, _, f = w.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(width, kw, stride, pad)
    w2 = w.reshape(-1, f)
    out = np.empty((n * oh * ow, f), dtype=x.dtype)
    for rows, cols in _lowered_blocks(x, kh, kw, stride, pad):
        np.matmul(cols, w2, out=out[rows])
    return out.reshape(n, oh, ow, f)


def conv2d_kernel_grad(x, grad, kh, kw, stride=1, pad=0):
    """Gradient of a :func:`conv2d` output w.r.t. its kernels.

    The sum over blocks of images of ``im2col(block).T @ grad_block``: the
    input is lowered again, block by block, rather than kept lowered from
    the forward pass (a block in cache costs less than a matrix in memory).

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
        The forward pass's input.
    grad : ndarray of shape (N, OH, OW, F)
        Gradient w.r.t. the output.
    kh, kw, stride, pad : int

    Returns
    -------
    grad_w : ndarray of shape (KH, KW, C, F)
    """
    c, f = x.shape[-1], grad.shape[-1]
    g2 = grad.reshape(-1, f)
    total = np.zeros((kh * kw * c, f), dtype=grad.dtype)
    for rows, cols in _lowered_blocks(x, kh, kw, stride, pad):
        # np.dot, not @: numpy's matmul keeps the GIL while BLAS computes a
        # product with few outputs (K*K*C x F, with a long inner dimension),
        # which stalls the other training thread; dot releases it.
        total += np.dot(cols.T, g2[rows])
    return total.reshape(kh, kw, c, f)


def _input_grad_as_conv(w, stride, pad):
    """``(turned, stride, pad)`` for which the input gradient of a convolution
    with kernels ``w`` is ``conv2d(grad, turned, stride, pad)``, or None.

    At stride 1 (square kernels, ``pad <= K - 1``) it is the "full"
    correlation of the output gradient, padded by ``K - 1 - pad``, with the
    kernels turned by 180 degrees and their channel axes swapped."""
    kh, kw = w.shape[:2]
    if stride != 1 or kh != kw or pad > kh - 1:
        return None
    turned = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))  # (KH, KW, F, C)
    return turned, 1, kh - 1 - pad


def conv2d_input_grad(grad, w, input_shape, stride=1, pad=0):
    """Gradient of a :func:`conv2d` output w.r.t. its input.

    At stride 1 (and ``pad <= K - 1``) it is itself a convolution: of the
    output gradient, padded by ``K - 1 - pad``, with the kernels turned by
    180 degrees and their channel axes swapped (the "full" correlation), run
    by :func:`conv2d` at the same speed as the forward pass. Otherwise each
    kernel offset ``(ky, kx)`` sends ``grad @ w[ky, kx].T`` to the input
    pixels under it: K*K small products added into strided slices.

    Parameters
    ----------
    grad : ndarray of shape (N, OH, OW, F)
    w : ndarray of shape (KH, KW, C, F)
    input_shape : tuple (N, H, W, C)
    stride, pad : int

    Returns
    -------
    grad_x : ndarray of shape (N, H, W, C)
    """
    kh, kw, c, f = w.shape
    n, h, width, _ = input_shape
    as_conv = _input_grad_as_conv(w, stride, pad)
    if as_conv is not None:
        return conv2d(grad, *as_conv)
    _, oh, ow, _ = grad.shape
    g2 = grad.reshape(-1, f)
    dx = np.zeros((n, h + 2 * pad, width + 2 * pad, c), dtype=grad.dtype)
    for ky in range(kh):
        for kx in range(kw):
            contribution = g2 @ w[ky, kx].T  # (N*OH*OW, F) @ (F, C)
            dx[:, ky : ky + stride * oh : stride, kx : kx + stride * ow : stride] += contribution.reshape(n, oh, ow, c)
    return dx[:, pad : pad + h, pad : pad + width]


def conv2d_backward(x, grad, w, stride=1, pad=0):
    """Gradients of a :func:`conv2d` output w.r.t. its kernels and its input.

    Where the input gradient is a convolution of the output gradient (stride
    1, see :func:`conv2d_input_grad`), one lowering serves both: the im2col
    row of input pixel ``(a, b)`` in that convolution holds
    ``grad[a - ky + pad, b - kx + pad]`` for every kernel offset (turned), the
    very values that pixel's kernel-gradient terms pair it with. So block by
    block, ``rows @ turned`` is the input gradient and ``x_block.T @ rows``
    adds to the kernel gradient (its offsets turned back at the end), and the
    input is not lowered again as :func:`conv2d_kernel_grad` must. Otherwise
    the two functions run one after the other.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
        The forward pass's input.
    grad : ndarray of shape (N, OH, OW, F)
        Gradient w.r.t. the output.
    w : ndarray of shape (KH, KW, C, F)
    stride, pad : int

    Returns
    -------
    grad_w : ndarray of shape (KH, KW, C, F)
    grad_x : ndarray of shape (N, H, W, C)
    """
    kh, kw, c, f = w.shape
    as_conv = _input_grad_as_conv(w, stride, pad)
    if as_conv is None:
        return conv2d_kernel_grad(x, grad, kh, kw, stride, pad), conv2d_input_grad(grad, w, x.shape, stride, pad)
    turned, _, full_pad = as_conv
    x_rows = np.ascontiguousarray(x).reshape(-1, c)  # one row per input pixel
    turned = turned.reshape(-1, c)
    grad_x = np.empty_like(x_rows)
    total = np.zeros((c, kh * kw * f), dtype=grad.dtype)
    for rows, cols in _lowered_blocks(grad, kh, kw, 1, full_pad):
        np.matmul(cols, turned, out=grad_x[rows])
        total += np.dot(x_rows[rows].T, cols)  # np.dot: see conv2d_kernel_grad
    # total[c, (ky', kx', f)] belongs to kernel offset (KH-1-ky', KW-1-kx')
    grad_w = np.ascontiguousarray(total.reshape(c, kh, kw, f)[:, ::-1, ::-1].transpose(1, 2, 0, 3))
    return grad_w, grad_x.reshape(x.shape)


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
