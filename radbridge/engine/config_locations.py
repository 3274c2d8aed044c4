"""Walking a pydantic error location alongside the model types it came from.

Pydantic puts the tag of a discriminated union into an error's location
(`destinations.0.file.directory`); to point at the YAML that was written, and to say
which keys or types were allowed there, the loader walks the location and the
`ChannelConfig` annotations together.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from radbridge.engine.config import ChannelConfig

Loc = list[str | int]


@dataclass
class Resolved:
    """A pydantic loc walked alongside the model types."""

    loc: Loc
    parent: type[BaseModel] | None = None
    """The model that owns the last segment (for the list of allowed keys)."""
    discriminator: str | None = None
    tags: dict[str, type[BaseModel]] = field(default_factory=dict)
    """When loc names a discriminated union: its tags and their models."""


def resolve_loc(raw_loc: tuple[int | str, ...]) -> Resolved:
    """Drop the union tags pydantic puts in locs, and note the model at each step."""
    resolved = Resolved([])
    annotation, discriminator = unwrap(ChannelConfig, None)
    for segment in raw_loc:
        tags = union_tags(annotation, discriminator)
        if tags and isinstance(segment, str) and segment in tags:
            annotation, discriminator = tags[segment], None
            continue
        resolved.parent = annotation if is_model(annotation) else None
        is_index = get_origin(annotation) is list and isinstance(segment, int)
        resolved.loc.append(segment if is_index else str(segment))
        annotation, discriminator = unwrap(*child(annotation, segment))
    resolved.discriminator = discriminator
    resolved.tags = union_tags(annotation, discriminator)
    return resolved


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def unwrap(annotation: Any, discriminator: str | None) -> tuple[Any, str | None]:
    """Strip Annotated (keeping a discriminator it declares) and Optional."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *metadata = get_args(annotation)
            for item in metadata:
                if isinstance(item, FieldInfo) and isinstance(item.discriminator, str):
                    discriminator = item.discriminator
        elif get_origin(annotation) in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation, discriminator
            annotation = members[0]
        else:
            return annotation, discriminator


def child(annotation: Any, segment: str | int) -> tuple[Any, str | None]:
    """The type one loc segment below `annotation` (Any when it cannot be told)."""
    if is_model(annotation):
        for name, info in annotation.model_fields.items():
            if segment in (name, info.alias):
                disc = info.discriminator if isinstance(info.discriminator, str) else None
                return info.annotation, disc
    elif get_origin(annotation) is list and get_args(annotation):
        return get_args(annotation)[0], None
    elif get_origin(annotation) is dict and len(get_args(annotation)) == 2:
        return get_args(annotation)[1], None
    return Any, None


def union_tags(annotation: Any, discriminator: str | None) -> dict[str, type[BaseModel]]:
    """Tag -> model of a discriminated union, read from the members' Literal fields."""
    if discriminator is None or get_origin(annotation) not in (Union, types.UnionType):
        return {}
    tags: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        info = member.model_fields.get(discriminator) if is_model(member) else None
        if info is not None and get_origin(info.annotation) is Literal:
            tags.update((str(tag), member) for tag in get_args(info.annotation))
    return tags
