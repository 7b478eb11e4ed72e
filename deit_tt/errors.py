"""Errors whose message is meant for the user: one line that says what went wrong and what to do."""


class UserFacingError(RuntimeError):
    """Printed by the CLI as a single ``error: ...`` line, without a traceback."""
