"""Pure array math: convolution lowering, softmax, losses and a numerical gradient.

Nothing here keeps state or knows about layers. Images are *channels-last*,
``(N, H, W, C)``: with the channel axis last, the lowered matrix of a
convolution is a reshape of a window view and the GEMM output is already an
image, so no transposes sit in the hot loop.
"""

import math

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
    "pool_order_to_images",
    "max_pool_pool_order",
    "max_pool_pool_order_backward",
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


def pad_images(x, pad, value=0.0, pool_order=False):
    """Pad the two spatial axes of ``(N, H, W, C)`` images by ``pad`` pixels.

    With ``pool_order``, ``x`` is in :func:`conv2d`'s pool order, (4N, H/2,
    W/2, C), and the padded images come out in the usual order: the copy
    that pads also puts the pixels back in place.
    """
    if pool_order:
        n4, h2, w2, c = x.shape
        n, h, w = n4 // 4, 2 * h2, 2 * w2
    else:
        if pad == 0:
            return x
        n, h, w, c = x.shape
    shape = (n, h + 2 * pad, w + 2 * pad, c)
    out = np.full(shape, value, dtype=x.dtype) if pad else np.empty(shape, dtype=x.dtype)  # np.pad: 3x the overhead
    inner = out[:, pad : pad + h, pad : pad + w]
    if pool_order:
        sn, sh, sw, sc = inner.strides  # (image, dy, dx, i, j, channel) -> pixel (2i + dy, 2j + dx)
        np.copyto(as_strided(inner, (n, 2, 2, h2, w2, c), (sn, sh, sw, 2 * sh, 2 * sw, sc)), x.reshape(n, 2, 2, h2, w2, c))
    else:
        inner[...] = x
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


