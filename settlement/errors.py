"""The one exception tree. Each error a user can meet says what was wrong and what to do."""


class SettlementError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1
    http_status = 500


class ConfigError(SettlementError):
    """A setting is missing or invalid; fix the environment or the settings file."""

    exit_code = 2


class InputError(SettlementError):
    """A file or argument given by the user cannot be read or parsed."""

    exit_code = 2
    http_status = 422
