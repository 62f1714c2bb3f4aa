"""Typed validation of recpipe's YAML files (pipeline configs, table schemas, the feature spec, the
quality checks): pydantic models with unknown keys forbidden, and errors a user can act on, one line
each, naming the dotted key path and, for an unknown key or value, the closest valid name:

    samples.atribution_window_minutes: unknown key (did you mean attribution_window_minutes?)
    samples.kind: unknown value 'clik' (did you mean click? allowed: click, rating)

A list item with a `name` is named by it in the path (`features.user_age.kind`), others by index
(`samples.split_quantiles[1]`).
"""

from __future__ import annotations

import difflib
import types
from importlib import resources
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from features.errors import SpecError

MODEL = TypeVar("MODEL", bound=BaseModel)
AT_PATH = "recpipe_at_path"  # a custom error whose ctx names a path below the validator's own location
NESTED = "recpipe_nested"  # a custom error carrying (path, message) pairs of a nested validation
MISSING = "missing (required)"
SHOWN_ERRORS = 3  # more errors than this: the first ones and "(and N more)", still one line


class Section(BaseModel):
    """Base of every file model: unknown keys are errors, validated values do not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def error_at(path: str, message: str) -> PydanticCustomError:
    """An error to raise from a model validator about one of its keys (path relative to the model)."""
    return PydanticCustomError(AT_PATH, "{message}", {"path": path, "message": message})


def nested_errors(lines: list[tuple[str, str]]) -> PydanticCustomError:
    """Errors of a validation a validator ran itself (e.g. merged overrides), as (relative path, message)."""
    return PydanticCustomError(NESTED, "{count} errors", {"count": len(lines), "errors": lines})


def _unwrap(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        arms = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(arms[0]) if len(arms) == 1 else annotation
    return annotation


def _annotation_at(model: Any, loc: Sequence[Any]) -> Any:
    """The declared type at `loc` below `model` (None when it cannot be told)."""
    annotation = model
    for part in loc:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        elif origin in (dict, Mapping):
            annotation = get_args(annotation)[1]
        elif origin in (list, tuple, Sequence) and get_args(annotation):
            args = [a for a in get_args(annotation) if a is not Ellipsis]
            annotation = args[part] if isinstance(part, int) and part < len(args) else args[0]
        else:
            return None
    return _unwrap(annotation)


def path_of(loc: Sequence[Any], data: Any) -> str:
    """Dotted path of `loc`; list items with a `name` are named by it, others by [index]."""
    text, node = "", data
    for part in loc:
        item = None
        if isinstance(node, Mapping):
            item = node.get(part)
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int) and part < len(node):
            item = node[part]
        if isinstance(part, int):
            name = item.get("name") if isinstance(item, Mapping) else None
            text += f".{name}" if isinstance(name, str) and name else f"[{part}]"
        else:
            text += f".{part}"
        node = item
    return text.lstrip(".")


def _suggestion(word: Any, choices: Sequence[Any]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: ErrorDetails, model: Any) -> tuple[list[Any], str]:
    """(loc, message) of one pydantic error, in recpipe's words."""
    loc, kind, ctx = list(error["loc"]), error["type"], error.get("ctx") or {}
    if kind == AT_PATH:
        below = [int(p) if p.isdigit() else p for p in str(ctx["path"]).split(".") if p]
        return loc + below, str(ctx["message"])
    if loc and loc[-1] == "[key]":  # a mapping key outside the allowed ones
        keys = get_args(_annotation_at(model, loc[:-2]))
        allowed = list(get_args(_unwrap(keys[0]))) if keys and get_origin(_unwrap(keys[0])) is Literal else []
        best = _suggestion(loc[-2], allowed)
        hint = f"did you mean {best}?" if best else f"allowed: {', '.join(map(str, allowed))}" if allowed else ""
        return loc[:-1], "unknown key" + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        parent = _annotation_at(model, loc[:-1])
        allowed = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        best = _suggestion(loc[-1], allowed)
        hint = f"did you mean {best}?" if best else f"allowed: {', '.join(allowed)}" if allowed else ""
        return loc, "unknown key" + (f" ({hint})" if hint else "")
    if kind == "literal_error":
        annotation = _annotation_at(model, loc)
        allowed = list(get_args(annotation)) if get_origin(annotation) is Literal else []
        shown = ", ".join(str(a) for a in allowed) or str(ctx.get("expected", ""))
        best = _suggestion(error["input"], allowed) if allowed else None
        return loc, f"unknown value {_shown(error['input'])} (" + (
            f"did you mean {best}? " if best else ""
        ) + f"allowed: {shown})"
    if kind == "missing":
        return loc, MISSING
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"should be a mapping (key: value), got {_shown(error['input'])}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind in ("value_error", "assertion_error") or error["type"].startswith("recpipe"):
        return loc, message
    message = message.removeprefix("Input ").replace(" after validation", "")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return loc, f"{message}, got {_shown(error['input'])}"


