"""Safe YAML with YAML 1.2 numbers and size limits: the one loader for configs and specs.

* ``safe_load`` only (no object construction).
* ``1e-4`` is a float, as in YAML 1.2 and as users write learning rates (PyYAML's YAML 1.1
  resolver reads it as the string ``'1e-4'``).
* A file over ``MAX_BYTES`` is refused before parsing (a 50 MB file parses for minutes), and a
  document that expands to more than ``MAX_NODES`` values is refused after parsing: aliases
  make a 560-byte "billion laughs" load in milliseconds as shared references, and any code
  that walks or prints it would then run for minutes at gigabytes.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["YamlLimitError", "safe_load", "MAX_BYTES", "MAX_NODES"]

MAX_BYTES = 1_000_000  # a spec or config is a few hundred bytes; 1 MB is generous
MAX_NODES = 100_000  # scalars + containers after expanding aliases


class YamlLimitError(ValueError):
    """The document is too large (bytes or expanded values); one line for the user."""


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.2 core schema floats: 1e-4, 1E+3, .5, 1.0, -2.5e-3 (PyYAML's 1.1 rule needs a dot).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _count(node: Any, budget: int) -> int:
    """Values in ``node`` with aliases expanded, stopping once ``budget`` is exceeded."""
    stack, n = [node], 0
    while stack:
        item = stack.pop()
        n += 1
        if n > budget:
            return n
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return n


def safe_load(text: str, where: str = "YAML") -> Any:
    """Parse ``text``; :class:`YamlLimitError` past the limits, ``yaml.YAMLError`` if invalid."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{where} is {len(text):,} characters; at most {MAX_BYTES:,} "
                             f"are allowed")
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    if _count(data, MAX_NODES) > MAX_NODES:
        raise YamlLimitError(f"{where} expands to more than {MAX_NODES:,} values (aliases "
                             f"repeated?); at most {MAX_NODES:,} are allowed")
    return data
