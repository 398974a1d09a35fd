"""Turn a pasted shell command into its environment assignments and argv words.

bashlex parses the text the way bash would, so quoting, escapes and line
continuations behave as in a terminal; text of plain words only, which bash
would just split at blanks, is split without it. Nothing is ever executed:
anything that would need a shell to run (pipes, lists, redirections,
substitutions, variables) is refused with the construct named.

The one expansion is an unquoted ``~`` starting a word or an assignment's
value, as bash does it: backends are started with ``posix_spawnp``, which never
expands it, so a path left as ``~/models/a.gguf`` would not be found. It is
expanded with the HOME of the process that parses, which is the llamactl that
starts the instance (the paste is read as if typed in llamactl's own shell).
"""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec

from llamactl.backends.errors import CommandSyntaxError

TYPOGRAPHIC_QUOTES = "\u201c\u201d\u2018\u2019\u201e\u201a\u00ab\u00bb\u2032\u2033"

# A backslash followed only by blanks before the line break was meant as a
# continuation (editors and web pages strip or add trailing blanks).
CONTINUATION_WITH_BLANKS = re.compile(r"\\[ \t]+\n")

OPERATOR_NAMES = {
    ";": "a command separator ';'",
    "&&": "an '&&' list",
    "||": "an '||' list",
    "&": "a background '&'",
    "|": "a pipe '|'",
    "|&": "a pipe '|&'",
}


# Text made only of these characters has no quoting, expansion or operator:
# bash splits it at blanks and nothing else, so it needs no parser.
PLAIN_TEXT = re.compile(r"[A-Za-z0-9_./:=,@%+\- \t]*")
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
APPEND_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+=.*", re.DOTALL)
"""``NAME+=value`` before the command: bash appends to the shell's NAME, which llamactl does not have."""
TILDE_PREFIX = re.compile(r"~(/|$)")
# Words bash reads as syntax in command position: such text needs the parser.
RESERVED_WORDS = frozenset(
    [
        "if",
        "then",
        "elif",
        "else",
        "fi",
        "case",
        "esac",
        "for",
        "select",
        "while",
        "until",
        "do",
        "done",
        "function",
        "time",
        "in",
        "coproc",
    ]
)


class ShellCommand(msgspec.Struct, frozen=True):
    """A simple command: ``NAME=value ... word word ...``."""

    environment: dict[str, str]
    words: list[str]


def split_shell_command(text: str) -> ShellCommand:
    source = _normalise(text)
    if not source:
        raise CommandSyntaxError("the command is empty", field="command")
    for index, char in enumerate(source):
        if char in TYPOGRAPHIC_QUOTES:
            raise CommandSyntaxError(
                f"typographic quote {char!r} at position {index}: the command was probably copied "
                "from a word processor or chat app; use plain ' or \" quotes",
                field="command",
            )
    joined = source.replace("\\\n", " ")
    if PLAIN_TEXT.fullmatch(joined):
        plain = _split_plain(joined)
        if not plain.words or plain.words[0] not in RESERVED_WORDS:
            return plain
    # bashlex builds its parser tables when imported (~0.2 s), so only commands
    # that need it pay for it.
    import bashlex
    import bashlex.errors

    try:
        trees = bashlex.parse(source)
    except bashlex.errors.ParsingError as error:
        raise CommandSyntaxError(_describe_parse_error(error), field="command") from None
    except NotImplementedError as error:
        raise CommandSyntaxError(f"unsupported shell syntax: {error}", field="command") from None
    if len(trees) != 1:
        raise CommandSyntaxError(
            "the text holds several commands on separate lines; paste one command "
            "(end a line with '\\' to continue it)",
            field="command",
        )
    return _simple_command(trees[0], source)


def _split_plain(source: str) -> ShellCommand:
    environment: dict[str, str] = {}
    words: list[str] = []
    for word in source.split():
        assignment = ASSIGNMENT.fullmatch(word)
        if not words:
            _refuse_append(word)
        if assignment and not words:
            environment[assignment.group(1)] = assignment.group(2)
        else:
            words.append(word)
    return ShellCommand(environment=environment, words=words)


def _refuse_append(word: str) -> None:
    append = APPEND_ASSIGNMENT.fullmatch(word)
    if append is not None:
        raise CommandSyntaxError(
            f"'{append.group(1)}+=' appends to a shell variable; write {append.group(1)}=VALUE",
            field=append.group(1),
        )


