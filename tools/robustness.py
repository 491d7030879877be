#!/usr/bin/env python3
"""Robustness run against a running ds4-server (standard library only).

Fires, per class, N requests that a well-behaved server must survive:

  malformed   invalid JSON bodies (truncated, garbage bytes, invalid UTF-8, deep
              nesting, non-object documents, empty) on every POST endpoint -> 4xx
  wrong_type  valid JSON whose fields have the wrong type or an impossible value
              (messages as a string, temperature "hot", role 7, ...)       -> 4xx
  oversized   bodies over --body-limit (declared Content-Length, or chunked with
              no length) -> 413 or a closed connection; plus prompts under the
              limit but over the context -> 400 context_length_exceeded
  slow_header slowloris: connections that send header bytes slower than the
              server's read timeout, or nothing at all -> closed by the server
  slow_body   complete headers, then a body that stalls -> 408 or closed
  disconnect  streaming requests closed (FIN or RST) after the first event ->
              the server stops generating (generated tokens per stream reported)

While the slow connections are held open a normal request must succeed; at the
end a normal request must succeed, /health must answer and /metrics must show an
empty queue. Prints a table of counts per class and outcome (and --json FILE).
Exit status 0 only if every request got an expected outcome.

Example (against a release build on the demo model):
  ds4-server -m ~/.cache/ds4/ds4-demo-v1-q2.gguf --ctx 2048 --max-body-bytes 1048576 --read-timeout-ms 2000 &
  python3 tools/robustness.py --url http://127.0.0.1:8000 --per-class 300 --body-limit 1048576 --read-timeout 2
"""

import argparse
import collections
import concurrent.futures as cf
import json
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"]


class Target:
    def __init__(self, url, key):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.key = key

    def connect(self, timeout=60):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def head(self, method, path, length=None, chunked=False, extra=""):
        h = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        if self.key:
            h += f"Authorization: Bearer {self.key}\r\n"
        if length is not None:
            h += f"Content-Length: {length}\r\n"
        if chunked:
            h += "Transfer-Encoding: chunked\r\n"
        return (h + extra + "Connection: close\r\n\r\n").encode()


def read_response(s, limit=1 << 20):
    """(status, body bytes) from a Connection: close response; status None if the
    server closed without answering."""
    buf = b""
    try:
        while len(buf) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, BrokenPipeError, socket.timeout, OSError):
        pass
    if not buf.startswith(b"HTTP/1.1 "):
        return None, buf
    status = int(buf[9:12])
    return status, buf.split(b"\r\n\r\n", 1)[-1]


def request(t, method, path, body=b"", timeout=120):
    s = t.connect(timeout)
    try:
        s.sendall(t.head(method, path, len(body)) + body)
        return read_response(s)
    finally:
        s.close()


def outcome_of(status):
    if status is None:
        return "closed_without_response"
    return f"{status // 100}xx" if status not in (408, 413, 429) else str(status)


# ---------------------------------------------------------------- generators

def malformed_bodies(rng):
    valid = json.dumps({"model": "deepseek-chat", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    kinds = [
        lambda: valid[: rng.randrange(1, len(valid) - 1)].encode(),
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))),
        lambda: b'{"messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}',
        lambda: ("[" * rng.choice([200, 5000, 100000])).encode(),
        lambda: ('{"a":' * 3000 + "1" + "}" * 3000).encode(),
        lambda: rng.choice([b"[]", b"null", b"1", b'"x"', b"true", b""]),
        lambda: b'{"messages": [{"role": "user", "content": "hi"}],}',
        lambda: b"{'messages': []}",
        lambda: b'{"max_tokens": NaN, "messages": []}',
        lambda: valid.replace('"messages"', "messages").encode(),
        lambda: (valid + "garbage").encode(),
        lambda: b'{"messages": [{"role": "user", "content": "\\ud800"}]}x',
    ]
    return rng.choice(kinds)()


