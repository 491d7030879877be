"""ds4-server through the official `openai` and `anthropic` Python SDKs.

Environment:
  DS4_SERVER_URL  base URL of a running server (e.g. http://127.0.0.1:8000);
                  without it every test is skipped with the reason printed.
  DS4_API_KEY     key the server was started with (default: "none").
  DS4_SCRIPTED=1  the server runs the scripted test backend of
                  crates/ds4-server/tests/python_clients.rs, so exact outputs are
                  known; otherwise (a real model) only shapes are checked.

Run: python -m unittest discover -s tests/python -v
"""

import json
import os
import sys
import unittest

URL = os.environ.get("DS4_SERVER_URL")
KEY = os.environ.get("DS4_API_KEY", "none")
SCRIPTED = os.environ.get("DS4_SCRIPTED") == "1"

try:
    import anthropic
    import openai
except ImportError as e:  # pragma: no cover - reported as a skip
    anthropic = openai = None
    IMPORT_ERROR = str(e)
else:
    IMPORT_ERROR = None

SKIP_REASON = None
if IMPORT_ERROR:
    SKIP_REASON = f"openai/anthropic not installed ({IMPORT_ERROR}); pip install -r tools/requirements-ci.txt"
elif not URL:
    SKIP_REASON = "DS4_SERVER_URL is not set: start ds4-server with a model and point DS4_SERVER_URL at it"
if SKIP_REASON:
    print(f"SKIP ds4-server client tests: {SKIP_REASON}", file=sys.stderr)

HELLO = "Hello from ds4."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class OpenAIClient(unittest.TestCase):
    def setUp(self):
        self.client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=120)

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual(models.data[0].id, "deepseek-v4-flash")

    def test_chat(self):
        r = self.client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
        )
        self.assertIsInstance(r.choices[0].message.content, str)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 0)
        if SCRIPTED:
            self.assertEqual(r.choices[0].message.content, HELLO)
            self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_chat_stream_with_usage(self):
        stream = self.client.chat.completions.create(
            model="deepseek-chat",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        self.assertIsNotNone(usage)
        self.assertIn(finish, ("stop", "length"))
        if SCRIPTED:
            self.assertEqual(text, HELLO)

    def test_chat_thinking_reasoning_content(self):
        r = self.client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=[{"role": "user", "content": "Think about it"}],
            max_tokens=32,
            extra_body={"thinking": {"type": "enabled"}},
        )
        if SCRIPTED:
            self.assertEqual(r.choices[0].message.content, HELLO)
            self.assertEqual(r.choices[0].message.model_extra.get("reasoning_content"), "Let me think.")

    def test_tool_call(self):
        r = self.client.chat.completions.create(
            model="deepseek-chat",
            messages=[{"role": "user", "content": "What is the weather in Rome?"}],
            tools=[WEATHER_TOOL],
            max_tokens=64,
        )
        if not SCRIPTED:
            return
        self.assertEqual(r.choices[0].finish_reason, "tool_calls")
        call = r.choices[0].message.tool_calls[0]
        self.assertEqual(call.function.name, "get_weather")
        self.assertEqual(json.loads(call.function.arguments), {"city": "Rome"})
        # Send the result back: the model answers in text.
        r2 = self.client.chat.completions.create(
            model="deepseek-chat",
            messages=[
                {"role": "user", "content": "What is the weather in Rome?"},
                r.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ],
            tools=[WEATHER_TOOL],
        )
        self.assertEqual(r2.choices[0].message.content, HELLO)
        self.assertGreater(r2.usage.prompt_tokens_details.cached_tokens, r.usage.prompt_tokens)

    def test_tool_call_stream(self):
        stream = self.client.chat.completions.create(
            model="deepseek-chat",
            messages=[{"role": "user", "content": "What is the weather in Rome?"}],
            tools=[WEATHER_TOOL],
            max_tokens=64,
            stream=True,
        )
        name, args, finish = None, "", None
        for chunk in stream:
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    if tc.function.name:
                        name = tc.function.name
                    args += tc.function.arguments or ""
                finish = c.finish_reason or finish
        if SCRIPTED:
            self.assertEqual(name, "get_weather")
            self.assertEqual(json.loads(args), {"city": "Rome"})
            self.assertEqual(finish, "tool_calls")

    def test_completions(self):
        r = self.client.completions.create(model="deepseek-chat", prompt="Say hello", max_tokens=16)
        self.assertIsInstance(r.choices[0].text, str)
        if SCRIPTED:
            self.assertEqual(r.choices[0].text, HELLO)

    def test_responses(self):
        r = self.client.responses.create(model="deepseek-chat", input="Say hello", max_output_tokens=16)
        self.assertIn(r.status, ("completed", "incomplete"))
        if SCRIPTED:
            self.assertEqual(r.output_text, HELLO)
        events = [e.type for e in self.client.responses.create(
            model="deepseek-chat", input="Say hello", max_output_tokens=16, stream=True)]
        self.assertEqual(events[0], "response.created")
        self.assertIn(events[-1], ("response.completed", "response.incomplete"))

    def test_errors(self):
        bad = openai.OpenAI(base_url=URL + "/v1", api_key="wrong-key", max_retries=0)
        if KEY != "none":
            with self.assertRaises(openai.AuthenticationError):
                bad.models.list()
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(
                model="deepseek-chat", messages=[{"role": "user", "content": "x"}], reasoning_effort="ultra"
            )
        self.assertIn("ultra", str(cm.exception))


