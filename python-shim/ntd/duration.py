"""Durations as test scripts pass them (upstream's `test_driver/duration.py`): a
`datetime.timedelta`, or a number of seconds."""

import datetime
import warnings

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


def polling_interval(
    caller: str, seconds_interval: "float | None", interval: "datetime.timedelta | None"
) -> "datetime.timedelta | None":
    """The `interval` of a polling condition, given as `interval` or as the deprecated
    `seconds_interval` (with upstream's warning); both at once is a `TypeError`. `caller`
    names the function in the messages, as upstream's do."""
    if seconds_interval is None:
        return interval
    if interval is not None:
        raise TypeError(f"{caller}() got both 'interval' and 'seconds_interval' arguments. Pass only 'interval'")
    warnings.warn(f"{caller}(): The 'seconds_interval' argument is deprecated. Use 'interval' instead.")
    return as_timedelta(seconds_interval)
