"""The interactive prompt of `nixos-test-driver --interactive` (upstream's `Driver.interactive`).

ptpython's IPython flavour when the driver's Python can import both (what upstream embeds:
`%magic`, `obj?`), else plain ptpython, else Python's own console with readline editing and
completion of the globals; each keeps its history in a file (upstream's
`.nixos-test-history`).
"""

import sys
from typing import Any


def prompt(symbols: dict[str, Any], history_path: str) -> None:
    """A prompt on `symbols` until end of input, its history kept in `history_path`."""
    flavour = _flavour()
    # Outside the `except`s: an interrupted command must not show an ImportError as its
    # context.
    if flavour == "ipython":
        from ptpython.ipython import embed as ipython_embed  # type: ignore[import-not-found,unused-ignore]
        from ptpython.repl import enable_deprecation_warnings  # type: ignore[import-not-found,unused-ignore]

        # As upstream: the deprecations of driver methods show in the session.
        enable_deprecation_warnings()
        ipython_embed(user_ns=symbols, history_filename=history_path)  # type: ignore[no-untyped-call,unused-ignore]
    elif flavour == "ptpython":
        from ptpython.repl import embed, enable_deprecation_warnings  # type: ignore[import-not-found,unused-ignore]

        enable_deprecation_warnings()
        embed(globals=symbols, history_filename=history_path)
    else:
        _console(symbols, history_path)


def _flavour() -> str:
    """`ipython`, `ptpython` or `console`: the best prompt this Python can import."""
    try:
        import ptpython.ipython  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        return "ipython"
    try:
        import ptpython.repl  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "console"
    return "ptpython"


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
