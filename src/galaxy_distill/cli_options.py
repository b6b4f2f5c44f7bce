"""Command-line options generated from a command's pydantic settings, so each setting is declared once.

Every option defaults to None, meaning "not given": the YAML file (or the settings'
own default) then decides. The settings' field descriptions become the help texts, and the
settings alone check the values (a flag's text is parsed as the field's type by pydantic).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

import typer
from pydantic_core import PydanticUndefined

from galaxy_distill.settings import Settings


def _value_type(annotation: Any) -> Any:
    """The field's type without its optional None."""
    if get_origin(annotation) in (Union, types.UnionType):
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        return inner
    return annotation


METAVARS = {int: "<int>", float: "<float>", str: "<text>", Path: "<path>"}


def metavar(annotation: Any) -> str:
    """How --help shows a flag's value: its choices, or the kind of value."""
    kind = _value_type(annotation)
    if get_origin(kind) is list:
        return metavar(get_args(kind)[0])
    if get_origin(kind) is Literal:
        return f"[{'|'.join(map(str, get_args(kind)))}]"
    return METAVARS.get(kind, "<text>")


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
            kind = _value_type(field.annotation)
            flag = "--" + name.replace("_", "-")
            help_text = option_help(name, field)
            if kind is bool:
                option = typer.Option(None, f"{flag}/--no-{name.replace('_', '-')}", help=help_text, show_default=False)
            else:
                # Passed on as typed; the settings alone check values, so every bad value gets the same one-line error.
                kind = list[str] if get_origin(kind) is list else str
                option = typer.Option(None, flag, help=help_text, show_default=False, metavar=metavar(field.annotation))
            generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                               default=option))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in fields}
            return command(values, **kwargs)

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        )
        return wrapper

    return decorate
