"""Model cards: what a model is, what it takes, how to run it and what its outputs mean.

One YAML file per model version. The same card drives the embedded ONNX Runtime backend
and Triton, routing (which series of a ready study the model takes), preprocessing,
and every output's provenance (name, version, intended use, device identifier, the
demonstration warning). Every key is checked: a typo is an error naming the file and
the field, as for channel files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from radbridge.errors import ConfigError, ConfigIssue

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class CardModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(CardModel):
    min: float | None = None
    max: float | None = None

    def holds(self, value: float | None) -> bool:
        if value is None:
            return self.min is None and self.max is None
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class SeriesSelection(CardModel):
    """Which series of a study the model takes; every field given must hold."""

    modalities: list[str] = Field(min_length=1)
    body_parts: list[str] = Field(default_factory=list)
    """BodyPartExamined values (upper case); empty: any."""
    description: str | None = None
    """A regular expression searched in SeriesDescription (case-insensitive)."""
    slice_thickness: Range | None = None
    min_instances: int = Field(default=1, ge=1)
    contrast: bool | None = None
    """True: ContrastBolusAgent present; False: absent; None: either."""
    image_type: list[str] = Field(default_factory=list)
    """Values that ImageType must contain (e.g. ORIGINAL, AXIAL)."""
    procedure_codes: list[str] = Field(default_factory=list)
    """The order's procedure codes this model is for; empty: any (or no order)."""

    @model_validator(mode="after")
    def _pattern_compiles(self) -> SeriesSelection:
        if self.description is not None:
            try:
                re.compile(self.description)
            except re.error as exc:
                raise ValueError(f"description: not a regular expression ({exc})") from exc
        return self


class Preprocessing(CardModel):
    """From DICOM to the input tensor (see inference.preprocess)."""

    kind: Literal["volume", "image", "photograph"]
    size: list[int] = Field(min_length=2, max_length=3)
    """Output shape: [depth, height, width] for a volume, [height, width] otherwise."""
    spacing: list[float] | None = None
    """Resample to this spacing in mm ([z, y, x]) before resizing, for volumes."""
    window: Range | None = None
    """Clip to this range after rescale (Hounsfield units for CT), then scale to 0..1."""
    channels: Literal[1, 3] = 1


class OnnxBackend(CardModel):
    kind: Literal["onnx"]
    path: str
    """Relative to the card's folder."""


class TritonBackend(CardModel):
    kind: Literal["triton"]
    model: str
    version: str = ""
    url: str = "127.0.0.1:8000"
    protocol: Literal["http", "grpc"] = "http"
    timeout: float = Field(default=30.0, gt=0)


Backend = Annotated[OnnxBackend | TritonBackend, Field(discriminator="kind")]


class Code(CardModel):
    """A coded concept: SNOMED CT (SCT), RadLex (RADLEX), DICOM (DCM) or LOINC (LN)."""

    code: str
    system: Literal["SCT", "RADLEX", "DCM", "LN"]
    display: str


class FindingOutput(CardModel):
    """One output of the model and what it means."""

    output: str
    """The model output's name (as in the ONNX graph / Triton config)."""
    index: int = Field(default=0, ge=0)
    """Which element of that output holds this finding's probability."""
    finding: Code
    threshold: float = Field(ge=0.0, le=1.0)
    emergent: bool = False
    """A positive finding bumps the worklist priority (sent to the RIS first)."""
    body_site: Code | None = None
    heatmap: str | None = None
    """An output holding a map over the input's spatial grid (batch, *spatial), whose
    peak locates the finding and whose extent above half the peak is measured."""


class ModelCard(CardModel):
    name: Name
    version: str = Field(min_length=1, max_length=32)
    task: Literal["triage", "detection", "segmentation"]
    use_case: str
    intended_use: str = Field(min_length=10)
    device_identifier: str
    demonstration: bool
    """A demonstration model, not for clinical use: every output says so."""
    series: SeriesSelection
    preprocessing: Preprocessing
    backend: Backend
    inputs: dict[str, list[int]] = Field(min_length=1)
    """Input name -> shape without the batch dimension, as the model declares it."""
    findings: list[FindingOutput] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        kind, size = self.preprocessing.kind, self.preprocessing.size
        if kind == "volume" and len(size) != 3:
            raise ValueError("preprocessing.size: a volume needs [depth, height, width]")
        if kind != "volume" and len(size) != 2:
            raise ValueError(f"preprocessing.size: a {kind} needs [height, width]")
        if len(self.inputs) != 1:
            raise ValueError("inputs: a model takes exactly one input tensor (the series)")
        return self

    def output_names(self) -> set[str]:
        """Every model output the card reads: probabilities and heat maps."""
        return ({f.output for f in self.findings}
                | {f.heatmap for f in self.findings if f.heatmap})

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def digest(self) -> str:
        """SHA-256 of the card's content: recorded with every output it produced."""
        document = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(document.encode()).hexdigest()


def shipped_folder() -> Path:
    """The demonstration models that come with Radbridge (cards, ONNX files, reports)."""
    return Path(str(resources.files("radbridge.inference") / "models"))


def find_card(cards: Sequence[tuple[Path, ModelCard]], wanted: str
              ) -> tuple[Path, ModelCard] | None:
    """NAME or NAME:VERSION among `cards`; the highest version for a bare NAME."""
    name, _, version = wanted.partition(":")
    matches = [(p, c) for p, c in cards if c.name == name and (not version or c.version == version)]
    return max(matches, key=lambda item: item[1].version) if matches else None


def load_cards(paths: Sequence[Path]) -> list[tuple[Path, ModelCard]]:
    """Every card under `paths` (files or folders of *.yaml); ConfigError lists every
    problem (file, field, what was expected) and two cards with one name and version."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    issues: list[ConfigIssue] = []
    cards: list[tuple[Path, ModelCard]] = []
    seen: dict[str, Path] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            issues.append(ConfigIssue(str(file), "", f"cannot read the card: {exc}"))
            continue
        try:
            card = ModelCard.model_validate(data)
        except ValidationError as exc:
            issues += [ConfigIssue(str(file), ".".join(map(str, error["loc"])), error["msg"])
                       for error in exc.errors()]
            continue
        if card.key in seen:
            issues.append(ConfigIssue(str(file), "version", f"{card.key} is defined twice; "
                                      f"first in {seen[card.key]}"))
            continue
        seen[card.key] = file
        cards.append((file, card))
    if issues:
        raise ConfigError(issues)
    return cards
