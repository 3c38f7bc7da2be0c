"""A report sink for tests: keeps every event with the exact fields journald would receive."""

from __future__ import annotations

from collections.abc import Mapping

from guardian.report import Field, field_text


class MemorySink:
    """Keeps events in a list: tests assert on the exact fields journald would receive."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []

    def send(self, message: str, fields: Mapping[str, Field]) -> None:
        self.events.append({"MESSAGE": message, **{k: field_text(v) for k, v in fields.items()}})
