"""Errors of the instance layer. The server maps each class to one HTTP status."""


class InstanceError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InstanceNotFound(InstanceError):
    """404."""


class InstanceConflict(InstanceError):
    """409: duplicate name, port in use, running instance deleted, declared instance edited."""


class LimitReached(InstanceError):
    """409 on create (max_instances); 503 on start when nothing can be evicted."""


class StartFailed(InstanceError):
    """503: the backend exited during start-up or its executable is missing."""


class StartTimedOut(InstanceError):
    """504: the backend did not become ready within the start deadline."""


class NotStartable(InstanceError):
    """503: on-demand start is off for a stopped instance."""
