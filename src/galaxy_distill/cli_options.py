"""Command-line options generated from a command's pydantic settings, so each setting is declared once.

Every option defaults to None, meaning "not given": the YAML file (or the settings'
own default) then decides. The settings' field descriptions become the help texts.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import typer
from pydantic_core import PydanticUndefined

from galaxy_distill.config import Settings


def _option_type(annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _option_type(inner)
    if origin is Literal:
        return str
    if origin is list:
        return list[_option_type(args[0])]
    return annotation


def _help(name: str, field: Any) -> str:
    origin = get_origin(field.annotation)
    choices = ""
    inner = [a for a in get_args(field.annotation) if a is not type(None)] if origin in (Union, types.UnionType) else [field.annotation]
    for candidate in inner:
        if get_origin(candidate) is Literal:
            choices = f" [{'|'.join(map(str, get_args(candidate)))}]"
        if get_origin(candidate) is list and get_origin(get_args(candidate)[0]) is Literal:
            choices = f" [{'|'.join(map(str, get_args(get_args(candidate)[0])))}; repeat the option for several]"
    default = "" if field.default is PydanticUndefined else f" (default: {field.default})"
    return f"{field.description or name.replace('_', ' ')}{choices}{default}"


def settings_options(settings_type: type[Settings], skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `command(values: dict, **own_params)`: adds one option per settings field not in `skip`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        # Resolve the command's own (string) annotations so typer keeps their Annotated help and limits.
        hints = get_type_hints(command, include_extras=True)
        own = [parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
               for parameter in list(inspect.signature(command).parameters.values())[1:]]
        fields = {name: field for name, field in settings_type.model_fields.items() if name not in skip}
        generated = []
        for name, field in fields.items():
            kind = _option_type(field.annotation)
            flag = "--" + name.replace("_", "-")
            declarations = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
            generated.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                default=typer.Option(None, *declarations, help=_help(name, field), show_default=False),
            ))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in fields}
            return command(values, **kwargs)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        )
        return wrapper

    return decorate
