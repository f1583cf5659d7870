"""A schedule file: phases as rows of a CSV file (`schedule: {file: ...}` in a rule).

The first line that is not blank or a comment (#) names the columns, each once, from
rules/fields.py's SCHEDULE_COLUMNS; `for` is needed. Each next row is one phase: `for` its
length, `delay` and `jitter` times and `loss` a probability, in the units a rule file uses
(20ms, 1%); an empty or missing cell is 0. A row becomes the phase's actions: a delay when it
has a delay or jitter, a loss when it has a loss, in that order. Errors name the file, the row's
line and the cell's column.
"""
from __future__ import annotations

from reshaper._native import lib
from reshaper.rules.fields import ACTIONS, MAX_TIME_NS, SCHEDULE_COLUMNS
from reshaper.rules.loader import read_text
from reshaper.rules.model import Action, ConfigError, Diagnostic, Invalid, Phase
from reshaper.rules.values import probability_of, time_ns


def _defaults(kind: str) -> dict:
    return {key: field.default for key, field in ACTIONS[kind].value.fields.items()}


def _cells(line: str) -> list[tuple[int, str]]:
    """The cells of a row with the column (from 1) each starts at, stripped."""
    cells, start = [], 0
    for part in line.split(","):
        cells.append((start + len(part) - len(part.lstrip()) + 1, part.strip()))
        start += len(part) + 1
    return cells


def _phase(cells: dict[str, tuple[int, str]], path: str, line: int) -> Phase:
    values = {}
    for column, (col, text) in cells.items():
        try:
            if column == "loss":
                values[column] = probability_of(text) if text else 0.0
            elif column == "for":
                values[column] = time_ns(text, lib.RS_MAX_PHASE_NS)
                if values[column] == 0:
                    raise Invalid(f"expected a phase longer than 0, got {text!r}")
            else:
                values[column] = time_ns(text, MAX_TIME_NS) if text else 0
        except Invalid as exc:
            raise ConfigError([Diagnostic(path, line, col, f"{column}: {exc}")]) from None
    actions = []
    if values.get("delay") or values.get("jitter"):
        actions.append(Action("delay", _defaults("delay") | {"time": values.get("delay", 0),
                                                             "jitter": values.get("jitter", 0)}, None))
    if values.get("loss"):
        actions.append(Action("loss", {"model": "random", "probability": values["loss"], "correlation": 0.0}, None))
    return Phase(values["for"], actions, None)


def read_schedule_file(path: str) -> list[Phase]:
    """The phases of a schedule file; ConfigError at its line and column when it is wrong."""
    header: list[str] | None = None
    phases: list[Phase] = []
    for line, text in enumerate(read_text(path).splitlines(), 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        cells = _cells(text)
        if header is None:
            header = []
            for col, name in cells:
                header.append(name)
                if name not in SCHEDULE_COLUMNS or header.count(name) > 1:
                    raise ConfigError([Diagnostic(path, line, col, f"expected a header naming each column once, "
                                                                  f"from {', '.join(SCHEDULE_COLUMNS)}; got {name!r}")])
            if "for" not in header:
                raise ConfigError([Diagnostic(path, line, 1, "expected a column 'for' (each phase's length)")])
            continue
        if len(cells) > len(header):
            raise ConfigError([Diagnostic(path, line, cells[len(header)][0],
                                          f"expected {len(header)} cells ({', '.join(header)}), got {len(cells)}")])
        if len(phases) == lib.RS_MAX_PHASES:
            raise ConfigError([Diagnostic(path, line, 1, f"expected at most {lib.RS_MAX_PHASES} phases")])
        given = dict(zip(header, cells))
        if "for" not in given or not given["for"][1]:
            raise ConfigError([Diagnostic(path, line, 1, "expected the phase's length (the 'for' cell)")])
        phases.append(_phase(given, path, line))
    if not phases:
        raise ConfigError([Diagnostic(path, 1, 1, "expected a header naming the columns, then at least one phase")])
    return phases
