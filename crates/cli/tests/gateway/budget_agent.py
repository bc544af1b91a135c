# 50 concurrent requests against a budget that allows 10 of them. Prints one JSON line.
import json, sys, threading
from concurrent.futures import ThreadPoolExecutor

import openai

barrier = threading.Barrier(50)
def one(i):
    c = openai.OpenAI(max_retries=2)
    barrier.wait()
    try:
        c.chat.completions.create(model="fake-gpt", max_tokens=1000,
            messages=[{"role": "user", "content": "[[fake:usage=100,1000]] [[fake:delay_ms=300]] request %d" % i}])
        return "ok"
    except openai.RateLimitError as e:
        return "budget:" + str(e.response.headers.get("x-should-retry")) + ":" + e.code if "budget" in str(e) else "other:" + str(e)
    except Exception as e:
        return "other:" + repr(e)

with ThreadPoolExecutor(50) as ex:
    results = list(ex.map(one, range(50)))
print(json.dumps({"ok": results.count("ok"), "refused": sum(r.startswith("budget:false:budget_exceeded") for r in results), "other": [r for r in results if r != "ok" and not r.startswith("budget:")]}))
