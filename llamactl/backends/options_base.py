"""The base of every backend's generated options struct, and the constrained types its fields use."""

from typing import Annotated

import msgspec

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
"""The TCP port a backend listens on (the ``port`` option of every backend)."""

Host = Annotated[str, msgspec.Meta(min_length=1)]
"""The address a backend listens on (the ``host`` option of every backend)."""


class BackendOptions(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Options of one backend: ``None`` means the flag is not given.

    ``extra_args`` holds argv tokens the CLI spec does not know, verbatim and in
    order, appended after the known flags.
    """

    extra_args: list[str] = []
