"""Upstream's `test_driver.logger`: the logger classes test scripts and tooling name.

ntd has one logger, native, whose lines reach every sink the process set up (the terminal;
with `nixos-test-driver`, also the XML log, the JUnit report and OpenTelemetry). The classes
here give it upstream's names and type: `AbstractLogger` is the interface (the script's `log`
is one), `CompositeLogger` and `TerminalLogger` write through the native logger. Upstream's
file sinks are options of `nixos-test-driver` here (`LOGFILE`, `--junit-xml`).
"""

import enum
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ntd import _native

__all__ = [
    "AbstractLogger",
    "CompositeLogger",
    "JunitXMLLogger",
    "LogLevel",
    "Logger",
    "TerminalLogger",
    "XMLLogger",
]


class LogLevel(enum.IntEnum):
    """The levels of `--log-level`."""

    DEBUG = 1
    INFO = 2
    WARNING = 3
    ERROR = 4


class AbstractLogger(ABC):
    """What a logger offers a test script (`log.info(...)`, `with log.nested(...)`)."""

    @abstractmethod
    def log(self, message: str, attributes: "dict[str, str] | None" = None) -> None: ...

    @abstractmethod
    def subtest(self, name: str, attributes: "dict[str, str] | None" = None) -> AbstractContextManager[object]: ...

    @abstractmethod
    def nested(self, message: str, attributes: "dict[str, str] | None" = None) -> AbstractContextManager[object]: ...

    @abstractmethod
    def debug(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def info(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def warning(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def error(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def log_test_error(self, *args: Any, **kwargs: Any) -> None: ...

    @abstractmethod
    def log_serial(self, message: str, machine: str) -> None: ...

    @abstractmethod
    def print_serial_logs(self, enable: bool) -> None: ...

    @abstractmethod
    def set_log_level(self, level: "LogLevel | int | str") -> None: ...


# The native logger is one (the script's `log` global).
AbstractLogger.register(_native.Logger)


class _ThroughNative(AbstractLogger):
    """A logger writing through ntd's native logger."""

    def __init__(self) -> None:
        self._native = _native.Logger()

    def log(self, message: str, attributes: "dict[str, str] | None" = None) -> None:
        self._native.log(message, attributes)

    def subtest(self, name: str, attributes: "dict[str, str] | None" = None) -> AbstractContextManager[object]:
        return self._native.subtest(name, attributes)

    def nested(self, message: str, attributes: "dict[str, str] | None" = None) -> AbstractContextManager[object]:
        return self._native.nested(message, attributes)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        self._native.debug(*args, **kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._native.info(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._native.warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._native.error(*args, **kwargs)

    def log_test_error(self, *args: Any, **kwargs: Any) -> None:
        self._native.log_test_error(*args, **kwargs)

    def log_serial(self, message: str, machine: str) -> None:
        self._native.log_serial(message, machine)

    def print_serial_logs(self, enable: bool) -> None:
        self._native.print_serial_logs(enable)

    def set_log_level(self, level: "LogLevel | int | str") -> None:
        self._native.set_log_level(level)


class TerminalLogger(_ThroughNative):
    """Log lines on stderr, in upstream's format (ntd always writes them)."""


class CompositeLogger(_ThroughNative):
    """Upstream's fan-out logger. ntd's native logger already reaches every sink, so the
    loggers given are kept (as `logger_list`) but not written to separately."""

    def __init__(self, logger_list: "list[AbstractLogger] | None" = None) -> None:
        super().__init__()
        self.logger_list: list[AbstractLogger] = list(logger_list or [])

    def add_logger(self, logger: AbstractLogger) -> None:
        self.logger_list.append(logger)


# The era-A name of the test script's logger.
Logger = CompositeLogger


class XMLLogger(_ThroughNative):
    """Upstream's XML log. ntd writes it from `nixos-test-driver` when `LOGFILE` is set."""

    def __init__(self, outfile: "str | Path") -> None:
        raise NotImplementedError(
            f"ntd writes the XML log from nixos-test-driver: set LOGFILE={outfile} for the run"
        )


class JunitXMLLogger(_ThroughNative):
    """Upstream's JUnit report. ntd writes it from `nixos-test-driver --junit-xml`."""

    def __init__(self, outfile: "str | Path") -> None:
        raise NotImplementedError(f"ntd writes the JUnit report from nixos-test-driver: pass --junit-xml {outfile}")
