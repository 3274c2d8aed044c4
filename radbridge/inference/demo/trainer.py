"""Training the demonstration network: hard-negative mining in rounds.

Each round runs the full network once over every negative study to find its hardest
place (where the detection map is highest) and adds that patch to a pool, beside each
positive study's patch at its lesion (moved by up to a voxel in plane). Adam then takes
cheap steps on patches drawn from the whole pool, so a false alarm found in an early round
stays learnt.

`Schedule.places` > 1 mines that many hard places per study and round (each the highest
left after the kernel's neighbourhood of the ones before is set aside), in positive
studies too, away from the lesion: a finding made of common parts (a vessel that ends)
has look-alikes in every study, positive or not, and one place per negative study finds
them too slowly to ever catch up. Each positive's lesion patch then comes `places // 2`
times (each moved anew), so the classes stay near balance; the maps come from the
exported graph in ONNX Runtime (`logit_maps`), several times faster than numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from radbridge.inference.demo.export import logits_model
from radbridge.inference.demo.network import (
    Adam,
    Array,
    Weights,
    hardest,
    initial_weights,
    patch_at,
    patch_step,
    sigmoid,
)

Place = tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    rounds: int
    """Full forward passes over the negative studies (every study when `places` > 1),
    each finding new hard places."""
    epochs: int
    """Adam steps per round, in passes over the training set's size."""
    batch: int = 32
    rate: float = 0.01
    decay: float = 1e-4
    places: int = 1
    """Hard places mined per study and round; above 1, positives are mined away from the
    lesion as well (see the module docstring)."""


def _hard_places(logits: Array, count: int, keep_off: Place | None, reach: Sequence[int]
                 ) -> list[Place]:
    """The `count` highest places of a detection map, each at least `reach` voxels (per
    axis) from the ones before and from `keep_off`."""
    work = logits.copy()

    def set_aside(place: Place) -> None:
        work[tuple(slice(max(0, i - r), i + r + 1) for i, r in zip(place, reach,
                                                                   strict=True))] = -np.inf

    if keep_off is not None:
        set_aside(keep_off)
    found: list[Place] = []
    for _ in range(count):
        index = int(work.argmax())
        if not np.isfinite(work.flat[index]):
            break
        place = tuple(int(i) for i in np.unravel_index(index, work.shape))
        found.append(place)
        set_aside(place)
    return found


def logit_maps(weights: Weights, inputs: Array, chunk: int = 16) -> Array:
    """The detection logits (studies, *space) of `inputs` through the exported graph in
    ONNX Runtime (one thread: training runs a model per process)."""
    model = logits_model(weights, inputs.shape[1], list(inputs.shape[2:]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    out = [session.run(["logits"], {"input": inputs[i:i + chunk]})[0][:, 0]
           for i in range(0, len(inputs), chunk)]
    return np.concatenate(out).astype(np.float32)


def _round_patches(weights: Weights, inputs: Array, lesions: list[Place | None],
                   rng: np.random.Generator, places: int) -> tuple[Array, Array, Array]:
    kernel = weights.w2.shape[2:]
    reach = [max(1, k // 2) for k in kernel]
    maps = logit_maps(weights, inputs) if places > 1 else None
    cut, labels = [], []
    for study, (x, lesion) in enumerate(zip(inputs, lesions, strict=True)):
        if lesion is not None:
            for _ in range(max(1, places // 2)):
                place = tuple(max(0, min(size - 1, i + int(rng.integers(-1, 2)) * (size > 32)))
                              for i, size in zip(lesion, x.shape[1:], strict=True))
                cut.append(patch_at(x, kernel, place))
                labels.append(1.0)
        if lesion is None and places == 1:
            found = [hardest(weights, x)]
        elif maps is not None:
            found = _hard_places(maps[study], places, lesion, [2 * r for r in reach])
        else:
            found = []
        cut.extend(patch_at(x, kernel, place) for place in found)
        labels.extend([0.0] * len(found))
    return (np.stack([c[0] for c in cut]), np.stack([c[1] for c in cut]),
            np.asarray(labels, dtype=np.float32))


def fit(inputs: Array, lesions: list[Place | None], kernel: tuple[int, ...], hidden: int,
        filters: int, schedule: Schedule, seed: int) -> tuple[Weights, list[float]]:
    """Weights trained on `inputs` (studies, channels, *space); `lesions` holds each
    positive's lesion voxel and None for a negative. Returns the mean loss per round."""
    sample = inputs[:, :, ::4].reshape(-1)
    levels = np.quantile(sample, np.linspace(0.3, 0.995, 32)).astype(np.float32)
    weights = initial_weights(inputs.shape[1], kernel, hidden, filters, seed, levels)
    adam = Adam(schedule.rate)
    rng = np.random.default_rng(seed)
    pool_x: list[Array] = []
    pool_m: list[Array] = []
    pool_y: list[Array] = []
    losses = []
    steps = schedule.epochs * -(-len(inputs) // schedule.batch)
    for _ in range(schedule.rounds):
        xs, inside, labels = _round_patches(weights, inputs, lesions, rng, schedule.places)
        pool_x.append(xs)
        pool_m.append(inside)
        pool_y.append(labels)
        every_x, every_m = np.concatenate(pool_x), np.concatenate(pool_m)
        targets = np.concatenate(pool_y)
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
    """Each study's probability (the sigmoid of its highest logit), from the exported
    graph itself."""
    peaks = logit_maps(weights, inputs).reshape(len(inputs), -1).max(axis=1)
    return sigmoid(peaks)
