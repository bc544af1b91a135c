# A blocked card number and a redacted e-mail address. Prints one JSON line.
import json
import anthropic, openai

out = {}
c = openai.OpenAI(max_retries=0)
try:
    c.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "my card is 4111 1111 1111 1111, charge it"}])
    out["card"] = "sent"
except openai.BadRequestError as e:
    out["card"] = [e.status_code, e.code, e.response.headers.get("x-should-retry")]
r = c.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": "write to alice.smith@example.org today"}])
out["email_echo"] = r.choices[0].message.content
a = anthropic.Anthropic(max_retries=0)
m = a.messages.create(model="fake-claude", max_tokens=30, system="key AKIAQWERTYUIOPASDFGH in system",
                      messages=[{"role": "user", "content": [{"type": "text", "text": "ssn 219-09-9999 here"}]}])
out["anthropic_echo"] = m.content[0].text
try:
    c.chat.completions.create(model="unpriced-model", messages=[{"role": "user", "content": "hi"}])
    out["unpriced"] = "sent"
except openai.BadRequestError as e:
    out["unpriced"] = e.code
bad = openai.OpenAI(max_retries=0, api_key="sk-not-the-virtual-key")
try:
    bad.models.list()
    out["wrong_key"] = "accepted"
except openai.AuthenticationError as e:
    out["wrong_key"] = e.status_code
print(json.dumps(out))
