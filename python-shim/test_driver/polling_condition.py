"""Upstream's `test_driver.polling_condition`."""

from ntd.polling_condition import PollingCondition, PollingConditionError

__all__ = ["PollingCondition", "PollingConditionError"]