def error_pairs(error: ValidationError, model: Any, data: Any) -> list[tuple[str, str]]:
    """(dotted path, what is wrong) of every error; the path is empty for an error of the whole file."""
    pairs = []
    for item in error.errors(include_url=False):
        if item["type"] == NESTED:
            base = path_of(item["loc"], data)
            pairs += [(".".join(p for p in (base, path) if p), message) for path, message in item["ctx"]["errors"]]
            continue
        loc, message = _message(item, model)
        pairs.append((path_of(loc, data), message))
    # a misspelt key also makes the key it meant missing: report the misspelling only
    meant = set()
    for path, message in pairs:
        if message.startswith("unknown key (did you mean "):
            parent = path.rpartition(".")[0]
            word = message.removeprefix("unknown key (did you mean ").removesuffix("?)")
            meant.add(f"{parent}.{word}" if parent else word)
    return [(path, message) for path, message in pairs if not (message == MISSING and path in meant)]


def error_lines(error: ValidationError, model: Any, data: Any) -> list[str]:
    """One line per error: '<dotted path>: <what is wrong>'."""
    return [
        message if not path or message.startswith(path) else f"{path}: {message}"
        for path, message in error_pairs(error, model, data)
    ]


def join_lines(source: str, lines: list[str]) -> str:
    """The errors of one file as one line: '<source>: <first>; <second>; <third> (and N more)'."""
    more = len(lines) - SHOWN_ERRORS
    return f"{source}: " + "; ".join(lines[:SHOWN_ERRORS]) + (f" (and {more} more)" if more > 0 else "")


def validate(model: type[MODEL], data: Any, source: str, error: type[Exception] = SpecError) -> MODEL:
    """`data` as a `model`, or `error` with every problem on one line prefixed by `source` (the file)."""
    try:
        return model.model_validate(data)
    except ValidationError as problem:
        raise error(join_lines(source, error_lines(problem, model, data))) from None


def problems(model: type[BaseModel], data: Any) -> list[tuple[str, str]]:
    """(path, message) of every problem of `data` as a `model` (empty when it validates); raise
    nested_errors(...) with them from a validator to report them under the validator's location."""
    try:
        model.model_validate(data)
    except ValidationError as problem:
        return error_pairs(problem, model, data)
    return []


def read_schema_file(name: str, path: str | None = None) -> tuple[Any, str]:
    """(parsed YAML, source name) of schemas/<name> shipped with the package, or of the file at `path`;
    an unreadable file or invalid YAML is a SpecError naming it."""
    source = path or f"schemas/{name}"
    try:
        text = Path(path).read_text() if path else resources.files("schemas").joinpath(name).read_text()
        return yaml.safe_load(text), source
    except OSError as error:
        raise SpecError(f"{source}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: not valid YAML: {str(error).splitlines()[0]}") from None
