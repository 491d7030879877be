"""The real ds4-server binary on the bundled demo model, through the official
`openai` and `anthropic` Python SDKs (and raw HTTP where the SDKs hide the wire).

The demo model has random weights, so its text is noise; what is checked is what
must hold for any model: shapes, event order, usage arithmetic, greedy
determinism (streamed text = whole text = the text after a live-prefix reuse),
stop sequences cutting the greedy text where the stop first occurs, thinking
on/off, errors, auth, live-prefix reuse in every API's usage and in /metrics,
and the --trace file.

Driven by crates/ds4-server/tests/e2e_demo.rs, which starts the server.
Environment: DS4_SERVER_URL, DS4_API_KEY, DS4_CTX (the server's --ctx),
DS4_TRACE_FILE (the server's --trace file, optional).

The file name does not start with `test_`, so the scripted-backend run of
tests/python (python_clients.rs) does not pick it up.
"""

import json
import os
import sys
import unittest
import urllib.error
import urllib.request

URL = os.environ.get("DS4_SERVER_URL")
KEY = os.environ.get("DS4_API_KEY")
CTX = int(os.environ.get("DS4_CTX", "0"))
TRACE = os.environ.get("DS4_TRACE_FILE")

try:
    import anthropic
    import openai
except ImportError as e:  # pragma: no cover - reported as a skip
    anthropic = openai = None
    SKIP = f"openai/anthropic not installed ({e})"
else:
    SKIP = None if URL and KEY and CTX else "DS4_SERVER_URL, DS4_API_KEY and DS4_CTX are required"
if SKIP:
    print(f"SKIP e2e_demo_model: {SKIP}", file=sys.stderr)

# Thinking off (model alias) and greedy: outputs are reproducible.
GREEDY = dict(model="deepseek-chat", temperature=0)
# The anthropic SDK has no `temperature` argument any more: send it as a body field.
A_GREEDY = dict(model="deepseek-chat", extra_body={"temperature": 0})


