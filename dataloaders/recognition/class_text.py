"""The text a class is scored by: its name in words ("ApplyEyeMakeup" -> "apply eye makeup", "brush_hair" ->
"brush hair"), put into a template ("a video of a person {name}" -> "a video of a person apply eye makeup")."""

from __future__ import annotations

import re

DEFAULT_TEMPLATE = "a video of a person {name}"
# A word boundary inside a CamelCase name: lower/digit -> upper ("ApplyEye"), or the last capital of an acronym
# before a capitalised word ("UFOLanding" -> "UFO Landing").
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def class_words(name: str) -> str:
    """A class name as lower-case words: CamelCase and underscores split, runs of spaces collapsed;
    parentheses and other characters are kept ("dancing (ballet)")."""
    spaced = _CAMEL_BOUNDARY.sub(" ", name.replace("_", " "))
    return " ".join(spaced.split()).lower()


def check_template(template: str) -> str:
    """`template` if it holds the {name} placeholder exactly once (ValueError naming --class_template else)."""
    if template.count("{name}") != 1:
        raise ValueError(f"--class_template {template!r} must contain {{name}} exactly once (where the class "
                         "name goes), e.g. 'a video of a person {name}'")
    return template


def class_texts(class_names: list[str], template: str, given: list[str] | None = None) -> list[str]:
    """The text of every class: `given[i]` where the dataset provides it (Something-Something v2's templates,
    used as they are), else the template filled with class_words(name)."""
    check_template(template)
    if given is not None:
        return [template.replace("{name}", text) for text in given]
    return [template.replace("{name}", class_words(name)) for name in class_names]
