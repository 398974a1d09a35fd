"""The base of every backend's generated options struct."""

import msgspec


class BackendOptions(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Options of one backend: ``None`` means the flag is not given.

    ``extra_args`` holds argv tokens the CLI spec does not know, verbatim and in
    order, appended after the known flags.
    """

    extra_args: list[str] = []
