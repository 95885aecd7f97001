"""`settlement serve` gives uvicorn's own loggers the URL-redacting filter (issue 15 item 3)."""

from __future__ import annotations

import pytest


def test_uvicorn_loggers_redact_urls(capsys: pytest.CaptureFixture[str]) -> None:
    import logging
    import logging.config

    from settlement.cli.serve import uvicorn_log_config

    logging.config.dictConfig(uvicorn_log_config())
    secret_url = "postgresql://alice:s3cretpw@db.internal:5432/prod?sslkey=KEYABC"
    try:
        raise RuntimeError(f"cannot connect to {secret_url}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn").warning("store at %s is down", secret_url)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", secret_url, "1.1", 200
    )
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("postgresql://db.internal:5432") == 3, text  # traceback, warning, access
    for secret in ("alice", "s3cretpw", "KEYABC", "/prod"):
        assert secret not in text, text
