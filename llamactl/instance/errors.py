"""Errors of the instance layer. The server maps each class to one HTTP status."""


class InstanceError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InstanceNotFound(InstanceError):
    """404."""


class InstanceConflict(InstanceError):
    """409: duplicate name, max_instances, port in use, running instance deleted, declared instance edited."""


class LimitReached(InstanceError):
    """503: a start needs capacity (max_running_instances, a group limit) and nothing can be evicted."""


class StartFailed(InstanceError):
    """503: the backend exited during start-up, its executable is missing, or its port is taken."""


class StartTimedOut(InstanceError):
    """504: the backend did not become ready within the start deadline."""


class NotStartable(InstanceError):
    """503: the instance is not running and cannot be started now (on-demand start off, shutting down)."""
