"""``--set field=value``: change scenario fields from the command line, typed by the scenario model.

The value is checked by the Scenario model itself (one source of truth): it is given to the
field's pydantic type first as the text it is (pydantic's lax mode turns "3", "0.5", "true"
into numbers and booleans), and, if that is refused, as JSON (``null``, lists, dicts). A
dotted name sets one key of a dict field: ``--set operator_settings.sigma0=0.2``. The whole
scenario is validated again afterwards, so a value that breaks a cross-field rule (``migrants``
above ``population_size``) is refused with the model's own message.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from evo_engine.errors import InputError
from evo_engine.scenario import Scenario, flag_for_a_number, validate_scenario

NOT_SETTABLE = ("space", "objective", "prepare", "finalize", "objective_batch", "batch_key")
"""Fields that hold Python objects: a scenario file's business, not a command line's."""


def settable_fields() -> list[str]:
    """The fields ``--set`` accepts (and offers in its messages)."""
    return [f for f in Scenario.model_fields if f not in NOT_SETTABLE]


class OverrideError(InputError):
    """A ``--set`` argument names no settable field or gives a value the field refuses."""


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _typed(name: str, text: str) -> Any:
    annotation = Scenario.model_fields[name].annotation
    adapter = TypeAdapter(annotation)
    try:
        return adapter.validate_python(text)
    except ValidationError as first:
        candidate = _json_or_text(text)
        if candidate is text:
            raise OverrideError(_message(name, text, first)) from None
        problem = flag_for_a_number(annotation, candidate)
        if problem:  # the adapter alone would read true as 1
            raise OverrideError(f"--set {name}={text}: {problem}") from None
        try:
            return adapter.validate_python(candidate)
        except ValidationError as second:  # the value was JSON: say what is wrong inside it
            raise OverrideError(_message(name, text, second)) from None


def _message(name: str, text: str, exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
             for e in exc.errors()]
    return f"--set {name}={text}: {'; '.join(parts) or exc}"


def _field_name(name: str) -> str:
    if name in NOT_SETTABLE:
        raise OverrideError(f"--set {name}=...: {name!r} is defined by the scenario file's code "
                            f"and cannot be set from the command line")
    if name not in Scenario.model_fields:
        settable = settable_fields()
        close = difflib.get_close_matches(name, settable, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OverrideError(f"--set {name}=...: {name!r} is not a scenario field{hint}; "
                            f"settable fields: {', '.join(settable)}")
    return name


def parse_sets(scenario: Scenario, items: Sequence[str]) -> dict[str, Any]:
    """The field changes ``items`` (each ``field=value`` or ``field.key=value``) ask for."""
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise OverrideError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set islands=4")
        field, dot, key = name.partition(".")
        field = _field_name(field)
        if dot:
            current = changes.get(field, getattr(scenario, field))
            if not isinstance(current, dict):
                raise OverrideError(f"--set {name}=...: {field!r} is not a dict field, so it has "
                                    f"no key {key!r}")
            changes[field] = {**current, key: _json_or_text(text)}
        else:
            changes[field] = _typed(field, text)
    _check_operator_keys(scenario, changes, items)
    return changes


def _check_operator_keys(scenario: Scenario, changes: dict[str, Any],
                         items: Sequence[str]) -> None:
    """Name the operator that lacks a ``--set operator_settings.KEY`` (after every item, so
    ``--set operator=es`` may come before or after), and the operators that have KEY."""
    from evo_engine.search.operators import OPERATORS

    operator = str(changes.get("operator", scenario.operator))
    if operator not in OPERATORS:
        return  # the scenario's own validation names the unknown operator
    known = OPERATORS[operator].Settings.model_fields
    for item in items:
        name = item.partition("=")[0].strip()
        field, dot, key = name.partition(".")
        if field != "operator_settings" or not dot or key in known:
            continue
        others = sorted(n for n, op in OPERATORS.items() if key in op.Settings.model_fields)
        where = (f"; {key!r} is a setting of {', '.join(map(repr, others))} (add --set "
                 f"operator={others[0]})" if others else "")
        raise OverrideError(
            f"--set {item}: the scenario's operator {operator!r} has no setting {key!r}; its "
            f"settings: {', '.join(known) or 'none'}{where}")


def apply_sets(scenario: Scenario, items: Sequence[str]) -> Scenario:
    """``scenario`` with the ``--set`` items applied and the whole model validated again."""
    if not items:
        return scenario
    # Not scenario.override: that drops None, and --set max_time=null means "no limit".
    fields = {k: getattr(scenario, k) for k in Scenario.model_fields}
    fields.update(parse_sets(scenario, items))
    try:
        return validate_scenario(fields, source=f"scenario {scenario.name!r} with --set")
    except InputError as exc:
        raise OverrideError(str(exc)) from None


__all__ = ["NOT_SETTABLE", "OverrideError", "apply_sets", "parse_sets"]
