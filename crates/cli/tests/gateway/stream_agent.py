# Streams that meet the budget mid-way, and a client that walks away mid-stream.
import json, os, sys
import openai

mode = sys.argv[1]
c = openai.OpenAI(max_retries=0)
out = {}
if mode == "cross":
    got = 0
    try:
        for ch in c.chat.completions.create(model="fake-gpt", stream=True,
                messages=[{"role": "user", "content": "[[fake:chunks=8000]] go on and on"}]):
            if ch.choices and ch.choices[0].delta.content:
                got += 1
        out["error"] = None
    except openai.APIError as e:
        out["error"] = str(e)
    out["chunks"] = got
elif mode == "leave":
    s = c.chat.completions.create(model="fake-gpt", stream=True,
            messages=[{"role": "user", "content": "[[fake:chunks=200]] [[fake:delay_ms=5]] leave early"}])
    n = 0
    for ch in s:
        n += 1
        if n == 3:
            break
    s.close()
    out["read"] = n
elif mode == "abandon":
    # Walks away from a long stream and ends: the run cuts it off and bills it.
    s = c.chat.completions.create(model="fake-gpt", stream=True,
            messages=[{"role": "user", "content": "[[fake:chunks=2000]] [[fake:delay_ms=20]] abandon"}])
    for n, ch in enumerate(s):
        if n == 3:
            break
    out["read"] = 3
    print(json.dumps(out), flush=True)
    os._exit(0)
print(json.dumps(out))
