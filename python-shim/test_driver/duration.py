"""Upstream's `test_driver.duration`: durations as test scripts pass them."""

import warnings

from ntd.duration import Duration, as_seconds, as_timedelta

__all__ = ["Duration", "as_seconds", "as_timedelta"]


def _warn_if_numeric_duration(duration: "Duration | None", func_name: str) -> None:
    """Upstream's deprecation warning for a bare number of seconds."""
    if duration is None or isinstance(duration, bool):
        return
    if isinstance(duration, (int, float)):
        warnings.warn(
            f"{func_name}(): passing a bare int/float as a duration is deprecated. Use datetime.timedelta instead."
        )