@unittest.skipIf(SKIP_REASON is not None, SKIP_REASON or "")
class AnthropicClient(unittest.TestCase):
    def setUp(self):
        self.client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, timeout=120)

    def test_message(self):
        m = self.client.messages.create(
            model="deepseek-chat", max_tokens=16, messages=[{"role": "user", "content": "Say hello"}]
        )
        self.assertEqual(m.role, "assistant")
        self.assertIn(m.stop_reason, ("end_turn", "max_tokens"))
        if SCRIPTED:
            self.assertEqual(m.content[-1].text, HELLO)

    def test_thinking_and_stream(self):
        with self.client.messages.stream(
            model="deepseek-v4-flash",
            max_tokens=32,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Think about it"}],
        ) as stream:
            final = stream.get_final_message()
        if SCRIPTED:
            self.assertEqual([b.type for b in final.content], ["thinking", "text"])
            self.assertEqual(final.content[0].thinking, "Let me think.")
            self.assertEqual(final.content[1].text, HELLO)

    def test_tool_use_stream(self):
        tools = [{"name": "get_weather", "description": "Current weather of a city",
                  "input_schema": WEATHER_TOOL["function"]["parameters"]}]
        with self.client.messages.stream(
            model="deepseek-chat", max_tokens=64, tools=tools,
            messages=[{"role": "user", "content": "What is the weather in Rome?"}],
        ) as stream:
            final = stream.get_final_message()
        if not SCRIPTED:
            return
        self.assertEqual(final.stop_reason, "tool_use")
        use = [b for b in final.content if b.type == "tool_use"][0]
        self.assertEqual((use.name, use.input), ("get_weather", {"city": "Rome"}))
        m = self.client.messages.create(
            model="deepseek-chat", max_tokens=64, tools=tools,
            messages=[
                {"role": "user", "content": "What is the weather in Rome?"},
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
            ],
        )
        self.assertEqual(m.content[-1].text, HELLO)
        self.assertGreater(m.usage.cache_read_input_tokens, 0)

    def test_errors(self):
        if KEY != "none":
            bad = anthropic.Anthropic(base_url=URL, api_key="wrong-key", max_retries=0)
            with self.assertRaises(anthropic.AuthenticationError):
                bad.messages.create(model="x", max_tokens=4, messages=[{"role": "user", "content": "x"}])
        with self.assertRaises(anthropic.BadRequestError):
            self.client.messages.create(model="x", max_tokens=4, messages=[{"role": "narrator", "content": "x"}])


if __name__ == "__main__":
    unittest.main()
