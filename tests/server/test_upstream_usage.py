"""Reading token usage from answers, and keeping a stream's usage event from a client that did not ask."""

from llamactl.server.upstream import Usage, usage_of, without_usage_events

CONTENT = b'data: {"choices":[{"delta":{"content":"hi"}}]}'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}'
DONE = b"data: [DONE]"


def test_the_usage_of_a_whole_answer_is_read_and_nothing_else_is_decoded() -> None:
    answer = b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
    assert usage_of(answer) == Usage(prompt_tokens=3, completion_tokens=4)
    assert usage_of(b'{"choices":[]}') is None
    assert usage_of(b'{"usage": not json') is None


def test_only_usage_only_events_are_taken_out_of_a_stream_chunk() -> None:
    chunk = b"\n\n".join([CONTENT, USAGE, DONE, b""])
    assert without_usage_events(chunk) == b"\n\n".join([CONTENT, DONE, b""])
    # An event with choices keeps its usage (some backends send usage on every event).
    both = b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}\n\n'
    assert without_usage_events(both) == both
    # Text that only mentions "usage" inside content, and an event cut off mid-way, pass as they are.
    mention = b'data: {"choices":[{"delta":{"content":"\\"usage\\""}}]}\n\n'
    assert without_usage_events(mention) == mention
    cut = b'data: {"choices":[],"usage":{"prompt_'
    assert without_usage_events(cut) == cut
