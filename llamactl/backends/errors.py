"""Errors of the backend layer: all are the user's input, never llamactl's fault."""

from llamactl.errors import LlamactlError


class BackendInputError(LlamactlError, ValueError):
    """Input that cannot become backend options: a 400 at the API, exit 2 on the CLI.

    ``field`` names the option key, flag or shell construct at fault when there
    is one, so a client can point at it.
    """

    status = 400
    code = "invalid_request"


class CommandSyntaxError(BackendInputError):
    """A pasted command that is not one plain command: quotes, operators, expansions."""


class OptionValueError(BackendInputError):
    """A flag or option key with a value of the wrong type or outside its choices."""


class WrongBackendError(BackendInputError):
    """A command of one backend pasted as another's."""