def wrong_type_bodies(rng, path):
    """A valid one-token request with one field mutated to a wrong type or an
    impossible value (only fields the endpoint reads: unknown fields are ignored,
    as the OpenAI and Anthropic APIs do)."""
    msgs = [{"role": "user", "content": "hi"}]
    bad_messages = [("messages", "hello"), ("messages", [1, 2]), ("messages", [{"role": 7, "content": "x"}]),
                    ("messages", [{"role": "narrator", "content": "x"}]), ("messages", None),
                    ("messages", {"role": "user"}), ("messages", [{"content": "x"}])]
    common = [("temperature", "hot"), ("top_p", [1]), ("model", 42), ("stream", "yes")]
    if path == "/v1/completions":
        base = {"model": "deepseek-chat", "prompt": "hi", "max_tokens": 1}
        muts = common + [("top_k", "ten"), ("min_p", {"x": 1}), ("seed", "s"), ("stop", 7), ("max_tokens", "many"),
                         ("max_tokens", -5), ("max_tokens", 1.5), ("reasoning_effort", "ultra"),
                         ("thinking", {"type": "sometimes"}), ("stream_options", "on"), ("prompt", 5),
                         ("prompt", {"text": "x"}), ("prompt", None)]
    elif path == "/v1/responses":
        base = {"model": "deepseek-chat", "input": "hi", "max_output_tokens": 1}
        muts = common + [("max_output_tokens", "x"), ("max_output_tokens", -1), ("input", 5), ("input", None),
                         ("input", [{"type": "nonsense"}]), ("previous_response_id", "resp_1"), ("tools", "x"),
                         ("reasoning", "high"), ("instructions", 5)]
    elif path == "/v1/messages":
        base = {"model": "deepseek-chat", "messages": msgs, "max_tokens": 1}
        muts = common + bad_messages + [("messages", [{"role": "user", "content": 5}]), ("top_k", "ten"),
                                        ("stop_sequences", "x"), ("system", 5), ("reasoning_effort", "ultra"),
                                        ("thinking", {"type": "sometimes"}), ("max_tokens", "many"), ("tools", "x")]
    else:
        base = {"model": "deepseek-chat", "messages": msgs, "max_tokens": 1}
        muts = common + bad_messages + [("messages", [{"role": "user", "content": 5}]), ("top_k", "ten"),
                                        ("min_p", {"x": 1}), ("seed", "s"), ("stop", 7), ("max_tokens", "many"),
                                        ("max_tokens", -5), ("max_tokens", 1.5), ("reasoning_effort", "ultra"),
                                        ("tools", "get_weather"), ("tools", [{"type": "function"}]),
                                        ("thinking", {"type": "sometimes"}), ("stream_options", "on")]
    k, v = rng.choice(muts)
    body = dict(base)
    if v is None:
        body.pop(k, None)
    else:
        body[k] = v
    return json.dumps(body).encode(), (k, v)


# ---------------------------------------------------------------- classes

def run_simple(t, n, conc, make, expect):
    out = collections.Counter()
    odd = []

    def one(i):
        path = ENDPOINTS[i % len(ENDPOINTS)]
        body, note = make(random.Random(i), path)
        try:
            status, resp = request(t, "POST", path, body)
        except OSError as e:
            return "conn_error", (path, note, repr(e))
        o = outcome_of(status)
        return o, (path, note, status, resp[:200])

    with cf.ThreadPoolExecutor(conc) as ex:
        for o, info in ex.map(one, range(n)):
            out[o] += 1
            if o not in expect and len(odd) < 5:
                odd.append(info)
    return out, odd


def run_oversized(t, n, conc, limit, ctx):
    out = collections.Counter()
    odd = []

    def one(i):
        rng = random.Random(i)
        path = ENDPOINTS[i % len(ENDPOINTS)]
        s = t.connect(60)
        try:
            if i % 4 == 3:
                # Under the byte limit, over the context.
                words = "lorem " * (ctx + 16)
                body = json.dumps({"model": "deepseek-chat", "max_tokens": 1, "prompt": words, "input": words,
                                   "messages": [{"role": "user", "content": words}]}).encode()
                if len(body) > limit:
                    body = body[:limit]
                s.sendall(t.head("POST", path, len(body)) + body)
                status, resp = read_response(s)
                ok = status == 400 and b"context" in resp
                return ("400_context" if ok else outcome_of(status)), (path, "ctx", status, resp[:200])
            size = limit + 1 + rng.randrange(limit)
            chunked = i % 2 == 1
            try:
                if chunked:
                    s.sendall(t.head("POST", path, chunked=True))
                    sent, piece = 0, b"x" * 65536
                    while sent < size:
                        s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                        sent += len(piece)
                    s.sendall(b"0\r\n\r\n")
                else:
                    s.sendall(t.head("POST", path, size))
                    s.sendall(b"x" * size)
            except OSError:
                pass  # The server may answer and close before reading it all.
            status, resp = read_response(s)
            return outcome_of(status), (path, "chunked" if chunked else "length", size, status, resp[:200])
        finally:
            s.close()

    with cf.ThreadPoolExecutor(conc) as ex:
        for o, info in ex.map(one, range(n)):
            out[o] += 1
            if o not in ("413", "400_context", "closed_without_response") and len(odd) < 5:
                odd.append(info)
    return out, odd


