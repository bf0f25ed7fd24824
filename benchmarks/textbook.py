"""The classic textbook NumPy CNN, as a speed baseline (not part of skcnn).

Written for this benchmark in the style of the well-known "deep learning from
scratch" code that the origin project used: NCHW images, float64 everywhere,
an im2col that loops over kernel offsets into a float64 buffer, col2im for
the input gradient, max pooling *through im2col* (reshape + argmax), and a
fresh allocation for every array. Same network, He init, Adam, batches of
100 as skcnn's default, so that throughputs compare like for like.
"""

import numpy as np


def im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((n, c, k, k, oh, ow))
    for y in range(k):
        for x_ in range(k):
            col[:, :, y, x_] = img[:, :, y : y + stride * oh : stride, x_ : x_ + stride * ow : stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


def col2im(col, shape, k, stride, pad):
    n, c, h, w = shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    col = col.reshape(n, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1))
    for y in range(k):
        for x_ in range(k):
            img[:, :, y : y + stride * oh : stride, x_ : x_ + stride * ow : stride] += col[:, :, y, x_]
    return img[:, :, pad : h + pad, pad : w + pad]


class Conv:
    def __init__(self, w, b, pad):
        self.W, self.b, self.pad = w, b, pad

    def forward(self, x):
        f, c, k, _ = self.W.shape
        n, _, h, w = x.shape
        oh, ow = h + 2 * self.pad - k + 1, w + 2 * self.pad - k + 1
        self.x, self.col = x, im2col(x, k, 1, self.pad)
        self.col_w = self.W.reshape(f, -1).T
        out = self.col @ self.col_w + self.b
        return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        f, c, k, _ = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, f)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).T.reshape(f, c, k, k)
        return col2im(dout @ self.col_w.T, self.x.shape, k, 1, self.pad)


class Pool:
    def forward(self, x):
        n, c, h, w = x.shape
        oh, ow = h // 2, w // 2
        col = im2col(x, 2, 2, 0).reshape(-1, 4)
        self.x, self.arg = x, col.argmax(axis=1)
        return col.max(axis=1).reshape(n, oh, ow, c).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        dmax = np.zeros((dout.size, 4))
        dmax[np.arange(self.arg.size), self.arg] = dout.ravel()
        dcol = dmax.reshape(dout.shape + (4,)).reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return col2im(dcol, self.x.shape, 2, 2, 0)


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class Affine:
    def __init__(self, w, b):
        self.W, self.b = w, b

    def forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW, self.db = self.x.T @ dout, dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.shape)


class TextbookCNN:
    """Conv16-ReLU-Pool-Conv32-ReLU-Pool-Affine100-ReLU-Affine10, float64."""

    def __init__(self, rng):
        def he(shape, fan_in):
            return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

        self.layers = [
            Conv(he((16, 1, 3, 3), 9), np.zeros(16), 1), Relu(), Pool(),
            Conv(he((32, 16, 3, 3), 144), np.zeros(32), 1), Relu(), Pool(),
            Affine(he((1568, 100), 1568), np.zeros(100)), Relu(),
            Affine(he((100, 10), 100), np.zeros(10)),
        ]  # fmt: skip
        self.learnable = [layer for layer in self.layers if hasattr(layer, "W")]
        self.m = [np.zeros_like(a) for layer in self.learnable for a in (layer.W, layer.b)]
        self.v = [np.zeros_like(a) for a in self.m]
        self.t = 0

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def train_step(self, x, t, lr=1e-3, b1=0.9, b2=0.999):
        scores = self.predict(x)
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dout = p.copy()
        dout[np.arange(len(t)), t] -= 1
        dout /= len(t)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        self.t += 1
        lr_t = lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        params = [(layer, name) for layer in self.learnable for name in ("W", "b")]
        for i, (layer, name) in enumerate(params):
            g = getattr(layer, "d" + name)
            self.m[i] += (1 - b1) * (g - self.m[i])
            self.v[i] += (1 - b2) * (g**2 - self.v[i])
            setattr(layer, name, getattr(layer, name) - lr_t * self.m[i] / (np.sqrt(self.v[i]) + 1e-7))
        return -np.log(p[np.arange(len(t)), t] + 1e-7).mean()
