"""`python -m settlement.cli`: the same app as the `settlement` script."""

from settlement.cli.main import app

app(prog_name="settlement")
