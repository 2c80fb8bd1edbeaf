"""Polling conditions (upstream's `test_driver/polling_condition.py`).

A condition registered with `with cond:` is checked before every command a machine runs and
every monitor command, at most once per interval; when it fails, the command raises
`PollingConditionError`. While any condition is active, the driver has waits poll from the
host (as upstream's do), so the condition keeps being checked during the wait.
"""

import datetime
import math
import time
from collections.abc import Callable
from typing import Any

from ntd.duration import polling_interval


class PollingConditionError(Exception):
    """A polling condition failed."""


class PollingCondition:
    """A check that must keep holding while it is entered."""

    condition: Callable[[], "bool | None"]
    interval: datetime.timedelta
    description: "str | None"
    last_called: float
    entry_count: int

    def __init__(
        self,
        condition: Callable[[], "bool | None"],
        logger: Any,
        seconds_interval: "float | None" = None,
        description: "str | None" = None,
        *,
        interval: "datetime.timedelta | None" = None,
    ) -> None:
        interval = polling_interval("PollingCondition", seconds_interval, interval)
        self.condition = condition
        self.interval = interval if interval is not None else datetime.timedelta(seconds=2)
        self.logger = logger
        if description is not None:
            self.description = str(description)
        else:
            self.description = condition.__doc__ or getattr(condition, "__name__", repr(condition))
        self.last_called = -math.inf
        self.entry_count = 0

    @property
    def entered(self) -> bool:
        """True while the condition itself runs (so its own commands do not re-check it)."""
        assert self.entry_count >= 0
        return self.entry_count > 0

    @property
    def overdue(self) -> bool:
        if not math.isfinite(self.last_called):
            return True
        return datetime.timedelta(seconds=time.monotonic() - self.last_called) > self.interval

    @property
    def nested_message(self) -> str:
        return "Checking polling condition" + (f" {self.description!r}" if self.description is not None else "")

    def status_message(self, status: bool) -> str:
        return f"Polling condition {'succeeded' if status else 'failed'}: {self.description}"

    def check(self, force: bool = False) -> bool:
        """Run the condition if it is due (or `force`); an exception counts as failure, a
        `None` result as success."""
        if (self.entered or not self.overdue) and not force:
            return True
        with self, self.logger.nested(self.nested_message):
            since = time.monotonic() - self.last_called
            self.logger.info(f"Time since last: {since:.2f}s" if math.isfinite(since) else "(not called yet)")
            try:
                result = self.condition()
            except Exception:
                result = False
            ok = result is None or bool(result)
            self.logger.info(self.status_message(ok))
            return ok

    def maybe_raise(self) -> None:
        if not self.check():
            raise PollingConditionError(self.status_message(False))

    def __enter__(self) -> None:
        self.entry_count += 1

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        assert self.entered
        self.entry_count -= 1
        self.last_called = time.monotonic()
