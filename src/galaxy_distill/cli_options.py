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
    """The type typer parses a field's flag into: optional parts dropped; a Literal stays, so its choices are checked and shown."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _option_type(inner)
    if origin is list:
        # typer takes no list of Literal: the choices are checked by the settings and named in the help text.
        return list[str] if get_origin(args[0]) is Literal else list[_option_type(args[0])]
    return annotation


def option_help(name: str, field: Any) -> str:
    """A field's help text: its description, which must say more than the flag's name."""
    if not field.description:
        raise TypeError(f"setting '{name}' has no description: every flag needs a help text")
    text = field.description
    if get_origin(field.annotation) is list:
        (item,) = get_args(field.annotation)
        if get_origin(item) is Literal:
            text += f"; one of {', '.join(map(str, get_args(item)))}"
        text += "; repeat the flag for several"
    default = shown_default(field)
    return f"{text}. [default: {default}]" if default is not None else f"{text}."


def shown_default(field: Any) -> str | None:
    """The default as --help shows it; for a None default the description says what happens instead."""
    if field.default is None or field.default is PydanticUndefined:
        return None
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    if isinstance(field.default, list):
        return " ".join(map(str, field.default)) or "none"
    return str(field.default)


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
                default=typer.Option(None, *declarations, help=option_help(name, field), show_default=False),
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
