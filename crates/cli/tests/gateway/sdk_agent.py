# Runs inside the sandbox: every endpoint through the gateway with the official SDKs,
# then looks for the real provider key everywhere the agent can see. Prints one JSON line.
import base64, json, os, sys

import anthropic
import openai

REAL = bytes.fromhex(sys.argv[1]).decode()
out = {}
oa = openai.OpenAI(max_retries=0)
r = oa.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "say hello to the gateway"}])
out["chat"] = {"text": r.choices[0].message.content, "usage": [r.usage.prompt_tokens, r.usage.completion_tokens]}

chunks = list(oa.chat.completions.create(model="fake-gpt", stream=True, max_tokens=50,
                                         messages=[{"role": "user", "content": "stream five words please"}]))
out["chat_stream"] = {
    "text": "".join((c.choices[0].delta.content or "") for c in chunks if c.choices),
    # The client did not ask for usage: no usage-only chunk and no usage field.
    "usage_chunks": sum(1 for c in chunks if not c.choices),
    "usage_fields": sum(1 for c in chunks if getattr(c, "usage", None) is not None),
}
chunks = list(oa.chat.completions.create(model="fake-gpt", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "usage please"}]))
out["chat_stream_usage"] = [c.usage.completion_tokens for c in chunks if c.usage is not None]

resp = oa.responses.create(model="fake-gpt", input="responses api works", max_output_tokens=40)
out["responses"] = {"text": resp.output_text, "usage": [resp.usage.input_tokens, resp.usage.output_tokens]}
events = [e.type for e in oa.responses.create(model="fake-gpt", input="stream the responses", stream=True)]
out["responses_stream"] = [events[0], events[-1], events.count("response.output_text.delta")]

emb = oa.embeddings.create(model="fake-embedding", input=["one", "two"])
out["embeddings"] = [len(emb.data), len(emb.data[0].embedding), emb.usage.prompt_tokens]
out["models"] = sorted(m.id for m in oa.models.list())

an = anthropic.Anthropic(max_retries=0)
m = an.messages.create(model="fake-claude", max_tokens=64, messages=[{"role": "user", "content": "hello claude"}])
out["messages"] = {"text": m.content[0].text, "usage": [m.usage.input_tokens, m.usage.output_tokens]}
with an.messages.stream(model="fake-claude", max_tokens=64, messages=[{"role": "user", "content": "stream claude words"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
out["messages_stream"] = {"text": text, "usage": [final.usage.input_tokens, final.usage.output_tokens]}
out["count_tokens"] = an.messages.count_tokens(model="fake-claude", messages=[{"role": "user", "content": "count these four"}]).input_tokens

# The real key must be nowhere the agent can look: its environment, every process's
# environment and command line, and every readable file outside /usr and /proc.
found = []
needles = [REAL.encode(), base64.b64encode(REAL.encode())]
def check(name, data):
    if any(n in data for n in needles):
        found.append(name)
for k, v in os.environ.items():
    check("env:" + k, v.encode())
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for f in ("environ", "cmdline"):
            try:
                check(f"/proc/{pid}/{f}", open(f"/proc/{pid}/{f}", "rb").read())
            except OSError:
                pass
for top in ("/etc", "/tmp", "/var", "/agent", "/home", "/root", "/run", "/dev/shm"):
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                check(p, open(p, "rb").read(1 << 20))
            except OSError:
                pass
out["key_found"] = found
out["virtual_key_prefix"] = os.environ["OPENAI_API_KEY"][:4]
out["same_virtual_key"] = os.environ["OPENAI_API_KEY"] == os.environ["ANTHROPIC_API_KEY"]
print(json.dumps(out))
