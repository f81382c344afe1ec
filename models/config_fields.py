"""Configuration dataclasses as command-line flags, for ModelConfig (models), DataConfig (dataloaders) and
TrainConfig (utils.engine.training): each field declares once, beside its default, its flag's help, choices,
group, range and whether it may change on --resume; ``add_config_args`` registers one flag per field,
``check_ranges`` checks the ranges, ``resume_free_flags`` lists the flags a --resume may change (main.py's
hand-written flags declare it with ``resume_free``)."""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable


def option(default, help: str, choices: tuple | None = None, group: str = "model", *, at_least: float | None = None,
           above: float | None = None, within: tuple[float, float] | None = None, resume_free: str | None = None,
           **extra):
    """A config field with its flag: help text, choices, argparse group; the range its value must lie in
    (``at_least`` / ``above`` a bound, ``within`` [low, high]; floats must also be finite); ``resume_free``: why
    a --resume may give another value (None: it changes the run, so it must be the checkpoint's). ``extra``:
    ``type`` or ``action`` of the flag."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "group": group, "at_least": at_least, "above": above, "within": within,
        "resume_free": resume_free, **extra})


def resume_free(action: argparse.Action, reason: str) -> argparse.Action:
    """Mark a flag ``parser.add_argument`` returned as free to differ between a run and its --resume."""
    action.resume_free = reason
    return action


def resume_free_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{flag (dest): why it may change on --resume} over every flag of ``parser``."""
    return {action.dest: action.resume_free for action in parser._actions if getattr(action, "resume_free", None)}


def str_to_bool(value: str | bool) -> bool:
    """'true'/'false' (also 1/0, yes/no, on/off) -> bool; the released `type=bool` read 'False' as True."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def add_config_args(parser: argparse.ArgumentParser, config: type, defaults: bool = True,
                    groups: dict[str, Any] | None = None,
                    types: dict[type, tuple[Callable, str | None]] | None = None) -> argparse.ArgumentParser:
    """Register one flag ``--<field>`` per field of the dataclass ``config`` (in the argparse group its metadata
    names: one of ``groups`` by title, or a new one) and return ``parser``. A field's type is its metadata's
    ``type``, else the (type, metavar) ``types`` gives for its default's type (bool: str_to_bool), else that
    type; its metadata's ``action`` replaces the type. With ``defaults`` False every flag defaults to None (not
    given: the caller fills it in)."""
    groups = {} if groups is None else groups
    types = {bool: (str_to_bool, "{true,false}"), **(types or {})}
    for field in dataclasses.fields(config):
        meta = field.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = field.default if defaults else None
        shown = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
        text = f"{meta['help']} (default: {shown})"
        if "action" in meta:
            action = group.add_argument(f"--{field.name}", action=meta["action"], default=default, help=text)
        else:
            kind, metavar = ((meta["type"], meta.get("metavar")) if "type" in meta
                             else types.get(type(field.default), (type(field.default), None)))
            action = group.add_argument(f"--{field.name}", type=kind, default=default, choices=meta["choices"],
                                        metavar=metavar, help=text)
        if meta["resume_free"]:
            resume_free(action, meta["resume_free"])
    return parser


def check_ranges(config: type, values) -> None:
    """ValueError naming the first flag of ``config``'s fields whose value in ``values`` (an argparse namespace or
    a config) lies outside its declared range."""
    for field in dataclasses.fields(config):
        meta, value = field.metadata, getattr(values, field.name)
        finite = "a finite number " if isinstance(value, float) else ""
        bad = isinstance(value, float) and not math.isfinite(value)
        if meta["at_least"] is not None and (bad or value < meta["at_least"]):
            raise ValueError(f"--{field.name} must be {finite}>= {meta['at_least']}, got {value}")
        if meta["above"] is not None and (bad or value <= meta["above"]):
            raise ValueError(f"--{field.name} must be {finite}> {meta['above']}, got {value}")
        if meta["within"] is not None and not meta["within"][0] <= value <= meta["within"][1]:
            raise ValueError(f"--{field.name} must lie in [{meta['within'][0]}, {meta['within'][1]}], got {value}")


def config_from_args(config: type, args, **overrides):
    """An instance of the dataclass ``config`` from the attributes of ``args`` named by its fields."""
    return config(**{**{f.name: getattr(args, f.name) for f in dataclasses.fields(config)}, **overrides})
