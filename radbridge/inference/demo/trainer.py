"""Training the demonstration network: hard-negative mining in rounds.

Each round runs the full network once over every negative study to find its hardest
place (where the detection map is highest) and adds that patch to a pool, beside each
positive study's patch at its lesion (moved by up to a voxel in plane). Adam then takes
cheap steps on patches drawn from the whole pool, so a false alarm found in an early round
stays learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radbridge.inference.demo.network import (
    Adam,
    Array,
    Weights,
    hardest,
    initial_weights,
    patch_at,
    patch_step,
    predict,
)

Place = tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    rounds: int
    """Full forward passes over the negative studies (each finds new hard places)."""
    epochs: int
    """Adam steps per round, in passes over the training set's size."""
    batch: int = 32
    rate: float = 0.01
    decay: float = 1e-4


def _round_patches(weights: Weights, inputs: Array, lesions: list[Place | None],
                   rng: np.random.Generator) -> tuple[Array, Array]:
    kernel = weights.w2.shape[2:]
    cut = []
    for x, lesion in zip(inputs, lesions, strict=True):
        if lesion is None:
            place = hardest(weights, x)
        else:
            place = tuple(max(0, min(size - 1, i + int(rng.integers(-1, 2)) * (size > 32)))
                          for i, size in zip(lesion, x.shape[1:], strict=True))
        cut.append(patch_at(x, kernel, place))
    return np.stack([c[0] for c in cut]), np.stack([c[1] for c in cut])


def fit(inputs: Array, lesions: list[Place | None], kernel: tuple[int, ...], hidden: int,
        filters: int, schedule: Schedule, seed: int) -> tuple[Weights, list[float]]:
    """Weights trained on `inputs` (studies, channels, *space); `lesions` holds each
    positive's lesion voxel and None for a negative. Returns the mean loss per round."""
    sample = inputs[:, :, ::4].reshape(-1)
    levels = np.quantile(sample, np.linspace(0.3, 0.995, 32)).astype(np.float32)
    weights = initial_weights(inputs.shape[1], kernel, hidden, filters, seed, levels)
    adam = Adam(schedule.rate)
    rng = np.random.default_rng(seed)
    labels = np.asarray([lesion is not None for lesion in lesions], dtype=np.float32)
    pool_x: list[Array] = []
    pool_m: list[Array] = []
    losses = []
    steps = schedule.epochs * -(-len(inputs) // schedule.batch)
    for _ in range(schedule.rounds):
        xs, inside = _round_patches(weights, inputs, lesions, rng)
        pool_x.append(xs)
        pool_m.append(inside)
        every_x, every_m = np.concatenate(pool_x), np.concatenate(pool_m)
        targets = np.tile(labels, len(pool_x))
        round_losses = []
        for _ in range(steps):
            chosen = rng.choice(len(targets), min(schedule.batch, len(targets)),
                                replace=False)
            loss, grads = patch_step(weights, every_x[chosen], every_m[chosen],
                                     targets[chosen], schedule.decay)
            adam.update(weights.arrays(), grads)
            round_losses.append(loss)
        losses.append(float(np.mean(round_losses)))
    return weights, losses


def scores(weights: Weights, inputs: Array) -> Array:
    """Exact probabilities (full forward passes), as the exported graph computes them."""
    return np.asarray([predict(weights, x)[0] for x in inputs], dtype=np.float32)
