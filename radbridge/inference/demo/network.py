"""The demonstration network in numpy: a per-voxel intensity layer (1x1 convolution, leaky
ReLU), a small spatial convolution ("same" padding, leaky ReLU) and a 1x1 layer to one
detection map; its sigmoid is the heat map and its global maximum the probability. The
same graph is written to ONNX by `export`.

Why this shape: the 1x1 layer lets the network pick intensity bands (blood between brain
and bone, a clot between contrast and fat), the spatial layer finds the pattern around each
voxel, and "somewhere in the study" is the maximum over voxels, whose place is the heat
map's peak. Each voxel is scored alone, so training is a patch classifier: a positive
study is seen at its lesion, a negative one where the map is highest (its hardest place),
found by a full forward pass once per round (see `trainer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

Array = NDArray[Any]
"""Float arrays (float32 in practice; numpy's arithmetic does not keep the type)."""
SLOPE = 0.01
"""Negative slope of the leaky ReLUs: a unit below zero everywhere still learns (with a
plain ReLU it would be dead for good)."""


def leaky(values: Array) -> Array:
    return np.where(values > 0, values, SLOPE * values).astype(np.float32)


def _leaky_slope(values: Array) -> Array:
    return np.where(values > 0, 1.0, SLOPE).astype(np.float32)


@dataclass
class Weights:
    w1: Array
    """(hidden, channels) 1x1 convolution."""
    b1: Array
    w2: Array
    """(filters, hidden, *kernel) spatial convolution."""
    b2: Array
    u: Array
    """(filters,) 1x1 convolution to the detection map."""
    b3: Array
    """(1,) its bias."""

    def arrays(self) -> list[Array]:
        return [self.w1, self.b1, self.w2, self.b2, self.u, self.b3]


def initial_weights(channels: int, kernel: tuple[int, ...], hidden: int, filters: int,
                    seed: int, levels: Array) -> Weights:
    """Intensity bands with random signs whose thresholds are drawn from `levels` (values
    seen in the inputs, so that no band starts flat); He-scaled spatial filters."""
    rng = np.random.default_rng(seed)
    gain = rng.uniform(3.0, 6.0, (hidden, 1)) * rng.choice([-1.0, 1.0], (hidden, 1))
    w1 = (gain * rng.normal(1.0, 0.5, (hidden, channels)) / channels).astype(np.float32)
    thresholds = rng.choice(levels.reshape(-1), hidden)
    b1 = (-(w1 * thresholds[:, None]).sum(axis=1)).astype(np.float32)
    fan_in = hidden * prod(kernel)
    w2 = rng.normal(0, np.sqrt(2 / fan_in), (filters, hidden, *kernel)).astype(np.float32)
    b2 = np.zeros(filters, dtype=np.float32)
    u = rng.normal(0, 1 / np.sqrt(filters), filters).astype(np.float32)
    return Weights(w1, b1, w2, b2, u, np.zeros(1, dtype=np.float32))


def sigmoid(z: Array) -> Array:
    result: Array = (1 / (1 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)
    return result


def detection_map(weights: Weights, x: Array) -> Array:
    """The detection logits (*space) of one input (channels, *space)."""
    kernel = weights.w2.shape[2:]
    space = x.shape[1:]
    pre = np.tensordot(weights.w1, x, axes=(1, 0)) + weights.b1.reshape(
        (-1,) + (1,) * len(space))
    padded = np.pad(leaky(pre), [(0, 0)] + [(k // 2, k // 2) for k in kernel])
    windows = sliding_window_view(padded, kernel, axis=tuple(range(1, len(kernel) + 1)))
    order = (*range(1, len(kernel) + 1), 0, *range(len(kernel) + 1, 2 * len(kernel) + 1))
    columns = windows.transpose(order).reshape(prod(space), -1)
    filters = leaky(columns @ weights.w2.reshape(len(weights.w2), -1).T + weights.b2)
    logits: Array = (filters @ weights.u + weights.b3[0]).reshape(space).astype(np.float32)
    return logits


def predict(weights: Weights, x: Array) -> tuple[float, Array]:
    """Probability and heat map of one input, as the ONNX graph computes them."""
    heat = sigmoid(detection_map(weights, x))
    return float(heat.max()), heat


def hardest(weights: Weights, x: Array) -> tuple[int, ...]:
    """Where the detection map of one input is highest."""
    logits = detection_map(weights, x)
    return tuple(int(i) for i in np.unravel_index(int(logits.argmax()), logits.shape))


def patch_at(x: Array, kernel: tuple[int, ...], place: tuple[int, ...]
             ) -> tuple[Array, Array]:
    """The receptive field of one input (channels, *space) centred at `place`, and its
    inside-mask (0 where it reaches past the border: the graph's zero padding)."""
    pads = [(k // 2, k // 2) for k in kernel]
    box = tuple(slice(i, i + k) for i, k in zip(place, kernel, strict=True))
    padded = np.pad(x, [(0, 0), *pads])
    inside = np.pad(np.ones(x.shape[1:], dtype=np.float32), pads)
    return padded[(slice(None), *box)], inside[box]


@dataclass
class Adam:
    rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    step: int = 0
    moments: list[tuple[Array, Array]] = field(default_factory=list)

    def update(self, params: list[Array], grads: list[Array]) -> None:
        if not self.moments:
            self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self.step += 1
        for p, g, (m, s) in zip(params, grads, self.moments, strict=True):
            m *= self.beta1
            m += (1 - self.beta1) * g
            s *= self.beta2
            s += (1 - self.beta2) * g * g
            m_hat = m / (1 - self.beta1 ** self.step)
            s_hat = s / (1 - self.beta2 ** self.step)
            p -= (self.rate * m_hat / (np.sqrt(s_hat) + 1e-8)).astype(np.float32)


def patch_step(weights: Weights, xs: Array, inside: Array, labels: Array, decay: float
               ) -> tuple[float, list[Array]]:
    """Binary cross-entropy of the centre voxels of patches xs (n, channels, *kernel) and
    its gradients."""
    n, hidden = len(xs), len(weights.w1)
    shape = (1, -1) + (1,) * (xs.ndim - 2)
    pre1 = np.einsum("hc,nc...->nh...", weights.w1, xs) + weights.b1.reshape(shape)
    bands = leaky(pre1) * inside[:, None]
    flat_w2 = weights.w2.reshape(len(weights.w2), -1)
    z = bands.reshape(n, -1) @ flat_w2.T + weights.b2
    active = leaky(z)
    p = sigmoid(active @ weights.u + weights.b3[0])
    eps = 1e-6
    loss = float(-np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps)))
    g = (p - labels) / n
    du = active.T @ g + decay * weights.u
    db3 = np.asarray([g.sum()], dtype=np.float32)
    dz = g[:, None] * weights.u[None] * _leaky_slope(z)
    dw2 = (dz.T @ bands.reshape(n, -1)).reshape(weights.w2.shape) + decay * weights.w2
    db2 = dz.sum(axis=0)
    dpre1 = (dz @ flat_w2).reshape(bands.shape) * inside[:, None] * _leaky_slope(pre1)
    dw1 = np.einsum("nhk,nck->hc", dpre1.reshape(n, hidden, -1),
                    xs.reshape(n, xs.shape[1], -1)) + decay * weights.w1
    db1 = dpre1.reshape(n, hidden, -1).sum(axis=(0, 2))
    grads = [dw1, db1, dw2, db2, du, db3]
    return loss, [np.asarray(a, dtype=np.float32) for a in grads]
