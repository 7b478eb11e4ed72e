"""The one error type of the evaluation."""

from deit_tt.errors import UserFacingError


class EvaluationError(UserFacingError):
    """A results file cannot be used (different run, damaged), or the evaluation cannot start."""