def _normalise(text: str) -> str:
    source = text.replace("\r\n", "\n").replace("\r", "\n")
    source = CONTINUATION_WITH_BLANKS.sub("\\\n", source).strip()
    # A continuation with nothing after it ends the command.
    return source.removesuffix("\\").rstrip()


def _describe_parse_error(error: Exception) -> str:
    message = str(error.message) if hasattr(error, "message") else str(error)
    quote = re.search(r"matching ['\"](.)['\"]", message)
    if quote:
        return f"unterminated {quote.group(1)} quote: a quoted value is never closed"
    return f"not a valid shell command: {message}"


def _simple_command(tree: Any, source: str) -> ShellCommand:
    if tree.kind == "pipeline":
        raise CommandSyntaxError("the command contains a pipe '|': paste only the server command", field="|")
    if tree.kind == "list":
        operator = next(part.op for part in tree.parts if part.kind == "operator")
        construct = OPERATOR_NAMES.get(operator, repr(operator))
        raise CommandSyntaxError(
            f"the command contains {construct}: paste only the server command",
            field=operator,
        )
    if tree.kind != "command":
        raise CommandSyntaxError(
            "the command is a compound shell construct (a subshell, group or if/for/while block), "
            "not a plain command",
            field=tree.kind,
        )
    environment: dict[str, str] = {}
    words: list[str] = []
    for part in tree.parts:
        if part.kind == "redirect":
            raise CommandSyntaxError(
                f"the command contains a redirection '{part.type}': llamactl captures the server's "
                "output in its own log",
                field=part.type,
            )
        _refuse_expansions(part)
        # bashlex's own quote removal mangles mixed quoting (--k='{"a": 1}'),
        # so the word is unquoted from its source text.
        word = unquote(source[part.pos[0] : part.pos[1]])
        if part.kind == "assignment" and not words:
            _refuse_append(word)
            name, _, value = word.partition("=")
            # bashlex marks no tilde in an assignment; bash expands an unquoted one after the '='.
            raw_value = source[part.pos[0] : part.pos[1]].partition("=")[2]
            environment[name] = os.path.expanduser(value) if TILDE_PREFIX.match(raw_value) else value
        elif any(child.kind == "tilde" for child in getattr(part, "parts", [])):
            words.append(os.path.expanduser(word))
        else:
            words.append(word)
    return ShellCommand(environment=environment, words=words)


def unquote(raw: str) -> str:
    """Bash quote removal for one word: '...' literal, "..." with \\ escaping $ ` " \\, bare \\x."""
    out: list[str] = []
    index = 0
    quote: str | None = None
    while index < len(raw):
        char = raw[index]
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
        elif char == "\\" and index + 1 < len(raw):
            following = raw[index + 1]
            index += 1
            if following == "\n":
                pass  # a line continuation inside a word joins the two halves
            elif quote is None and following.isalnum():
                raise CommandSyntaxError(
                    f"backslash before {following!r} in {raw!r}: the shell drops it, so a Windows "
                    "path breaks; quote the value or write it with / separators",
                    field="\\",
                )
            elif quote == '"' and following not in '$`"\\':
                out.append(char + following)
            else:
                out.append(following)
        elif char in "'\"" and quote is None:
            quote = char
        elif char == '"' and quote == '"':
            quote = None
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _refuse_expansions(node: Any) -> None:
    for child in getattr(node, "parts", []):
        if child.kind == "commandsubstitution":
            form = "backticks `...`" if node.word.lstrip().startswith("`") else "$(...)"
            raise CommandSyntaxError(
                f"command substitution {form} in {node.word!r}: llamactl never runs a shell; "
                "write the value itself",
                field="command substitution",
            )
        if child.kind == "processsubstitution":
            raise CommandSyntaxError(
                f"process substitution in {node.word!r}: llamactl never runs a shell",
                field="process substitution",
            )
        if child.kind == "parameter":
            raise CommandSyntaxError(
                f"variable expansion ${child.value} in {node.word!r}: llamactl never runs a shell, "
                "so write the value itself (or set it in the instance's environment)",
                field="$" + child.value,
            )
        _refuse_expansions(child)
