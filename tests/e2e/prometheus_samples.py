"""Reads the Prometheus text exposition format (0.0.4) for the e2e checks of the coordinator's
/metrics, without a client library: the format is small
(https://prometheus.io/docs/instrumenting/exposition_formats/)."""
import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def samples(text, name):
    """The samples of metric `name`: [{"labels": {...}, "value": "text of the value"}]."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a sample line: {line!r}")
        if m.group(1) != name:
            continue
        labels, rest = {}, m.group(2) or ""
        while rest:
            lm = _LABEL.match(rest)
            if not lm:
                raise ValueError(f"bad labels in {line!r}")
            labels[lm.group(1)] = re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], lm.group(2))
            rest = rest[lm.end():]
        found.append({"labels": labels, "value": m.group(3)})
    return found


def declared(text, name):
    """The TYPE of metric `name` when it has both a HELP and a TYPE line; None otherwise."""
    help_line = re.search(rf"^# HELP {re.escape(name)} \S", text, re.M)
    type_line = re.search(rf"^# TYPE {re.escape(name)} (\w+)$", text, re.M)
    return type_line.group(1) if help_line and type_line else None
