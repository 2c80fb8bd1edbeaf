"""Durations as test scripts pass them (upstream's `test_driver/duration.py`): a
`datetime.timedelta`, or a number of seconds."""

import datetime

Duration = datetime.timedelta | int | float


def as_timedelta(duration: Duration) -> datetime.timedelta:
    if isinstance(duration, bool):
        raise TypeError(f"expected a duration, got bool: {duration!r}")
    if isinstance(duration, datetime.timedelta):
        return duration
    if isinstance(duration, (int, float)):
        return datetime.timedelta(seconds=duration)
    raise TypeError(f"expected a timedelta, int, or float duration, got {type(duration).__name__}")


def as_seconds(duration: Duration) -> float:
    return as_timedelta(duration).total_seconds()
