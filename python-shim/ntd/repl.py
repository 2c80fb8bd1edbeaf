"""The interactive prompt of `nixos-test-driver --interactive` (upstream's `Driver.interactive`).

ptpython when the driver's Python can import it (upstream embeds it), else Python's own
console with readline editing and completion of the globals; either keeps its history in a
file (upstream's `.nixos-test-history`).
"""

import sys
from typing import Any


def prompt(symbols: dict[str, Any], history_path: str) -> None:
    """A prompt on `symbols` until end of input, its history kept in `history_path`."""
    try:
        from ptpython.repl import embed  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        have_ptpython = False
    else:
        have_ptpython = True
    # Outside the `except`: an interrupted command must not show the ImportError as its
    # context.
    if have_ptpython:
        embed(globals=symbols, history_filename=history_path)
    else:
        _console(symbols, history_path)


def _console(symbols: dict[str, Any], history_path: str) -> None:
    """Python's interactive console on `symbols`, with readline editing, completion of the
    globals, and the history kept in `history_path`."""
    import code

    try:
        import readline
        import rlcompleter
    except ImportError:
        readline = None  # type: ignore[assignment]
    if readline is not None:
        readline.set_completer(rlcompleter.Completer(symbols).complete)
        readline.parse_and_bind("tab: complete")
        readline.set_history_length(10_000)
        try:
            readline.read_history_file(history_path)
        except OSError:
            pass
    try:
        code.interact(banner="", local=symbols, exitmsg="")
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history_path)
            except OSError as e:
                print(f"cannot write the history {history_path}: {e}", file=sys.stderr)
