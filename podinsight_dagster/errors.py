"""Errors shared by the steps of both phases."""


class StepError(RuntimeError):
    """One episode's step failed; ``retryable`` says whether a later attempt may succeed."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class StepSkipped(StepError):
    """One episode was not worked on, and that is no failure: someone else holds it, or it is up to date.

    ``held_elsewhere``: another run holds it (a live claim) and will make its later stages too, so the
    later steps of this run leave it alone (an episode merely up to date goes on to them).
    """

    def __init__(self, message: str, retryable: bool = False, *, held_elsewhere: bool = False):
        super().__init__(message, retryable)
        self.held_elsewhere = held_elsewhere
