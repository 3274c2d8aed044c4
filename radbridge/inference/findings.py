"""From model outputs to findings: what the card says each output means."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from radbridge.inference.backends import BackendError
from radbridge.inference.cards import Code, ModelCard


@dataclass(frozen=True)
class Finding:
    code: Code
    probability: float
    positive: bool
    emergent: bool
    body_site: Code | None = None


def findings(card: ModelCard, outputs: Mapping[str, np.ndarray], item: int = 0
             ) -> list[Finding]:
    """The findings of batch item `item`; a NaN or a value outside 0..1 is a BackendError
    (a model that misbehaves must not produce a negative result)."""
    found = []
    for meaning in card.findings:
        values = np.asarray(outputs[meaning.output])[item].reshape(-1)
        if meaning.index >= values.size:
            raise BackendError(f"{card.key}: output {meaning.output} has {values.size} "
                               f"values, the card reads index {meaning.index}")
        probability = float(values[meaning.index])
        if math.isnan(probability) or not 0.0 <= probability <= 1.0:
            raise BackendError(f"{card.key}: output {meaning.output}[{meaning.index}] is "
                               f"{probability}, not a probability")
        positive = probability >= meaning.threshold
        found.append(Finding(meaning.finding, probability, positive,
                             positive and meaning.emergent, meaning.body_site))
    return found