def _windows(xp, kh, kw, stride, pool_order=False):
    """A read-only view (N, OH, OW, KH, KW*C) of the windows of the (padded,
    contiguous) images ``xp``, no copy yet: in a contiguous image the KW*C
    values of one window row lie side by side, so the copy that lowers them
    moves runs of KW*C values (3x longer than runs of C). Slicing it along
    N gives a block's windows at no cost (making it takes ~20 us).

    With ``pool_order`` (OH and OW even) the output pixels come in the
    order a 2x2 max pool reads them (see :func:`conv2d`): the view is
    (N, 2, 2, OH/2, OW/2, KH, KW*C), its axes 1 and 2 the pixel's row and
    column parity."""
    n, h, w, c = xp.shape
    oh, ow = conv_output_size(h, kh, stride), conv_output_size(w, kw, stride)
    sn, sh, sw, sc = xp.strides
    if not pool_order:
        return as_strided(xp, (n, oh, ow, kh, kw * c), (sn, sh * stride, sw * stride, sh, sc), writeable=False)
    sy, sx = sh * stride, sw * stride  # one output pixel down, one across
    shape = (n, 2, 2, oh // 2, ow // 2, kh, kw * c)
    return as_strided(xp, shape, (sn, sy, sx, 2 * sy, 2 * sx, sh, sc), writeable=False)


def _lower(win, kw, out=None):
    """Copy a window view from :func:`_windows` into its im2col matrix (see
    :func:`im2col`), one row per output pixel in the view's order."""
    *pixels, kh, kwc = win.shape
    n_rows = math.prod(pixels)  # (np.prod of a tuple takes 3 us, 45x longer, holding the GIL)
    if kwc == kw:  # one channel
        cols_t = np.empty((kh * kw, n_rows), dtype=win.dtype) if out is None else out.T
        p = len(pixels)  # (N, OH, OW, KH, KW) -> (KH, KW, N, OH, OW), or with the pool order's pixel axes
        np.copyto(cols_t.reshape(kh, kw, *pixels), win.transpose(p, p + 1, *range(p)))
        return cols_t.T
    cols = np.empty((n_rows, kh * kwc), dtype=win.dtype) if out is None else out
    np.copyto(cols.reshape(win.shape), win)
    return cols


#: Bytes of the lowered matrix of one block of images in :func:`conv2d`: about
#: half a core's L2 cache, so that the block's im2col rows are still in cache
#: when the matrix product reads them. Lowering all images at once instead
#: writes the matrix out to memory and reads it back (45 MB for a batch of 50
#: 28x28 images with 32 channels): the blocks are about 1.3x faster, and
#: nothing of that size is kept for the backward pass.
CONV_BLOCK_BYTES = 1 << 20


def _lowered_blocks(x, kh, kw, stride, pad, pool_order=False):
    """``(rows, cols)`` for blocks of the images ``x`` (N, H, W, C), in order:
    ``cols`` is the im2col matrix of a block (:func:`im2col`; its rows in
    pool order if asked, see :func:`conv2d`), ``rows`` the slice of the
    whole batch's im2col rows it holds. A block's lowered matrix fills about
    :data:`CONV_BLOCK_BYTES` (at least one image a block); each full block is
    lowered into the same buffer, so use ``cols`` before asking for the next
    one."""
    n, c = len(x), x.shape[-1]
    xp = np.ascontiguousarray(pad_images(x, pad))  # padded once, not block by block
    win = _windows(xp, kh, kw, stride, pool_order)
    per_image = math.prod(win.shape[1:-2])  # output pixels: rows of the lowered matrix
    b = max(1, CONV_BLOCK_BYTES // (per_image * kh * kw * c * x.itemsize))
    buffer = None
    for start in range(0, n, b):
        block = win[start : start + b]
        cols = _lower(block, kw, out=buffer if len(block) == b else None)
        if len(block) == b:
            buffer = cols
        yield slice(start * per_image, (start + len(block)) * per_image), cols


def conv2d(x, w, stride=1, pad=0, pool_order=False):
    """2-D convolution (cross-correlation) of channels-last images.

    Each block of images is lowered (:func:`im2col`) and multiplied by the
    kernels, ``cols @ w.reshape(K*K*C, F)``, into its part of the output,
    block after block (see :data:`CONV_BLOCK_BYTES`).

    With ``pool_order`` the output pixels of each image are written in the
    order a 2x2 max pool with stride 2 reads them: first every window's
    top-left pixel, then every top-right, bottom-left and bottom-right one,
    four quarter-size images (OH/2, OW/2, F) that :func:`max_pool_pool_order`
    compares as four long contiguous runs. In the usual order the pool
    compares neighbours C values apart, runs of C (16 to 64) values that
    numpy handles several times slower per value; the pool takes about half
    the time in pool order (``python benchmarks/pooling.py``). Only the
    order of the lowered matrix's rows changes, so the products cost the same.
    Per-channel layers in between (bias, batch norm, ReLU) do not mind the
    order; :func:`pool_order_to_images` restores the usual one.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    w : ndarray of shape (KH, KW, C, F)
        HWIO kernels, of ``x``'s dtype.
    stride, pad : int
    pool_order : bool, default=False
        Needs OH and OW even.

    Returns
    -------
    out : ndarray of shape (N, OH, OW, F), or (4N, OH/2, OW/2, F) in pool order
        In pool order ``out[4n + 2dy + dx, i, j]`` is output pixel
        ``(2i + dy, 2j + dx)`` of image ``n``.
    """
    n, h, width, _ = x.shape
    kh, kw, _, f = w.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(width, kw, stride, pad)
    if pool_order and (oh % 2 or ow % 2):
        raise ValueError(f"pool order needs an even output size; got {oh}x{ow}")
    w2 = w.reshape(-1, f)
    out = np.empty((n * oh * ow, f), dtype=x.dtype)
    for rows, cols in _lowered_blocks(x, kh, kw, stride, pad, pool_order):
        np.matmul(cols, w2, out=out[rows])
    return out.reshape(4 * n, oh // 2, ow // 2, f) if pool_order else out.reshape(n, oh, ow, f)


def pool_order_to_images(a):
    """Images (N, H, W, C) from the pool order of :func:`conv2d`, (4N, H/2, W/2, C)."""
    return pad_images(a, 0, pool_order=True)


def conv2d_kernel_grad(x, grad, kh, kw, stride=1, pad=0, pool_order=False):
    """Gradient of a :func:`conv2d` output w.r.t. its kernels.

    The sum over blocks of images of ``im2col(block).T @ grad_block``: the
    input is lowered again, block by block, rather than kept lowered from
    the forward pass (a block in cache costs less than a matrix in memory).

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
        The forward pass's input.
    grad : ndarray of shape (N, OH, OW, F), or (4N, OH/2, OW/2, F) in pool order
        Gradient w.r.t. the output.
    kh, kw, stride, pad : int
    pool_order : bool, default=False
        Whether ``grad`` is in :func:`conv2d`'s pool order. The input is then
        lowered in that order too: the product pairs the same rows.

    Returns
    -------
    grad_w : ndarray of shape (KH, KW, C, F)
    """
    c, f = x.shape[-1], grad.shape[-1]
    g2 = grad.reshape(-1, f)
    total = np.zeros((kh * kw * c, f), dtype=grad.dtype)
    for rows, cols in _lowered_blocks(x, kh, kw, stride, pad, pool_order):
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


def conv2d_backward(x, grad, w, stride=1, pad=0, pool_order=False):
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
    grad : ndarray of shape (N, OH, OW, F), or (4N, OH/2, OW/2, F) in pool order
        Gradient w.r.t. the output.
    w : ndarray of shape (KH, KW, C, F)
    stride, pad : int
    pool_order : bool, default=False
        Whether ``grad`` is in :func:`conv2d`'s pool order; it is put back in
        the usual order by the copy that pads it (the input gradient is a
        convolution of it).

    Returns
    -------
    grad_w : ndarray of shape (KH, KW, C, F)
    grad_x : ndarray of shape (N, H, W, C)
    """
    kh, kw, c, f = w.shape
    as_conv = _input_grad_as_conv(w, stride, pad)
    if as_conv is None:
        if pool_order:
            grad = pool_order_to_images(grad)
        return conv2d_kernel_grad(x, grad, kh, kw, stride, pad), conv2d_input_grad(grad, w, x.shape, stride, pad)
    turned, _, full_pad = as_conv
    # padded for the "full" correlation (and put back in the usual order by the same copy)
    padded = pad_images(grad, full_pad, pool_order=pool_order)
    x_rows = np.ascontiguousarray(x).reshape(-1, c)  # one row per input pixel
    turned = turned.reshape(-1, c)
    grad_x = np.empty_like(x_rows)
    total = np.zeros((c, kh * kw * f), dtype=grad.dtype)
    for rows, cols in _lowered_blocks(padded, kh, kw, 1, 0):
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


def max_pool_pool_order(x, training=False):
    """2x2 max pooling with stride 2 of convolution outputs in pool order.

    ``x`` of shape (4N, H/2, W/2, C) holds each image's four quarter-images
    (:func:`conv2d` with ``pool_order``): the windows' top-left, top-right,
    bottom-left and bottom-right pixels. The pool is the elementwise maximum
    of the four, left before right, then top before bottom, recording the
    same winners as :func:`max_pool_2x2` (the first maximum in reading order).

    Returns ``(out, state)``: ``out`` of shape (N, H/2, W/2, C), and for
    ``training`` the masks :func:`max_pool_pool_order_backward` needs.
    """
    n4, h2, w2, c = x.shape
    q = x.reshape(n4 // 4, 4, h2 * w2 * c)  # per image: four runs of H/2*W/2*C values
    top = np.maximum(q[:, 0], q[:, 1])
    bottom = np.maximum(q[:, 2], q[:, 3])
    out = np.maximum(top, bottom).reshape(n4 // 4, h2, w2, c)
    if not training:
        return out, None
    return out, (q[:, 0] >= q[:, 1], q[:, 2] >= q[:, 3], top >= bottom, x.shape)


def max_pool_pool_order_backward(grad, state):
    """Input gradient (4N, H/2, W/2, C), in pool order, of
    :func:`max_pool_pool_order` from ``grad`` (N, H/2, W/2, C)."""
    left_of_top, left_of_bottom, from_top, shape = state
    g = grad.reshape(len(grad), -1)
    dx = np.empty((len(grad), 4, g.shape[1]), dtype=grad.dtype)
    g_top = g * from_top  # multiply by a bool mask: 5x faster than np.where
    g_bottom = g - g_top
    np.multiply(g_top, left_of_top, out=dx[:, 0])
    np.subtract(g_top, dx[:, 0], out=dx[:, 1])
    np.multiply(g_bottom, left_of_bottom, out=dx[:, 2])
    np.subtract(g_bottom, dx[:, 2], out=dx[:, 3])
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