def hold_slow(t, n, read_timeout, kind, during):
    """Open n slow connections at once; each drips bytes slower than the server's
    read timeout. `during` runs while they are all open. Outcome: how the server
    ended each one within 3x the read timeout."""
    out = collections.Counter()
    odd = []
    lock = threading.Lock()
    opened = threading.Barrier(n + 1, timeout=120)

    def one(i):
        try:
            s = t.connect(read_timeout * 3 + 10)
        except OSError as e:
            opened.wait()
            return "conn_error", repr(e)
        t0 = time.monotonic()
        try:
            if kind == "slow_header":
                head = t.head("POST", "/v1/chat/completions", 20)
                if i % 3 == 0:
                    s.sendall(b"")  # idle: nothing at all
                else:
                    s.sendall(head[: 10 + i % 20])
            else:
                body = b'{"messages": [{"role": "user", "content": "hi"}]}'
                s.sendall(t.head("POST", "/v1/chat/completions", len(body) + 100) + body[: i % len(body)])
            opened.wait()
            deadline = t0 + read_timeout * 3 + 5
            drip = 0
            s.settimeout(read_timeout * 1.5)
            while time.monotonic() < deadline:
                try:
                    data = s.recv(4096)
                except socket.timeout:
                    # Still open: drip one more byte (slower than the timeout).
                    drip += 1
                    try:
                        s.sendall(b"X" if kind == "slow_header" else b" ")
                    except OSError:
                        return "closed_by_server", None
                    continue
                except OSError:
                    return "closed_by_server", None
                if not data:
                    return "closed_by_server", None
                status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
                return outcome_of(status), (data[:200], round(time.monotonic() - t0, 2))
            return "still_open", drip
        finally:
            s.close()

    results = []
    with cf.ThreadPoolExecutor(n + 1) as ex:
        futs = [ex.submit(one, i) for i in range(n)]
        try:
            opened.wait()
        except threading.BrokenBarrierError:
            pass
        during_result = during()
        for f in futs:
            results.append(f.result())
    for o, info in results:
        out[o] += 1
        if o not in ("closed_by_server", "408", "4xx") and len(odd) < 5:
            with lock:
                odd.append(info)
    return out, odd, during_result


def run_disconnect(t, n, conc):
    out = collections.Counter()
    odd = []

    def one(i):
        path = ENDPOINTS[i % len(ENDPOINTS)]
        body = json.dumps({"model": "deepseek-chat", "stream": True, "max_tokens": 200, "max_output_tokens": 200,
                           "temperature": 1, "messages": [{"role": "user", "content": f"stream {i}"}],
                           "prompt": f"stream {i}", "input": f"stream {i}"}).encode()
        s = t.connect(120)
        try:
            s.sendall(t.head("POST", path, len(body)) + body)
            buf = b""
            want = 1 + i % 5  # events to read before hanging up
            while buf.count(b"data:") < want:
                c = s.recv(4096)
                if not c:
                    break
                buf += c
                if buf.startswith(b"HTTP/1.1 ") and not buf.startswith(b"HTTP/1.1 200"):
                    break
            status = int(buf[9:12]) if buf.startswith(b"HTTP/1.1 ") else None
            if i % 2:
                # RST instead of FIN.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if status == 200:
                return "streamed_then_closed", None
            return outcome_of(status), buf[:200]
        except OSError as e:
            return "conn_error", repr(e)
        finally:
            s.close()

    with cf.ThreadPoolExecutor(conc) as ex:
        for o, info in ex.map(one, range(n)):
            out[o] += 1
            if o not in ("streamed_then_closed", "429") and len(odd) < 5:
                odd.append(info)
    return out, odd


