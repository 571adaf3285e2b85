"""Errors raised by the executors package (before submission, or for a job that failed)."""


class ExecutorError(ValueError):
    """Bad executor input, or a cluster that cannot take the job: raised before anything is
    submitted. The message is one line that says what to change."""


class JobFailed(RuntimeError):
    """A submitted job ended in a state other than SUCCEEDED (FAILED, CANCELLED, UNKNOWN...)."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result
