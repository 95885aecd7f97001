"""`python -m settlement.cli`: the same as the `settlement` script."""

from settlement.cli.main import run

run()
