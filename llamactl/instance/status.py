"""Instance statuses, with the Go llamactl's names."""

from enum import StrEnum


class InstanceStatus(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    """Ready: the backend's readiness probe passed, not merely spawned."""
    RESTARTING = "restarting"
    """Waiting out the back-off before a restart after a crash."""
    SHUTTING_DOWN = "shutting_down"
    FAILED = "failed"