def metrics(t):
    status, body = request(t, "GET", "/metrics")
    if status != 200:
        raise SystemExit(f"/metrics answered {status}: {body[:200]!r}")
    m = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    return m


def normal_request(t):
    body = json.dumps({"model": "deepseek-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "Hello"}]}).encode()
    status, resp = request(t, "POST", "/v1/chat/completions", body)
    ok = status == 200 and json.loads(resp)["choices"][0]["message"]["role"] == "assistant"
    return ok, status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--body-limit", type=int, required=True, help="the server's --max-body-bytes")
    ap.add_argument("--ctx", type=int, required=True, help="the server's --ctx")
    ap.add_argument("--read-timeout", type=float, required=True, help="the server's --read-timeout-ms, in seconds")
    ap.add_argument("--json", default=None, help="write the counts here")
    a = ap.parse_args()
    t = Target(a.url, a.api_key)
    n = a.per_class
    report = {}
    notes = {}
    ok = True
    m0 = metrics(t)

    def record(name, counts, odd, expect):
        nonlocal ok
        report[name] = dict(counts)
        bad = {k: v for k, v in counts.items() if k not in expect}
        if bad:
            ok = False
            notes[name] = odd
        print(f"{name:12} " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())) + ("" if not bad else "   <-- UNEXPECTED"), flush=True)

    t0 = time.monotonic()
    # The deepest nesting bodies are also over a small --max-body-bytes: 413.
    c, odd = run_simple(t, n, a.concurrency, lambda rng, p: (malformed_bodies(rng), None), {"4xx", "413"})
    record("malformed", c, odd, {"4xx", "413"})
    c, odd = run_simple(t, n, a.concurrency, lambda rng, p: wrong_type_bodies(rng, p), {"4xx"})
    record("wrong_type", c, odd, {"4xx"})
    c, odd = run_oversized(t, n, a.concurrency, a.body_limit, a.ctx)
    record("oversized", c, odd, {"413", "400_context", "closed_without_response"})
    for kind in ("slow_header", "slow_body"):
        c, odd, during = hold_slow(t, n, a.read_timeout, kind, lambda: normal_request(t))
        record(kind, c, odd, {"closed_by_server", "408"})
        report[kind + "_normal_request_meanwhile"] = during[1]
        if not during[0]:
            ok = False
            print(f"  a normal request during {kind} failed: {during[1]}")
    gen0 = metrics(t)["ds4_generated_tokens_total"]
    c, odd = run_disconnect(t, n, min(a.concurrency, 4))
    record("disconnect", c, odd, {"streamed_then_closed", "429"})
    time.sleep(1.0)
    m1 = metrics(t)
    streamed = c.get("streamed_then_closed", 0)
    per = (m1["ds4_generated_tokens_total"] - gen0) / max(streamed, 1)
    report["disconnect_generated_tokens_per_stream"] = round(per, 2)
    print(f"  generated tokens per disconnected stream (max_tokens 200): {per:.2f}")

    final_ok, status = normal_request(t)
    hs, hb = request(t, "GET", "/health")
    m2 = metrics(t)
    report["final_normal_request"] = status
    report["health"] = hs
    report["queue_depth"] = m2["ds4_queue_depth"]
    report["connections_open_at_end"] = m2.get("ds4_connections_open")
    report["client_disconnects"] = m2.get("ds4_client_disconnects_total", 0) - m0.get("ds4_client_disconnects_total", 0)
    report["invalid_requests"] = m2.get("ds4_requests_invalid_total", 0) - m0.get("ds4_requests_invalid_total", 0)
    report["seconds"] = round(time.monotonic() - t0, 1)
    print(f"final normal request: {status}; /health: {hs} {hb!r}; queue_depth: {m2['ds4_queue_depth']:.0f}; "
          f"open connections: {report['connections_open_at_end']}; client disconnects seen: {report['client_disconnects']:.0f}; "
          f"refused before inference: {report['invalid_requests']:.0f}; {report['seconds']} s")
    if not final_ok or hs != 200 or m2["ds4_queue_depth"] != 0:
        ok = False
    if notes:
        print("unexpected samples:", json.dumps(notes, default=repr, indent=1)[:4000])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print("ROBUSTNESS OK" if ok else "ROBUSTNESS FAILED", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
