"""Pasted text becomes environment + words exactly as bash would split it, and nothing runs."""

import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llamactl.backends.errors import CommandSyntaxError
from llamactl.backends.shell_command import APPEND_ASSIGNMENT, RESERVED_WORDS, split_shell_command


@pytest.mark.parametrize(
    ("text", "environment", "words"),
    [
        ("llama-server -m a.gguf", {}, ["llama-server", "-m", "a.gguf"]),
        (
            "CUDA_VISIBLE_DEVICES=0,1 HF_HOME=/x llama-server -m a",
            {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/x"},
            ["llama-server", "-m", "a"],
        ),
        ('A="x y" b', {"A": "x y"}, ["b"]),
        ("b -m 'my model.gguf'", {}, ["b", "-m", "my model.gguf"]),
        ('b -m "my model.gguf"', {}, ["b", "-m", "my model.gguf"]),
        (r"b -m my\ model.gguf", {}, ["b", "-m", "my model.gguf"]),
        (r'b --x "say \"hi\""', {}, ["b", "--x", 'say "hi"']),
        ("b --k='{\"a\": 1}'", {}, ["b", '--k={"a": 1}']),
        ('b "x"\'y\'z a"b c"d', {}, ["b", "xyz", "ab cd"]),
        ('b "a\\\\b" "a\\b" \'a\\b\'', {}, ["b", "a\\b", "a\\b", "a\\b"]),
        ("b \\\n  -c 1 \\\n  -n 2", {}, ["b", "-c", "1", "-n", "2"]),
        ("b \\\r\n  -c 1 \\\r\n  -n 2\r\n", {}, ["b", "-c", "1", "-n", "2"]),
        # A continuation backslash with trailing blanks, and one ending the text.
        ("b \\  \n  -c 1 \\", {}, ["b", "-c", "1"]),
        ("b --seed -1", {}, ["b", "--seed", "-1"]),
        ("b 'single $HOME'", {}, ["b", "single $HOME"]),
        ("b *.gguf", {}, ["b", "*.gguf"]),
        ("b X=1", {}, ["b", "X=1"]),
        ("   b   # a comment", {}, ["b"]),
    ],
)
def test_splits_like_bash(text: str, environment: dict[str, str], words: list[str]) -> None:
    command = split_shell_command(text)
    assert (command.environment, command.words) == (environment, words)


def test_tilde_is_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ada")
    assert split_shell_command("b -m ~/models/a.gguf").words == ["b", "-m", "/home/ada/models/a.gguf"]
    assert split_shell_command("~/bin/b '~/x' --m=~/y").words == ["/home/ada/bin/b", "~/x", "--m=~/y"]


def test_tilde_starting_an_assignment_value_is_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ada")
    command = split_shell_command("HF_HOME=~/hf H=~ Q='~/q' D=\"~/d\" b")
    assert command.environment == {
        "HF_HOME": "/home/ada/hf",
        "H": "/home/ada",
        "Q": "~/q",
        "D": "~/d",
    }


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "empty"),
        (" \n \\\n ", "empty"),
        ('b -m "a.gguf', 'unterminated " quote'),
        ("b -m 'a.gguf", "unterminated ' quote"),
        ("b -m \u201ca.gguf\u201d", "typographic quote"),
        ("b -m \u2018a\u2019", "typographic quote"),
        ("b | tee log", "pipe '|'"),
        ("b; c", "separator ';'"),
        ("b && c", "'&&'"),
        ("b || c", "'||'"),
        ("b &", "background '&'"),
        ("b > log", "redirection '>'"),
        ("b 2>&1", "redirection '>&'"),
        ("b < in", "redirection '<'"),
        ("b -m $(ls *.gguf)", "command substitution $(...)"),
        ("b -m `ls`", "command substitution backticks"),
        ("b -m <(cat x)", "process substitution"),
        ("b -m $MODEL", "variable expansion $MODEL"),
        ("b -m ${MODEL:-x}", "variable expansion"),
        ('b -m "$HOME/a"', "variable expansion $HOME"),
        ("(b -m a)", "subshell"),
        ("if true; then b; fi", "if/for/while"),
        ("b -m a\nc -m d", "several commands"),
        ("then", "unexpected token 'then'"),
        ("A+=x b -m a", "'A+=' appends"),
        ("A+= b -m 'a'", "'A+=' appends"),
    ],
)
def test_refuses_what_needs_a_shell_and_names_it(text: str, names: str) -> None:
    with pytest.raises(CommandSyntaxError, match=r"(?s).*" + __import__("re").escape(names)):
        split_shell_command(text)


PLAIN_WORD = st.text(alphabet=string.ascii_letters + string.digits + "_./:=,@%+-", min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(st.lists(PLAIN_WORD, min_size=1, max_size=8), st.sampled_from([" ", "  ", " \\\n  ", "\t"]))
def test_plain_commands_split_as_bashlex_splits_them(words: list[str], blank: str) -> None:
    # Plain text skips the parser (see PLAIN_TEXT); a quote at the end sends the same words through it.
    assume(words[0] not in RESERVED_WORDS)  # syntax, not a command: always parsed (see the refusals)
    assume(not any(APPEND_ASSIGNMENT.fullmatch(word) for word in words))  # refused (see the refusals)
    text = blank.join(words)
    plain = split_shell_command(text)
    parsed = split_shell_command(text + " ''")
    assert (plain.environment, [*plain.words, ""]) == (parsed.environment, parsed.words)
