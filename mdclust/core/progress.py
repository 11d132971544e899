"""Progress bars on stderr that vanish under --quiet/--json."""

from __future__ import annotations

import contextlib
from typing import Iterator


class _NoProgress:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool, unit: str = "items") -> Iterator:
    """A rich Progress (or a silent stand-in) with a rate column in ``unit``/s."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class _Rate(TextColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return TextColumn(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s").render(task)

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), _Rate(""), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield progress
