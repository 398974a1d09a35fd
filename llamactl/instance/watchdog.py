"""Run one backend and take it down when llamactl dies, even by SIGKILL.

    python -I watchdog.py GRACE_SECONDS -- ARGV...

llamactl starts this script as the leader of a new process group, with a pipe
on its standard input that llamactl never writes to. The script starts the
backend in the same group and waits. When llamactl exits for any reason, the
kernel closes the pipe; the script reads EOF and stops the whole group
(SIGTERM, then SIGKILL after the grace period). No code of llamactl has to
run for that, which is the point.

It exits with the backend's exit code (128 + N for a signal N). Standard
library only, and nothing imported from llamactl: it must start fast and run
under any interpreter.
"""

import os
import select
import signal
import sys
import time


def stop_group(grace: float) -> None:
    """SIGTERM the group (the backend and its children), SIGKILL what is left after the grace."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal also reaches this process
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)


def main() -> int:
    grace = float(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    try:
        # posix_spawn rather than subprocess: importing subprocess costs this start-up path.
        backend = os.posix_spawnp(
            argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
        )
    except OSError as error:
        print(f"llamactl: cannot start {argv[0]}: {error.strerror}", file=sys.stderr, flush=True)
        return 127
    # When llamactl signals the group, the backend gets the signal too; this
    # process stays to report the backend's exit code. (Ignored only after the
    # spawn: an ignored signal would be inherited by the backend.)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = select.poll()
    watch.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    # A pidfd turns the backend's exit into an event poll() waits for, with no polling delay.
    backend_exit = os.pidfd_open(backend) if hasattr(os, "pidfd_open") else None
    if backend_exit is not None:
        watch.register(backend_exit, select.POLLIN)
    while True:
        pid, status = os.waitpid(backend, os.WNOHANG)
        if pid == backend:
            return exit_code(status)
        events = dict(watch.poll(None if backend_exit is not None else 200))
        if sys.stdin.fileno() in events and not os.read(sys.stdin.fileno(), 1):
            stop_group(grace)  # llamactl is gone
            return exit_code(os.waitpid(backend, 0)[1])


def exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