def http(method, path, body=None, key=KEY, raw=None, headers=None):
    """(status, parsed JSON or text) without any SDK in between."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def metrics():
    status, text = http("GET", "/metrics")
    assert status == 200, text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def user(text):
    return [{"role": "user", "content": text}]


def stop_for(text):
    """A two-character stop sequence from the middle of `text` and the text before
    its first occurrence."""
    for i in range(len(text) // 2, len(text) - 1):
        stop = text[i : i + 2]
        if stop.strip():
            return stop, text[: text.find(stop)]
    raise AssertionError(f"no usable stop sequence in {text!r}")


def reset_live_session(client):
    """An unrelated short request, so the next one starts (almost) cold."""
    client.chat.completions.create(messages=user("reset 7f3a"), max_tokens=1, **GREEDY)


@unittest.skipIf(SKIP is not None, SKIP or "")
class OpenAIChat(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=300)

    def test_models_list(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["deepseek-v4-flash"])
        self.assertEqual(models.data[0].model_extra["context_length"], CTX)
        self.assertEqual(self.client.models.retrieve("deepseek-v4-flash").id, "deepseek-v4-flash")
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("no-such-model")

    def test_chat_non_streaming_and_usage(self):
        r = self.client.chat.completions.create(messages=user("Tell me a story"), max_tokens=8, **GREEDY)
        self.assertTrue(r.id.startswith("chatcmpl-"))
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, "deepseek-chat")
        choice = r.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertIsInstance(choice.message.content, str)
        self.assertIn(choice.finish_reason, ("stop", "length"))
        u = r.usage
        self.assertGreater(u.prompt_tokens, 5)
        self.assertTrue(1 <= u.completion_tokens <= 8, u)
        if choice.finish_reason == "length":
            self.assertEqual(u.completion_tokens, 8)
        self.assertEqual(u.total_tokens, u.prompt_tokens + u.completion_tokens)
        self.assertLessEqual(u.prompt_tokens_details.cached_tokens, u.prompt_tokens)
        # Thinking is off for deepseek-chat: no reasoning at all.
        self.assertFalse(choice.message.model_extra.get("reasoning_content"))

    def test_chat_streaming_equals_non_streaming(self):
        kw = dict(messages=user("Describe the sea"), max_tokens=10, **GREEDY)
        whole = self.client.chat.completions.create(**kw)
        chunks = list(self.client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(text, whole.choices[0].message.content)
        self.assertEqual(finishes, [whole.choices[0].finish_reason])
        # The usage chunk is last and has no choices.
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)
        self.assertEqual(chunks[-1].usage.prompt_tokens, whole.usage.prompt_tokens)
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))
        self.assertEqual(len({c.id for c in chunks}), 1)

    def test_thinking_on_and_off(self):
        on = self.client.chat.completions.create(
            model="deepseek-v4-flash", messages=user("Why is the sky blue?"), max_tokens=6, seed=11
        )
        # Six tokens of a random model do not close </think>, and a whole body
        # cut inside <think> returns that text as content (ds4's rule, spec 2.7).
        cut = on.choices[0].message.content
        self.assertTrue(cut, on)
        self.assertFalse(on.choices[0].message.model_extra.get("reasoning_content"))
        self.assertEqual(on.choices[0].finish_reason, "length")
        off = self.client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=user("Why is the sky blue?"),
            max_tokens=6,
            temperature=0,
            extra_body={"thinking": {"type": "disabled"}},
        )
        self.assertFalse(off.choices[0].message.model_extra.get("reasoning_content"))
        self.assertTrue(off.choices[0].message.content)
        # Streamed thinking arrives as reasoning_content deltas.
        stream = self.client.chat.completions.create(
            model="deepseek-v4-flash", messages=user("Why is the sky blue?"), max_tokens=6, seed=11, stream=True,
            reasoning_effort="high",
        )
        deltas = [c.choices[0].delta for c in stream if c.choices]
        streamed = "".join(d.model_extra.get("reasoning_content") or "" for d in deltas)
        self.assertEqual(streamed, cut, "same seed, same reasoning, streamed as reasoning")
        self.assertFalse("".join(d.content or "" for d in deltas))
        stream = self.client.chat.completions.create(
            model="deepseek-chat", messages=user("Why is the sky blue?"), max_tokens=6, stream=True, temperature=0
        )
        deltas = [c.choices[0].delta for c in stream if c.choices]
        self.assertFalse("".join(d.model_extra.get("reasoning_content") or "" for d in deltas))
        self.assertEqual("".join(d.content or "" for d in deltas), off.choices[0].message.content)

    def test_stop_sequences(self):
        kw = dict(messages=user("Count the stars"), max_tokens=16, **GREEDY)
        base = self.client.chat.completions.create(**kw).choices[0].message.content
        stop, before = stop_for(base)
        r = self.client.chat.completions.create(stop=[stop], **kw)
        self.assertEqual((r.choices[0].message.content, r.choices[0].finish_reason), (before, "stop"))
        chunks = list(self.client.chat.completions.create(stop=stop, stream=True, **kw))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, before)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")

    def test_live_prefix_reuse_in_usage_and_metrics(self):
        reset_live_session(self.client)
        first = self.client.chat.completions.create(messages=user("Name a colour"), max_tokens=8, **GREEDY)
        m0 = metrics()
        follow = user("Name a colour") + [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And another one"},
        ]
        second = self.client.chat.completions.create(messages=follow, max_tokens=8, **GREEDY)
        m1 = metrics()
        cached = second.usage.prompt_tokens_details.cached_tokens
        # The whole first turn (prompt + generated tokens) is still live.
        self.assertGreaterEqual(cached, first.usage.prompt_tokens + first.usage.completion_tokens - 1)
        self.assertLess(cached, second.usage.prompt_tokens)
        self.assertEqual(m1["ds4_live_prefix_hits_total"] - m0["ds4_live_prefix_hits_total"], 1)
        self.assertEqual(m1["ds4_cached_prompt_tokens_total"] - m0["ds4_cached_prompt_tokens_total"], cached)
        self.assertEqual(m1["ds4_prompt_tokens_total"] - m0["ds4_prompt_tokens_total"], second.usage.prompt_tokens)
        self.assertEqual(
            m1['ds4_requests_total{api="chat"}'] - m0['ds4_requests_total{api="chat"}'], 1
        )
        # Reuse is exact: the same request computed from (almost) nothing gives the same greedy text.
        reset_live_session(self.client)
        cold = self.client.chat.completions.create(messages=follow, max_tokens=8, **GREEDY)
        self.assertLess(cold.usage.prompt_tokens_details.cached_tokens, cached)
        self.assertEqual(cold.choices[0].message.content, second.choices[0].message.content)

    def test_completions(self):
        kw = dict(model="deepseek-chat", prompt="Once upon a time", max_tokens=8, temperature=0)
        r = self.client.completions.create(**kw)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.id.startswith("cmpl-"))
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertTrue(1 <= r.usage.completion_tokens <= 8)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        chunks = list(self.client.completions.create(stream=True, **kw))
        self.assertEqual("".join(c.choices[0].text for c in chunks if c.choices), r.choices[0].text)

    def test_errors(self):
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=URL + "/v1", api_key="wrong", max_retries=0).models.list()
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=URL + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
                messages=user("x"), max_tokens=1, **GREEDY
            )
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(messages=[{"role": "narrator", "content": "x"}], **GREEDY)
        self.assertIn("narrator", str(cm.exception))
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(messages=user("x"), reasoning_effort="ultra", **GREEDY)
        self.assertIn("ultra", str(cm.exception))
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(messages=user("word " * CTX), max_tokens=4, **GREEDY)
        body = cm.exception.body
        self.assertEqual(body["code"], "context_length_exceeded")
        self.assertEqual(body["n_ctx"], CTX)
        self.assertGreaterEqual(body["n_prompt_tokens"], CTX)
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="deepseek-chat", prompt="x", max_tokens="many")


@unittest.skipIf(SKIP is not None, SKIP or "")
class RawHttp(unittest.TestCase):
    def test_auth(self):
        self.assertEqual(http("GET", "/health", key=None), (200, {"status": "ok"}))
        for path in ("/v1/models", "/metrics"):
            status, body = http("GET", path, key=None)
            self.assertEqual(status, 401, body)
        status, body = http("POST", "/v1/chat/completions", {"messages": user("x")}, key=None)
        self.assertEqual(status, 401)
        self.assertIn("API key", body["error"]["message"])
        status, body = http("POST", "/v1/messages", {"max_tokens": 1, "messages": user("x")}, key="nope")
        self.assertEqual((status, body["type"], body["error"]["type"]), (401, "error", "authentication_error"))
        # x-api-key works as well as Authorization.
        status, _ = http("GET", "/v1/models", key=None, headers={"x-api-key": KEY})
        self.assertEqual(status, 200)

    def test_bad_requests_are_4xx_with_a_reason(self):
        cases = [
            ("/v1/chat/completions", b'{"messages": [', "JSON"),
            ("/v1/chat/completions", b'{"messages": "hello"}', "messages"),
            ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
            ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}', "function"),
            ("/v1/chat/completions", b'{"model": "deepseek-chat"}', "messages"),
            ("/v1/completions", b'{"model": "x"}', "prompt"),
            ("/v1/responses", b'{"model": "x"}', "input"),
            ("/v1/responses", b'{"input": "x", "previous_response_id": "resp_1"}', "previous_response_id"),
            ("/v1/messages", b'{"max_tokens": 4, "messages": [{"role": "user", "content": 5}]}', "content"),
            ("/v1/messages", b"not json", "JSON"),
        ]
        for path, raw, needle in cases:
            status, body = http("POST", path, raw=raw)
            self.assertTrue(400 <= status < 500, (path, raw, status, body))
            err = body["error"]
            self.assertIn(needle.lower(), err["message"].lower(), (path, raw, body))
            if path == "/v1/messages":
                self.assertEqual(body["type"], "error")
        status, body = http("POST", "/v1/nowhere", {"x": 1})
        self.assertEqual(status, 404)
        # The worker is still fine after all of that.
        status, body = http("POST", "/v1/chat/completions", {"messages": user("still alive?"), "max_tokens": 2, **GREEDY})
        self.assertEqual(status, 200, body)


@unittest.skipIf(SKIP is not None, SKIP or "")
class OpenAIResponses(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=300)

    def test_responses_and_stream_event_order(self):
        kw = dict(input="Write a haiku", max_output_tokens=8, **GREEDY)
        r = self.client.responses.create(**kw)
        self.assertEqual(r.object, "response")
        self.assertIn(r.status, ("completed", "incomplete"))
        self.assertEqual([o.type for o in r.output], ["message"])
        self.assertTrue(1 <= r.usage.output_tokens <= 8)
        self.assertEqual(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens)
        events = list(self.client.responses.create(stream=True, **kw))
        types = [e.type for e in events]
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))
        n_delta = types.count("response.output_text.delta")
        self.assertGreater(n_delta, 0)
        expected = (
            ["response.created", "response.output_item.added", "response.content_part.added"]
            + ["response.output_text.delta"] * n_delta
            + ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
            + ["response.completed" if r.status == "completed" else "response.incomplete"]
        )
        self.assertEqual(types, expected)
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(deltas, r.output_text)
        done = [e for e in events if e.type == "response.output_text.done"][0]
        self.assertEqual(done.text, r.output_text)
        self.assertEqual(events[-1].response.output_text, r.output_text)
        self.assertEqual(events[-1].response.usage.output_tokens, r.usage.output_tokens)

    def test_reasoning_events_and_cached_tokens(self):
        events = list(
            self.client.responses.create(
                model="deepseek-v4-flash",
                input="Think first",
                max_output_tokens=6,
                reasoning={"effort": "high", "summary": "auto"},
                stream=True,
            )
        )
        types = [e.type for e in events]
        self.assertEqual(types[0], "response.created")
        self.assertEqual(types[1], "response.output_item.added")
        self.assertEqual(events[1].item.type, "reasoning")
        self.assertIn("response.reasoning_summary_text.delta", types)
        self.assertLess(types.index("response.reasoning_summary_part.added"), types.index("response.reasoning_summary_text.delta"))
        self.assertEqual(types[-1], "response.incomplete")  # max_output_tokens inside <think>
        # A follow-up that replays the visible transcript reuses the live prefix.
        first = self.client.responses.create(input="Say a word", max_output_tokens=6, **{k: v for k, v in GREEDY.items()})
        second = self.client.responses.create(
            input=[
                {"role": "user", "content": "Say a word"},
                {"role": "assistant", "content": first.output_text},
                {"role": "user", "content": "Another"},
            ],
            max_output_tokens=6,
            **GREEDY,
        )
        self.assertGreaterEqual(second.usage.input_tokens_details.cached_tokens, first.usage.input_tokens)


@unittest.skipIf(SKIP is not None, SKIP or "")
class AnthropicMessages(unittest.TestCase):
    def setUp(self):
        self.client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, timeout=300)

    def test_message_and_stream_event_order(self):
        kw = dict(max_tokens=8, messages=user("Describe a cat"), **A_GREEDY)
        m = self.client.messages.create(**kw)
        self.assertEqual((m.type, m.role), ("message", "assistant"))
        self.assertEqual([b.type for b in m.content], ["text"])
        self.assertIn(m.stop_reason, ("end_turn", "max_tokens"))
        self.assertTrue(1 <= m.usage.output_tokens <= 8)
        # input_tokens = prompt - read - write, about 0 (ds4's rule, spec 2.7).
        u = m.usage
        self.assertEqual(u.input_tokens, 0)
        self.assertGreater(u.cache_read_input_tokens + u.cache_creation_input_tokens, 5)
        events = list(self.client.messages.create(stream=True, **kw))
        types = [e.type for e in events]
        n = types.count("content_block_delta")
        self.assertEqual(
            types,
            ["message_start", "content_block_start"] + ["content_block_delta"] * n
            + ["content_block_stop", "message_delta", "message_stop"],
        )
        self.assertEqual(events[1].content_block.type, "text")
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
        self.assertEqual(text, m.content[0].text)
        self.assertEqual(events[-2].delta.stop_reason, m.stop_reason)
        self.assertEqual(events[-2].usage.output_tokens, m.usage.output_tokens)

    def test_thinking_blocks(self):
        with self.client.messages.stream(
            model="deepseek-v4-flash",
            max_tokens=6,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=user("Ponder this"),
        ) as stream:
            events = list(stream)
            final = stream.get_final_message()
        self.assertEqual(final.content[0].type, "thinking")
        self.assertTrue(final.content[0].thinking)
        self.assertEqual(final.stop_reason, "max_tokens")
        deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
        self.assertIn("thinking_delta", deltas)
        off = self.client.messages.create(
            model="deepseek-v4-flash",
            max_tokens=6,
            thinking={"type": "disabled"},
            messages=user("Ponder this"),
            extra_body={"temperature": 0},
        )
        self.assertEqual([b.type for b in off.content], ["text"])

    def test_stop_sequences_and_cache_read(self):
        kw = dict(max_tokens=16, messages=user("List some fruit"), **A_GREEDY)
        base = self.client.messages.create(**kw)
        stop, before = stop_for(base.content[0].text)
        m = self.client.messages.create(stop_sequences=[stop], **kw)
        # A stop-sequence hit reads end_turn with stop_sequence null (ds4's rule, spec 2.7).
        self.assertEqual((m.stop_reason, m.stop_sequence), ("end_turn", None))
        self.assertEqual(m.content[0].text, before)
        events = list(self.client.messages.create(stop_sequences=[stop], stream=True, **kw))
        self.assertEqual("".join(e.delta.text for e in events if e.type == "content_block_delta"), before)
        # The stop left tokens past it in the live session, so the next turn
        # reuses only the prompt; a turn after the plain answer reuses all of it.
        self.client.messages.create(**kw)
        follow = self.client.messages.create(
            max_tokens=4,
            messages=user("List some fruit")
            + [{"role": "assistant", "content": base.content[0].text}, {"role": "user", "content": "More"}],
            **A_GREEDY,
        )
        base_prompt = base.usage.cache_read_input_tokens + base.usage.cache_creation_input_tokens
        self.assertGreaterEqual(follow.usage.cache_read_input_tokens, base_prompt + base.usage.output_tokens - 1)

    def test_errors(self):
        with self.assertRaises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=URL, api_key="wrong", max_retries=0).messages.create(
                max_tokens=2, messages=user("x"), **A_GREEDY
            )
        with self.assertRaises(anthropic.BadRequestError) as cm:
            self.client.messages.create(max_tokens=2, messages=[{"role": "narrator", "content": "x"}], **A_GREEDY)
        self.assertEqual(cm.exception.body["type"], "error")


@unittest.skipIf(SKIP is not None or not TRACE, SKIP or "DS4_TRACE_FILE not set")
class TraceFile(unittest.TestCase):
    def test_trace_has_request_and_result(self):
        client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=300)
        marker = "trace marker 4d1c"
        r = client.chat.completions.create(messages=user(marker), max_tokens=5, **GREEDY)
        with open(TRACE, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        mine = [x for x in records if x.get("event") == "request" and marker in x.get("prompt", "")]
        self.assertEqual(len(mine), 1, mine)
        req = mine[0]
        self.assertEqual(req["api"], "chat")
        self.assertEqual(req["prompt_tokens"], r.usage.prompt_tokens)
        self.assertIn(marker, req["body"])
        done = [x for x in records if x.get("event") == "done" and x.get("id") == req["id"]]
        self.assertEqual(len(done), 1, records[-3:])
        d = done[0]
        self.assertEqual(d["content"], r.choices[0].message.content)
        self.assertEqual(d["finish"], r.choices[0].finish_reason)
        self.assertEqual(d["completion_tokens"], r.usage.completion_tokens)
        self.assertEqual(d["cached_tokens"], r.usage.prompt_tokens_details.cached_tokens)
        rejected = [x for x in records if x.get("event") == "rejected"]
        if rejected:
            self.assertTrue(all(400 <= x["status"] < 500 for x in rejected), rejected)


if __name__ == "__main__":
    unittest.main()
