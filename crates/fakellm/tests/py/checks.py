"""Checks that drive fakellm with the official, unmodified `openai` and `anthropic` SDKs.

Run by tests/sdk.rs as `python3 checks.py NAME` with FAKE_URL (http://127.0.0.1:PORT) and
FAKE_KEY (the key fakellm was started with, via --require-key) in the environment;
`python3 checks.py --list` prints the check names. A check passes by returning; any
exception fails it.
"""

import base64
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request

import anthropic
import openai

URL = os.environ["FAKE_URL"]
KEY = os.environ["FAKE_KEY"]


def oai(key=KEY):
    return openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0)


def ant(key=KEY):
    return anthropic.Anthropic(base_url=URL, api_key=key, max_retries=0)


def user(text):
    return [{"role": "user", "content": text}]


def raw(method, path, body=None, headers=None):
    """One HTTP request with the standard library; returns (status, headers, body text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("authorization", "Bearer " + KEY)
    if data is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def sse_data(text):
    """The JSON payloads of `data:` lines (except [DONE]) of an SSE body, with event names."""
    out, event = [], None
    for line in text.split("\n"):
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            payload = line[len("data: "):]
            out.append((event, payload if payload == "[DONE]" else json.loads(payload)))
            event = None
    return out


def expect_raise(cls, fn):
    try:
        fn()
    except cls as e:
        return e
    raise AssertionError(f"expected {cls.__name__}, nothing was raised")


def fake_log():
    status, _, body = raw("GET", "/_fake/requests")
    assert status == 200, status
    return json.loads(body)


# ---- OpenAI chat completions ---------------------------------------------------------------


def check_chat_basic():
    r = oai().chat.completions.create(
        model="fake-gpt",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there world"}],
    )
    assert r.choices[0].message.content == "echo: hello there world", r
    assert r.choices[0].finish_reason == "stop"
    # (2 + 3) + (3 + 3) prompt; "echo: hello there world" is 4 words.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 4, 15), r.usage
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.model == "fake-gpt"


def check_chat_text_parts():
    r = oai().chat.completions.create(
        model="fake-gpt",
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]}],
    )
    assert r.choices[0].message.content == "echo: one two three"
    assert r.usage.prompt_tokens == 3 + 3


def check_chat_n_and_max_tokens():
    c = oai()
    r = c.chat.completions.create(model="fake-gpt", messages=user("a b c d e f"), n=3, max_tokens=2)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert all(ch.message.content == "echo: a" and ch.finish_reason == "length" for ch in r.choices), r
    assert r.usage.completion_tokens == 6
    r = c.chat.completions.create(model="fake-gpt", messages=user("a b c d e f"), max_completion_tokens=3)
    assert r.choices[0].message.content == "echo: a b"
    assert r.usage.completion_tokens == 3


def check_chat_stream_without_usage():
    chunks = list(oai().chat.completions.create(model="fake-gpt", messages=user("a b c"), stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: a b c", text
    assert all(ch.usage is None for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # On the wire: no usage field at all, one word per chunk, then [DONE].
    status, headers, body = raw("POST", "/v1/chat/completions", {"model": "m", "messages": user("a b c"), "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_data(body)
    assert events[-1] == (None, "[DONE]")
    assert all("usage" not in e for _, e in events[:-1])
    deltas = [e["choices"][0]["delta"].get("content") for _, e in events[1:-2]]
    assert deltas == ["echo:", " a", " b", " c"], deltas


def check_chat_stream_include_usage():
    chunks = list(
        oai().chat.completions.create(
            model="fake-gpt", messages=user("a b c"), stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 4 and last.usage.prompt_tokens == 6, last
    assert all(ch.usage is None for ch in chunks[:-1])
    _, _, body = raw(
        "POST",
        "/v1/chat/completions",
        {"model": "m", "messages": user("a b c"), "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_data(body)
    assert events[-1] == (None, "[DONE]")
    assert events[-2][1]["choices"] == [] and events[-2][1]["usage"]["total_tokens"] == 10
    assert all(e["usage"] is None for _, e in events[:-2])


def check_chat_stream_n():
    chunks = list(oai().chat.completions.create(model="fake-gpt", messages=user("x y"), stream=True, n=2))
    for i in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert text == "echo: x y", (i, text)


def check_chat_directives_usage_cached_chunks():
    c = oai()
    r = c.chat.completions.create(model="fake-gpt", messages=user("hi [[fake:usage=1000,50]] [[fake:cached=400]]"))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 50)
    assert r.usage.prompt_tokens_details.cached_tokens == 400
    assert r.choices[0].message.content == "echo: hi"
    chunks = list(
        c.chat.completions.create(
            model="fake-gpt",
            messages=user("go [[fake:chunks=7]]"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    words = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(words) == 7, words
    assert chunks[-1].usage.completion_tokens == 7
    chunks = list(
        c.chat.completions.create(
            model="fake-gpt",
            messages=user("go [[fake:usage=12,34]]"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 34)


def check_chat_delay():
    c = oai()
    t = time.monotonic()
    c.chat.completions.create(model="fake-gpt", messages=user("x [[fake:delay_ms=150]]"))
    assert time.monotonic() - t >= 0.15
    t = time.monotonic()
    stream = c.chat.completions.create(model="fake-gpt", messages=user("x [[fake:delay_ms=40]] [[fake:chunks=4]]"), stream=True)
    n = sum(1 for _ in stream)
    # role chunk, 4 words, finish: 5 gaps of 40 ms.
    assert n == 6 and time.monotonic() - t >= 0.2, (n, time.monotonic() - t)


def check_openai_errors():
    c = oai()
    cases = [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ]
    for status, cls in cases:
        for endpoint in ("chat", "responses", "embeddings"):
            text = f"boom [[fake:error={status}]]"
            if endpoint == "chat":
                call = lambda: c.chat.completions.create(model="fake-gpt", messages=user(text))
            elif endpoint == "responses":
                call = lambda: c.responses.create(model="fake-gpt", input=text)
            else:
                call = lambda: c.embeddings.create(model="fake-embedding", input=text)
            e = expect_raise(cls, call)
            assert e.status_code == status, (endpoint, status, e.status_code)
            assert set(e.body) == {"message", "type", "param", "code"}, e.body
            assert e.request_id and e.request_id.startswith("req_")
            if status == 429:
                assert e.response.headers["retry-after"] == "1"
                assert e.code == "rate_limit_exceeded"
    # A streaming request gets the same errors before the stream starts.
    e = expect_raise(
        openai.RateLimitError,
        lambda: c.chat.completions.create(model="fake-gpt", messages=user("[[fake:error=429]]"), stream=True),
    )
    assert e.status_code == 429
    # A misspelt directive is a 400 that names it.
    e = expect_raise(
        openai.BadRequestError, lambda: c.chat.completions.create(model="fake-gpt", messages=user("[[fake:eror=500]]"))
    )
    assert "eror" in e.message


def check_openai_stream_error():
    got = []
    def run():
        for ch in oai().chat.completions.create(model="fake-gpt", messages=user("a b c d [[fake:stream_error]]"), stream=True):
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
    e = expect_raise(openai.APIError, run)
    assert not isinstance(e, (openai.APIStatusError, openai.APIConnectionError)), type(e)
    assert "stream_error" in e.message
    assert got == ["echo:", " a"], got


def check_openai_cut():
    got = []
    def run():
        for ch in oai().chat.completions.create(model="fake-gpt", messages=user("a b c d [[fake:cut]]"), stream=True):
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
    expect_raise(openai.APIConnectionError, run)
    assert got == ["echo:", " a"], got
    expect_raise(
        openai.APIConnectionError,
        lambda: oai().chat.completions.create(model="fake-gpt", messages=user("x [[fake:cut]]")),
    )
    def run_responses():
        for _ in oai().responses.create(model="fake-gpt", input="a b c [[fake:cut]]", stream=True):
            pass
    expect_raise(openai.APIConnectionError, run_responses)


# ---- OpenAI responses ----------------------------------------------------------------------


def check_responses_basic():
    r = oai().responses.create(model="fake-gpt", input="hi there", instructions="be brief")
    assert r.output_text == "echo: hi there" and r.status == "completed"
    # instructions (2 + 3) + input (2 + 3)
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (10, 3, 13), u
    assert u.input_tokens_details.cached_tokens == 0
    r = oai().responses.create(
        model="fake-gpt",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "first turn"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"role": "user", "content": "second turn now [[fake:cached=3]]"},
        ],
    )
    assert r.output_text == "echo: second turn now"
    assert r.usage.input_tokens == (2 + 3) + (1 + 3) + (4 + 3)
    assert r.usage.input_tokens_details.cached_tokens == 3
    r = oai().responses.create(model="fake-gpt", input="a b c d e", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "echo: a" and r.usage.output_tokens == 2


def check_responses_stream():
    events = list(oai().responses.create(model="fake-gpt", input="one two", stream=True))
    names = [e.type for e in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ], names
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: one two"
    assert all(e.response.usage is None for e in events[:2])
    assert events[-1].response.usage.output_tokens == 3
    # The SDK's stream helper accumulates the same events into a final response.
    with oai().responses.stream(model="fake-gpt", input="one two") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "echo: one two" and final.usage.input_tokens == 5
    # On the wire the event name equals data.type.
    _, _, body = raw("POST", "/v1/responses", {"model": "m", "input": "x", "stream": True})
    for event, data in sse_data(body):
        assert event == data["type"], (event, data)


def check_responses_stream_error_and_incomplete():
    events = list(oai().responses.create(model="fake-gpt", input="a b c [[fake:stream_error]]", stream=True))
    assert events[-1].type == "error" and events[-1].code == "server_error", events[-1]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    events = list(oai().responses.create(model="fake-gpt", input="a b c", stream=True, max_output_tokens=2))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 2


# ---- OpenAI embeddings and models ----------------------------------------------------------


def check_embeddings():
    c = oai()
    r = c.embeddings.create(model="fake-embedding", input=["alpha beta", "gamma"])
    assert [d.index for d in r.data] == [0, 1]
    v = r.data[0].embedding
    assert len(v) == 16 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)
    # The SDK asked for base64 (and decoded it); float lists come back when asked for.
    sent = json.loads(fake_log()[-1]["body"])
    assert sent["encoding_format"] == "base64", sent
    f = c.embeddings.create(model="fake-embedding", input=["alpha beta", "gamma"], encoding_format="float")
    assert f.data[0].embedding == v and f.data[1].embedding == r.data[1].embedding
    # Raw base64 is little-endian float32.
    _, _, body = raw("POST", "/v1/embeddings", {"model": "m", "input": "gamma", "encoding_format": "base64"})
    packed = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    assert list(struct.unpack("<16f", packed)) == r.data[1].embedding
    d = c.embeddings.create(model="fake-embedding", input="x", dimensions=5)
    assert len(d.data[0].embedding) == 5
    t = c.embeddings.create(model="fake-embedding", input=[[1, 2, 3], [4, 5]])
    assert t.usage.prompt_tokens == 5 and len(t.data) == 2
    u = c.embeddings.create(model="fake-embedding", input="x [[fake:usage=77,0]]")
    assert u.usage.prompt_tokens == 77


def check_models():
    c = oai()
    ids = [m.id for m in c.models.list()]
    assert "fake-gpt" in ids, ids
    assert c.models.retrieve("fake-gpt").owned_by == "fakellm"
    expect_raise(openai.NotFoundError, lambda: c.models.retrieve("nope"))
    ids = [m.id for m in ant().models.list()]
    assert "fake-claude" in ids, ids


# ---- Anthropic -----------------------------------------------------------------------------


def check_anthropic_basic():
    m = ant().messages.create(
        model="fake-claude", max_tokens=50, system="be brief", messages=user("hello there world")
    )
    assert m.content[0].text == "echo: hello there world" and m.stop_reason == "end_turn"
    u = m.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (11, 4, 0, 0), u
    assert m.model == "fake-claude" and m.id.startswith("msg_")
    m = ant().messages.create(model="fake-claude", max_tokens=2, messages=user("a b c"))
    assert m.stop_reason == "max_tokens" and m.content[0].text == "echo: a" and m.usage.output_tokens == 2


def check_anthropic_cached_and_usage():
    m = ant().messages.create(
        model="fake-claude", max_tokens=50, messages=user("x [[fake:usage=500,20]] [[fake:cached=200]]")
    )
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (300, 200, 20), m.usage


def check_anthropic_stream():
    c = ant()
    with c.messages.stream(model="fake-claude", max_tokens=50, messages=user("one two three")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: one two three"
    assert final.usage.input_tokens == 6 and final.usage.output_tokens == 4, final.usage
    assert final.stop_reason == "end_turn"
    events = list(c.messages.create(model="fake-claude", max_tokens=50, messages=user("a b [[fake:cached=2]]"), stream=True))
    names = [e.type for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ], names
    assert events[0].message.usage.cache_read_input_tokens == 2
    assert events[-2].usage.output_tokens == 3 and events[-2].delta.stop_reason == "end_turn"
    # The SDK skips pings; they are on the wire.
    _, _, body = raw(
        "POST", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": user("x"), "stream": True}
    )
    wire = sse_data(body)
    assert [e for e, _ in wire][:3] == ["message_start", "content_block_start", "ping"]
    assert all(e == d["type"] for e, d in wire)
    with c.messages.stream(model="fake-claude", max_tokens=2, messages=user("a b c d")) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 2


def check_anthropic_errors():
    c = ant()
    cases = [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (402, anthropic.PaymentRequiredError, "billing_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (409, anthropic.ConflictError, "conflict_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ]
    for status, cls, kind in cases:
        e = expect_raise(
            cls,
            lambda: c.messages.create(model="fake-claude", max_tokens=5, messages=user(f"x [[fake:error={status}]]")),
        )
        assert e.status_code == status and e.type == kind, (status, e.status_code, e.type)
        assert e.body["type"] == "error" and e.body["request_id"] == e.request_id, e.body
        assert e.request_id.startswith("req_")
        if status in (429, 529):
            assert e.response.headers["retry-after"] == "1"
    e = expect_raise(
        anthropic.OverloadedError,
        lambda: c.messages.create(model="fake-claude", max_tokens=5, messages=user("[[fake:error=529]]"), stream=True),
    )
    e = expect_raise(
        anthropic.RateLimitError,
        lambda: c.messages.count_tokens(model="fake-claude", messages=user("[[fake:error=429]]")),
    )
    # A missing max_tokens is refused like the real API (sent raw: the SDK checks it first).
    status, _, body = raw("POST", "/v1/messages", {"model": "m", "messages": user("x")})
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"


def check_anthropic_stream_error():
    got = []
    def run():
        with ant().messages.stream(model="fake-claude", max_tokens=50, messages=user("a b c [[fake:stream_error]]")) as s:
            for t in s.text_stream:
                got.append(t)
    e = expect_raise(anthropic.APIStatusError, run)
    assert e.status_code == 200, e.status_code
    assert e.body["error"]["type"] == "overloaded_error", e.body
    assert got == ["echo:", " a"], got


def check_anthropic_cut():
    got = []
    def run():
        with ant().messages.stream(model="fake-claude", max_tokens=50, messages=user("a b c [[fake:cut]]")) as s:
            for t in s.text_stream:
                got.append(t)
    try:
        run()
    except anthropic.APIStatusError as e:
        raise AssertionError(f"a cut must not look like a status error: {e!r}")
    except Exception as e:  # the SDK lets httpx's RemoteProtocolError through unwrapped
        assert "RemoteProtocolError" in type(e).__name__ or isinstance(e, anthropic.APIConnectionError), repr(e)
    else:
        raise AssertionError("a cut stream raised nothing")
    assert got == ["echo:", " a"], got
    expect_raise(
        anthropic.APIConnectionError,
        lambda: ant().messages.create(model="fake-claude", max_tokens=5, messages=user("x [[fake:cut]]")),
    )


def check_anthropic_count_tokens():
    r = ant().messages.count_tokens(model="fake-claude", system="sys tem", messages=user("one two three"))
    assert r.input_tokens == (2 + 3) + (3 + 3), r


# ---- keys, request log, control endpoints --------------------------------------------------


def check_require_key():
    e = expect_raise(openai.AuthenticationError, lambda: oai("sk-wrong").chat.completions.create(model="fake-gpt", messages=user("x")))
    assert e.code == "invalid_api_key"
    e = expect_raise(anthropic.AuthenticationError, lambda: ant("sk-wrong").messages.create(model="fake-claude", max_tokens=5, messages=user("x")))
    assert e.type == "authentication_error"
    # The x-api-key style (anthropic SDK <= 1.x) with the right key passes, a wrong one does not.
    for key, want in ((KEY, 200), ("sk-wrong", 401)):
        req = urllib.request.Request(
            URL + "/v1/messages/count_tokens",
            data=json.dumps({"model": "m", "messages": user("x")}).encode(),
            headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        )
        try:
            status = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == want, (key, status)


def check_request_log():
    status, _, body = raw("DELETE", "/_fake/requests")
    assert status == 200
    assert fake_log() == []
    oai().chat.completions.create(model="fake-gpt", messages=user("logged one"), extra_headers={"X-Custom-Thing": "Yes"})
    ant().messages.create(model="fake-claude", max_tokens=5, messages=user("logged two"))
    status, _, _ = raw("GET", "/_fake/health")
    assert status == 200
    log = fake_log()
    assert [(e["method"], e["path"]) for e in log] == [("POST", "/v1/chat/completions"), ("POST", "/v1/messages")], log
    first, second = log
    assert first["headers"]["authorization"] == "Bearer " + KEY
    assert first["headers"]["x-custom-thing"] == "Yes"
    assert all(k == k.lower() for e in log for k in e["headers"])
    assert json.loads(first["body"])["messages"][0]["content"] == "logged one"
    assert second["headers"]["anthropic-version"], second["headers"]
    assert second["seq"] > first["seq"]
    raw("DELETE", "/_fake/requests")
    assert fake_log() == []


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(sorted(CHECKS)))
    else:
        CHECKS[sys.argv[1]]()
        print("ok", sys.argv[1])
