"""Filters: decide whether a message (or a message for one destination) goes on."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from radbridge.engine.config import FilterConfig, FilterRule
from radbridge.mappings.payload import Payload

Predicate = Callable[[Payload], bool]


class NotACallable(LookupError):
    """'pkg.mod:attr' imports, but names no attribute or nothing callable."""


def import_callable(dotted: str) -> Callable[..., object]:
    """'package.module:attr' -> the callable it names.

    Errors of the import itself (ImportError, or whatever the module raises while
    loading) pass through; a missing or non-callable attribute is NotACallable.
    """
    module_name, _, attribute = dotted.partition(":")
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise NotACallable(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise NotACallable(f"{dotted!r} is not callable (it is a {type(target).__name__})")
    return target  # type: ignore[no-any-return]


def compile_filter(config: FilterConfig | None) -> Predicate:
    """A predicate for `config`; no filter accepts everything."""
    if config is None:
        return lambda payload: True
    if config.function is not None:
        function = import_callable(config.function)
        return lambda payload: bool(function(payload))
    tests = [_compile_rule(rule) for rule in config.rules]
    if config.mode == "all":
        return lambda payload: all(test(payload) for test in tests)
    return lambda payload: any(test(payload) for test in tests)


def _compile_rule(rule: FilterRule) -> Predicate:
    test = _operator(rule)

    def check(payload: Payload) -> bool:
        return test(payload.field(rule.field)) != rule.negate

    return check


def _operator(rule: FilterRule) -> Callable[[str | None], bool]:
    if rule.equals is not None:
        expected = rule.equals
        return lambda value: value == expected
    if rule.one_of is not None:
        allowed = frozenset(rule.one_of)
        return lambda value: value in allowed
    if rule.matches is not None:
        pattern = re.compile(rule.matches)
        return lambda value: value is not None and pattern.search(value) is not None
    if rule.contains is not None:
        needle = rule.contains
        return lambda value: value is not None and needle in value
    wanted = bool(rule.exists)
    return lambda value: (value is not None) == wanted
