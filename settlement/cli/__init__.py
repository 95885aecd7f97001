"""`settlement`, the command line: one module per command group, wired in main.py."""

import importlib.util

# The base install is the SDK only: its `settlement` script should say what to install,
# not end in a traceback about typer.
if importlib.util.find_spec("typer") is None:  # pragma: no cover - only in an SDK-only venv
    raise SystemExit(
        "settlement: the command line comes with the server extra: "
        "pip install 'w2e-settlement[server]'"
    )
