# Streams that meet the budget mid-way, and a client that walks away mid-stream.
import json, sys
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
print(json.dumps(out))
