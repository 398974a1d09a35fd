"""Errors of the instance layer, each with the HTTP status the server answers."""

from llamactl.errors import LlamactlError

RETRY_AFTER_SECONDS = 5


class InstanceError(LlamactlError):
    pass


class InstanceNotFound(InstanceError):
    status = 404
    code = "not_found"


class InstanceConflict(InstanceError):
    """Duplicate name, max_instances, port in use, running instance deleted, declared instance edited."""

    status = 409
    code = "conflict"


class LimitReached(InstanceError):
    """A start needs capacity (max_running_instances, a group limit) and nothing can be evicted."""

    status = 503
    code = "capacity_full"
    retry_after = RETRY_AFTER_SECONDS


class StartFailed(InstanceError):
    """The backend exited during start-up, its executable is missing, or its port is taken."""

    status = 503
    code = "instance_start_failed"
    retry_after = RETRY_AFTER_SECONDS


class StartTimedOut(InstanceError):
    """The backend did not become ready, or a queued request was not served, within the deadline."""

    status = 504
    code = "instance_start_timeout"
    retry_after = RETRY_AFTER_SECONDS


class NotStartable(InstanceError):
    """The instance is not running and cannot be started now (on-demand start off, shutting down)."""

    status = 503
    code = "instance_unavailable"
    retry_after = RETRY_AFTER_SECONDS


class InstanceStopped(InstanceError):
    """The instance a request waited for was stopped, deleted or removed on purpose."""

    status = 503
    code = "instance_stopped"
    retry_after = RETRY_AFTER_SECONDS


class QueueFull(InstanceError):
    """A request queue (the instance's ``max_queue`` or ``instances.max_queue``) is full."""

    status = 429
    code = "queue_full"
    retry_after = 1
