"""Generate ``docs/configuration.md`` from the configuration models.

Why generated: hand-written key lists drifted (example configs said ``rounds`` defaulted to 50
long after it became 10). Here every table, key, type, default, range and description is read
from the pydantic models the loader validates with, and a test regenerates the page and
compares it with the committed file. Regenerate after changing a model::

    python -m motex_stream.stream.config.reference > docs/configuration.md
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from motex_stream.analysis.settings import RUN_OVERRIDABLE, LiveModelSettings
from motex_stream.stream.config.base import DEFAULT_DOC
from motex_stream.stream.config.secrets import API_KEY_ENV
from motex_stream.stream.config.service import ServiceConfig
from motex_stream.stream.config.sinks import SINK_TYPES
from motex_stream.stream.config.sources import SOURCE_TYPES

COMMAND = "python -m motex_stream.stream.config.reference > docs/configuration.md"

#: Checks that involve several keys (model validators); the schema cannot show them. Each is
#: exercised by tests/stream/test_config.py.
MODEL_RULES = (
    "`rmin` < `rmax`",
    "`qmin` < `qmax` when both are set",
    "`lower` ≤ `upper` when `upper` is set",
    "`refit` ≤ `catalogue_size` when set (unset: every motif of the catalogue)",
    "`biso`: every value within 0–50 Å²",
    "`permute`: known element symbols (any case: `w` reads as `W`)",
    "`name`: unique among the `[[models]]`",
)

INTRO = f"""\
# Configuration reference

<!-- Generated from the configuration models; do not edit by hand. Regenerate with
     `{COMMAND}` (a test compares). -->

`motex-stream serve --config FILE` reads one TOML file with four parts:

```toml
[service]      # exactly one: state folder, metrics, queue
[[models]]     # one or more: the analysis of one starting model
[[sources]]    # where frames come from (zero or more)
[[sinks]]      # where results go (zero or more)
```

Commented examples: `services/configs/*.toml` (0MQ, Tiled, a folder of `.gr` files) and
`deploy/compose/motex-stream.toml` (containers).

How the file is read:

- Relative paths (`state_dir`, `starting_model`, `reference`, a `jsonl` sink's `path`,
  `api_key_file`, a `files` source's `glob`) resolve against the folder holding the config
  file, not the working directory; `~` is expanded.
- Unknown keys, wrong types, NaN/inf and out-of-range values are errors. The service does not
  start; it lists every problem at once, one line each, naming the key
  (`models[0].rmax: should be less than or equal to 1000 (got 1500.0)`).
- An `api_key` entry anywhere is refused: Tiled API keys come from `{API_KEY_ENV}` (first)
  or the file named by `api_key_file`, never from the config file.
- Defaults below are the models' own; a key left out takes its default. *unset* means the key
  has no value unless given, and the description says what happens then.
"""


def render() -> str:
    """The whole reference page, Markdown."""
    parts = [INTRO]
    parts += _section("## `[service]`", ServiceConfig)
    parts += _section(
        "## `[[models]]`",
        LiveModelSettings,
        lead="The same settings as the offline `analyze`/`fit` commands (one model,\n"
        "`motex_stream.analysis.settings`), plus the per-frame keys of a live model.\n"
        "The first model is the default for runs whose start document names none.",
        rules=MODEL_RULES,
    )
    parts.append("## `[[sources]]`\n")
    parts.append(
        "Each entry has a `type`, which decides its other keys. `name` appears in logs and in\n"
        "the `source` label of the metrics; names must be unique.\n"
    )
    for kind, model in SOURCE_TYPES.items():
        parts += _section(f'### `type = "{kind}"`', model)
    parts.append("## `[[sinks]]`\n")
    parts.append(
        "Each entry has a `type`, which decides its other keys. `name` appears in logs and in\n"
        "the `sink` label of the metrics (`motex_sink_errors_total`); names must be unique.\n"
    )
    for kind, model in SINK_TYPES.items():
        parts += _section(f'### `type = "{kind}"`', model)
    allowed = ", ".join(f"`{k}`" for k in sorted(RUN_OVERRIDABLE))
    parts.append(
        "## Per-run settings (Bluesky start document)\n\n"
        "- `motex_model`: the name of a configured model; unknown names fall back to the\n"
        "  first model (logged as an error).\n"
        f"- `motex_overrides`: a table that may set {allowed} for that run only, checked\n"
        "  with the same ranges as above. A key outside that list, or a bad value, is logged\n"
        "  as an error and ignored; the valid keys still apply. Every other setting shapes\n"
        "  the prepared model and needs a configured model of its own.\n"
    )
    return "\n".join(parts)


def _section(
    heading: str, model: type[BaseModel], lead: str = "", rules: Iterable[str] = ()
) -> list[str]:
    doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    doc = doc.replace("``", "`")  # reStructuredText literals → Markdown
    text = [f"{heading}\n", f"{doc}\n"]
    if lead:
        text.append(f"{lead}\n")
    text.append(_table(model))
    rules = list(rules)
    if rules:
        text.append("Checked together:\n\n" + "".join(f"- {r}\n" for r in rules))
    return text


def _table(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    rows = []
    for key, prop in schema["properties"].items():
        if key == "type" and "const" in prop:
            continue  # the section heading names it
        shown_required = key in required and DEFAULT_DOC not in prop
        rank = 0 if key == "name" else 1 if shown_required else 2
        rows.append((rank, key, prop, shown_required))
    rows.sort(key=lambda row: row[0])  # stable: name, required keys, then declaration order
    lines = [
        "| key | type | default | allowed | description |",
        "|---|---|---|---|---|",
    ]
    for _, key, prop, is_required in rows:
        cells = (
            f"`{key}`",
            _type(prop),
            "required" if is_required else _default(prop),
            _allowed(prop),
            _cell(prop.get("description", "")),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _members(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a property (``float | None`` → ``[float]``)."""
    options = prop.get("anyOf", [prop])
    return [o for o in options if o.get("type") != "null"]


def _type(prop: dict[str, Any]) -> str:
    names = []
    for member in _members(prop):
        kind = member.get("type")
        if kind == "string":
            names.append("path" if member.get("format") == "path" else "string")
        elif kind == "array":
            names.append("list of " + _type(member.get("items", {})))
        elif kind == "object":
            names.append("table of " + _type(member.get("additionalProperties", {})))
        else:
            names.append({"number": "float", "integer": "int", "boolean": "bool"}.get(kind, "?"))
    return " or ".join(names)


def _default(prop: dict[str, Any]) -> str:
    if DEFAULT_DOC in prop:
        return f"`{prop[DEFAULT_DOC]}`"
    value = prop.get("default")
    if value is None:
        return "unset"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return json.dumps(value, ensure_ascii=False)


def _allowed(prop: dict[str, Any]) -> str:
    found: list[str] = []
    for member in _members(prop):
        found += _limits(member)
        values = member.get("additionalProperties")
        if isinstance(values, dict) and _limits(values):
            found.append("values " + ", ".join(_limits(values)))
        items = member.get("items")
        if isinstance(items, dict):
            found += _limits(items)
    return _cell(", ".join(dict.fromkeys(found)))


def _limits(schema: dict[str, Any]) -> list[str]:
    out = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            out.append(f"{sign} {_number(schema[key])}")
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{_toml(v)}`" for v in schema["enum"]))
    if "minItems" in schema:
        out.append(f"at least {schema['minItems']} item(s)")
    if "maxLength" in schema:
        out.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        out.append(f"matches `{schema['pattern']}`")
    return out


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}".replace(",", " ") if isinstance(value, int) else repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    """Write the page to standard output."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
