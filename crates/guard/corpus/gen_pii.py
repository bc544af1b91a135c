#!/usr/bin/env python3
"""Writes pii.jsonl, the labelled corpus for ironcage_guard::pii (see README.md here).

Deterministic: a fixed seed, no clock, no network. Every value is fake: card numbers are
made to pass Luhn, IBANs to pass mod 97, keys have the providers' shapes filled with
pseudo-random characters. Run `python3 gen_pii.py` in this directory and commit the output.
"""

import base64
import json
import random
import string

R = random.Random(20240505)
OUT = []

ALNUM = string.ascii_letters + string.digits
URL = ALNUM + "_-"
HEX = "0123456789abcdef"
B32 = string.ascii_uppercase + "234567"
B64 = ALNUM + "+/"


def rnd(n, alphabet=ALNUM):
    return "".join(R.choice(alphabet) for _ in range(n))


def line(text, spans=(), note=None):
    for kind, value in spans:
        assert value in text, (kind, value, text)
    obj = {"text": text, "spans": [{"kind": k, "value": v} for k, v in spans]}
    if note:
        obj["note"] = note
    OUT.append(obj)


# ---------------------------------------------------------------- value makers

FIRST = ["jane", "john", "maria", "li", "ahmed", "olga", "pierre", "sofia", "raj", "emma",
         "lukas", "yuki", "carlos", "fatima", "noah", "ines", "tom", "anna", "omar", "chen"]
LAST = ["doe", "smith", "garcia", "wang", "khan", "petrova", "dubois", "rossi", "patel",
        "jones", "muller", "tanaka", "lopez", "haddad", "brown", "silva", "berg", "novak"]
DOMAINS = ["example.com", "acme.io", "mail.example.org", "corp.example.co.uk", "uni-berlin.de",
           "startup.dev", "bank.example.fr", "gmail.com", "outlook.com", "proton.me",
           "research.example.edu", "city.gov", "shop.example.net", "team.example.ai"]


def email():
    f, l = R.choice(FIRST), R.choice(LAST)
    local = R.choice([f"{f}.{l}", f"{f}_{l}", f"{f[0]}{l}", f"{f}{R.randint(1, 99)}",
                      f"{f}.{l}+{R.choice(['billing', 'news', 'test'])}", f"{l}-{f}", f"{f}"])
    return f"{local}@{R.choice(DOMAINS)}"


def luhn_complete(prefix, length):
    body = prefix + "".join(R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        n = body + d
        total = 0
        for i, c in enumerate(reversed(n)):
            x = int(c)
            if i % 2 == 1:
                x *= 2
                if x > 9:
                    x -= 9
            total += x
        if total % 10 == 0:
            return n
    raise AssertionError


def luhn_ok(n):
    total = 0
    for i, c in enumerate(reversed(n)):
        x = int(c)
        if i % 2 == 1:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return total % 10 == 0


BRANDS = [  # (name, prefixes, length, grouping)
    ("visa", ["4"], 16, (4, 4, 4, 4)),
    ("visa13", ["4"], 13, None),
    ("mastercard", ["51", "52", "53", "54", "55"], 16, (4, 4, 4, 4)),
    ("mastercard2", ["2221", "2300", "2500", "2720"], 16, (4, 4, 4, 4)),
    ("amex", ["34", "37"], 15, (4, 6, 5)),
    ("discover", ["6011", "644", "65"], 16, (4, 4, 4, 4)),
    ("jcb", ["3528", "3550", "3589"], 16, (4, 4, 4, 4)),
    ("diners", ["300", "305", "36", "38"], 14, (4, 6, 4)),
    ("unionpay-discover", ["622126", "622500", "622925"], 16, (4, 4, 4, 4)),
    ("visa19", ["4"], 19, (4, 4, 4, 4, 3)),
]


def card(sep=None):
    name, prefixes, length, grouping = R.choice(BRANDS)
    n = luhn_complete(R.choice(prefixes), length)
    if sep is None or grouping is None:
        return n
    parts, i = [], 0
    for g in grouping:
        parts.append(n[i:i + g])
        i += g
    return sep.join(parts)


def ssn(sep="-"):
    while True:
        area = R.randint(1, 899)
        if area == 666:
            continue
        group, serial = R.randint(1, 99), R.randint(1, 9999)
        s = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
        if s.replace(sep, "-") in ("078-05-1120", "123-45-6789"):
            continue
        return s


IBAN_LEN = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27, "BE": 16, "AT": 20,
            "CH": 21, "PL": 28, "SE": 24, "NO": 15, "DK": 18, "FI": 18, "IE": 22, "PT": 25,
            "LU": 20, "CZ": 24, "HU": 28, "RO": 24, "GR": 27, "MT": 31, "TR": 26, "BR": 29}
IBAN_LETTERS = {"GB": 4, "NL": 4, "IE": 4, "RO": 4, "MT": 4, "BR": 0}


def iban_check(country, bban):
    moved = bban + country + "00"
    num = "".join(str(int(c, 36)) for c in moved)
    return 98 - int(num) % 97


def iban(country=None, spaced=False, broken=False):
    country = country or R.choice(sorted(IBAN_LEN))
    n = IBAN_LEN[country] - 4
    letters = IBAN_LETTERS.get(country, 0)
    bban = rnd(letters, string.ascii_uppercase) + rnd(n - letters, string.digits)
    check = iban_check(country, bban)
    if broken:
        check = (check + R.randint(1, 50)) % 97 + 2
        if check == iban_check(country, bban):
            check = check + 1
    s = f"{country}{check:02d}{bban}"
    if spaced:
        s = " ".join(s[i:i + 4] for i in range(0, len(s), 4))
    return s


def ipv4(kind="any"):
    pools = {
        "private": lambda: R.choice([f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
                                     f"192.168.{R.randint(0, 255)}.{R.randint(1, 254)}",
                                     f"172.{R.randint(16, 31)}.{R.randint(0, 255)}.{R.randint(1, 254)}"]),
        "public": lambda: R.choice([f"203.0.113.{R.randint(1, 254)}", f"198.51.100.{R.randint(1, 254)}",
                                    f"{R.randint(11, 223)}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}"]),
    }
    return pools[R.choice(list(pools))]() if kind == "any" else pools[kind]()


def ipv6():
    g = lambda: format(R.randint(1, 0xFFFF), "x")
    return R.choice([
        "::1",
        f"fe80::{g()}:{g()}:{g()}:{g()}",
        f"fe80::{g()}",
        f"2001:db8::{g()}:{g()}",
        f"2001:db8:{g()}::{g()}",
        f"2001:0db8:85a3:0000:0000:8a2e:0370:{R.randint(1000, 9999)}",
        f"::ffff:192.0.2.{R.randint(1, 254)}",
        f"2001:db8:{g()}:{g()}:{g()}:{g()}:{g()}:{g()}",
        f"2606:4700:{g()}::{g()}",
        f"64:ff9b::198.51.100.{R.randint(1, 254)}",
    ])


def phone():
    a, b, c = R.randint(201, 989), R.randint(200, 999), R.randint(0, 9999)
    return R.choice([
        f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
        f"+1-{a}-{b}-{c:04d}", f"1-{a}-{b}-{c:04d}", f"+1 ({a}) {b}-{c:04d}",
        f"+44 20 {R.randint(7000, 8999)} {R.randint(1000, 9999)}",
        f"+44 7{R.randint(100, 999)} {R.randint(100000, 999999)}",
        f"+49 30 {R.randint(1000000, 99999999)}", f"+49 151 {R.randint(1000, 9999)} {R.randint(1000, 9999)}",
        f"+33 1 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
        f"+33 6 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
        f"+81-3-{R.randint(1000, 9999)}-{R.randint(1000, 9999)}",
        f"+91 {R.randint(70000, 99999)} {R.randint(10000, 99999)}",
        f"+61 2 {R.randint(8000, 9999)} {R.randint(1000, 9999)}",
        f"+55 11 9{R.randint(1000, 9999)}-{R.randint(1000, 9999)}",
        f"+34 {R.randint(600, 999)} {R.randint(100, 999)} {R.randint(100, 999)}",
        f"+31 20 {R.randint(100, 999)} {R.randint(1000, 9999)}",
        f"+41 44 {R.randint(100, 999)} {R.randint(10, 99)} {R.randint(10, 99)}",
        f"+44 (0)20 {R.randint(7000, 8999)} {R.randint(1000, 9999)}",
        f"0044 20 {R.randint(7000, 8999)} {R.randint(1000, 9999)}",
        f"020 {R.randint(7000, 8999)} {R.randint(1000, 9999)}",
        f"07{R.randint(100, 999)} {R.randint(100000, 999999)}",
        f"01 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
        f"06-{R.randint(10, 99)}-{R.randint(10, 99)}-{R.randint(10, 99)}-{R.randint(10, 99)}",
        f"030 {R.randint(1000000, 99999999)}",
        f"(0{R.randint(20, 99)}) {R.randint(1000, 9999)} {R.randint(1000, 9999)}",
    ])


def b64url(data):
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def jwt():
    alg = R.choice(["HS256", "RS256", "ES256", "HS512", "EdDSA"])
    header = R.choice([{"alg": alg, "typ": "JWT"}, {"typ": "JWT", "alg": alg},
                       {"alg": alg, "kid": rnd(8, HEX), "typ": "JWT"}])
    payload = {"sub": str(R.randint(10**6, 10**9)), "name": R.choice(FIRST).title(),
               "iat": R.randint(1600000000, 1720000000)}
    if R.random() < 0.5:
        payload["exp"] = payload["iat"] + 3600
        payload["scope"] = R.choice(["read", "read write", "admin"])
    sig = rnd(R.choice([43, 86, 64]), URL)
    return f"{b64url(json.dumps(header, separators=(',', ':')))}.{b64url(json.dumps(payload, separators=(',', ':')))}.{sig}"


def api_key(which=None):
    which = which or R.choice(["openai", "openai_proj", "openai_svc", "anthropic", "aws", "aws_sts",
                               "github", "github_pat", "google", "stripe", "stripe_rk", "slack_bot",
                               "slack_user", "deepseek"])
    return {
        "openai": lambda: f"sk-{rnd(20)}T3BlbkFJ{rnd(20)}",
        "openai_proj": lambda: f"sk-proj-{rnd(74, URL)}T3BlbkFJ{rnd(74, URL)}",
        "openai_svc": lambda: f"sk-svcacct-{rnd(58, URL)}T3BlbkFJ{rnd(58, URL)}",
        "anthropic": lambda: f"sk-ant-api03-{rnd(93, URL)}AA",
        "aws": lambda: f"AKIA{rnd(16, B32)}",
        "aws_sts": lambda: f"ASIA{rnd(16, B32)}",
        "github": lambda: f"{R.choice(['ghp', 'gho', 'ghs', 'ghu'])}_{rnd(36)}",
        "github_pat": lambda: f"github_pat_{rnd(22)}_{rnd(59)}",
        "google": lambda: f"AIza{rnd(35, URL)}",
        "stripe": lambda: f"sk_{R.choice(['live', 'test'])}_{rnd(R.choice([24, 99]))}",
        "stripe_rk": lambda: f"rk_live_{rnd(24)}",
        "slack_bot": lambda: f"xoxb-{R.randint(10**9, 10**12)}-{R.randint(10**9, 10**12)}-{rnd(24)}",
        "slack_user": lambda: f"xoxp-{R.randint(10**9, 10**12)}-{R.randint(10**9, 10**12)}-{R.randint(10**9, 10**12)}-{rnd(32, HEX)}",
        "deepseek": lambda: f"sk-{rnd(32, HEX)}",
    }[which]()


def pem(label):
    body = "\n".join(rnd(64, B64) for _ in range(R.randint(4, 9))) + "\n" + rnd(R.randint(8, 60), B64) + "="
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def uuid():
    return f"{rnd(8, HEX)}-{rnd(4, HEX)}-4{rnd(3, HEX)}-{R.choice('89ab')}{rnd(3, HEX)}-{rnd(12, HEX)}"


def ts():
    return f"2024-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}T{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}Z"


# ---------------------------------------------------------------- positives

EMAIL_T = [
    "Please forward the Q3 report to {v} before Friday.",
    "Contact: {name} <{v}>",
    '{{"user": {{"id": 4821, "email": "{v}", "active": true}}}}',
    "{ts} INFO auth: login succeeded for {v} (mfa=totp)",
    "id,name,email\n17,{name},{v}\n",
    "Reach me at mailto:{v} or on Slack.",
    "Signed-off-by: {name} <{v}>",
    "请联系{v}获取帮助。",
    "Ärger mit der Rechnung? Schreib an {v}!",
    "The customer ({v}) says the export fails with a 500.",
    "git config user.email \"{v}\"",
    "Rewrite this email politely: 'Hi, I'm {name}, my address is {v}, please stop calling.'",
    "cc: {v}; bcc: none",
    "- owner: {v}\n  team: payments",
    "Ticket #4412 opened by {v} — priority high.",
]
for i in range(42):
    v = email()
    name = f"{R.choice(FIRST).title()} {R.choice(LAST).title()}"
    line(EMAIL_T[i % len(EMAIL_T)].format(v=v, name=name, ts=ts()), [("email", v)], "email")
for _ in range(4):
    a, b = email(), email()
    while b == a:
        b = email()
    line(f"Send the invite to {a}, {b} and the team alias.", [("email", a), ("email", b)], "email pair")

PHONE_T = [
    "Call me at {v} after 5pm.",
    "Phone: {v}",
    '{{"name": "{name}", "phone": "{v}", "country": "US"}}',
    "Customer {name} ({v}) asked for a refund on order 88213.",
    "If the pager fails, ring the on-call number {v}.",
    "Mobil: {v} – bitte nur werktags.",
    "tel {v} / fax none",
    "Summarize: caller left a voicemail from {v} about the lease renewal.",
    "| {name} | {v} | Sales |",
    "Votre numéro {v} a été vérifié.",
]
for i in range(52):
    v = phone()
    name = f"{R.choice(FIRST).title()} {R.choice(LAST).title()}"
    line(PHONE_T[i % len(PHONE_T)].format(v=v, name=name), [("phone", v)], "phone")
for _ in range(3):
    v = f"{R.randint(201, 989)}{R.randint(200, 999)}{R.randint(1000, 9999)}"
    line(f"phone: {v}", [("phone", v)], "phone bare after phone word")

CARD_T = [
    "Card: {v} exp 12/27 cvv 123",
    "Charge the card {v} for the annual plan.",
    '{{"payment": {{"card_number": "{v}", "holder": "{name}"}}}}',
    "Why was {v} declined? The bank says funds are fine.",
    "{name},{v},2027-03\n",
    "Use test card {v}.",
    "my visa is {v}, can you check it's valid?",
    "Kreditkarte {v} wurde belastet.",
]
for i in range(46):
    v = card(R.choice([None, " ", "-", " "]))
    name = f"{R.choice(FIRST).title()} {R.choice(LAST).title()}"
    line(CARD_T[i % len(CARD_T)].format(v=v, name=name), [("credit_card", v)], "credit_card")

SSN_T = [
    "SSN: {v}",
    "My social security number is {v}, please update the W-2.",
    '{{"employee": "{name}", "ssn": "{v}"}}',
    "Applicant {name}, SSN {v}, DOB 1984-07-12.",
    "ssn={v}&state=CA",
    "Verify {v} against the IRS record.",
]
for i in range(34):
    v = ssn(R.choice(["-", "-", "-", " "]))
    name = f"{R.choice(FIRST).title()} {R.choice(LAST).title()}"
    line(SSN_T[i % len(SSN_T)].format(v=v, name=name), [("us_ssn", v)], "us_ssn")

IBAN_T = [
    "IBAN: {v}",
    "Please wire the deposit to {v} (BIC DEUTDEFF).",
    '{{"beneficiary": "{name}", "iban": "{v}"}}',
    "Überweisung an {v}, Verwendungszweck Rechnung 2024-117.",
    "Paiement sur le compte {v}.",
    "Refund to IBAN {v} within 14 days.",
]
countries = sorted(IBAN_LEN)
for i in range(44):
    v = iban(countries[i % len(countries)], spaced=R.random() < 0.5)
    name = f"{R.choice(FIRST).title()} {R.choice(LAST).title()}"
    line(IBAN_T[i % len(IBAN_T)].format(v=v, name=name), [("iban", v)], "iban")
v = iban("DE", spaced=True)
line(f"IBAN {v} 12 EUR fee", [("iban", v)], "iban followed by a number")
line("The IBAN DE89370400440532013000 is the standard example.", [("iban", "DE89370400440532013000")], "iban")

IP_T = [
    "{ts} sshd[2211]: Accepted publickey for deploy from {v} port 52114 ssh2",
    '{v} - - [12/Mar/2024:10:11:12 +0000] "GET /api/v1/health HTTP/1.1" 200 17',
    "The database listens on {v}:5432 but the app can't connect.",
    "ping {v} works but curl times out",
    '{{"client_ip": "{v}", "status": 403}}',
    "Allow traffic from {v} in the security group.",
    "ssh root@{v}",
    "Server {v} is down again.",
]
for i in range(30):
    v = ipv4()
    line(IP_T[i % len(IP_T)].format(v=v, ts=ts()), [("ip_address", v)], "ipv4")
IP6_T = [
    "The service binds to {v} only.",
    "curl -g 'http://[{v}]:8080/metrics'",
    "{ts} kernel: IPv6 neighbour {v} unreachable",
    '{{"remote_addr": "{v}", "proto": "h2"}}',
    "Add {v} to the allowlist.",
    "listen [{v}]:443 ssl;",
]
for i in range(30):
    v = ipv6()
    line(IP6_T[i % len(IP6_T)].format(v=v, ts=ts()), [("ip_address", v)], "ipv6")

KEY_T = [
    "export {env}={v}",
    '{env}="{v}"',
    'client = OpenAI(api_key="{v}")',
    'curl https://api.example.com/v1/models -H "Authorization: Bearer {v}"',
    "Why does my key {v} return 401?",
    "{lower}: {v}\nmodel: gpt-4o",
    '{{"credentials": {{"token": "{v}"}}}}',
    "I accidentally committed {v} to the repo, how do I rotate it?",
]
ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "aws": "AWS_ACCESS_KEY_ID",
       "github": "GITHUB_TOKEN", "google": "GOOGLE_API_KEY", "stripe": "STRIPE_SECRET_KEY",
       "slack": "SLACK_BOT_TOKEN", "deepseek": "DEEPSEEK_API_KEY"}
which_all = ["openai", "openai_proj", "openai_svc", "anthropic", "aws", "aws_sts", "github",
             "github_pat", "google", "stripe", "stripe_rk", "slack_bot", "slack_user", "deepseek"]
for i in range(56):
    w = which_all[i % len(which_all)]
    v = api_key(w)
    env = next((e for k, e in ENV.items() if w.startswith(k)), "API_KEY")
    line(KEY_T[i % len(KEY_T)].format(v=v, env=env, lower=env.lower()), [("api_key", v)], f"api_key {w}")

PEM_LABELS = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
              "ENCRYPTED PRIVATE KEY", "DSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]
PEM_T = [
    "ssh says 'invalid format' for this key, why?\n{v}\n",
    "Here is the server key:\n\n{v}\n\nCan you convert it to PKCS#8?",
    "key.pem contains\n```\n{v}\n```",
    "{v}",
]
for i in range(18):
    v = pem(PEM_LABELS[i % len(PEM_LABELS)])
    line(PEM_T[i % len(PEM_T)].format(v=v), [("private_key", v)], "private_key")

JWT_T = [
    "Authorization: Bearer {v}",
    "Set-Cookie: session={v}; Path=/; HttpOnly",
    "Decode this token and tell me when it expires: {v}",
    '{{"access_token": "{v}", "token_type": "Bearer", "expires_in": 3600}}',
    "GET /callback?id_token={v}&state=xyz",
]
for i in range(24):
    v = jwt()
    line(JWT_T[i % len(JWT_T)].format(v=v), [("jwt", v)], "jwt")

# Several kinds in one prompt.
for _ in range(16):
    e, p, c, ip = email(), phone(), card(" "), ipv4("public")
    text = (f"Customer record: email {e}, phone {p}, card on file {c}. "
            f"Last login from {ip} at {ts()}. Order id 5510-{R.randint(1000, 9999)}.")
    line(text, [("email", e), ("phone", p), ("credit_card", c), ("ip_address", ip)], "mixed")
for _ in range(8):
    k, s, ib = api_key(), ssn(), iban(spaced=True)
    text = (f"Debug dump:\nconfig.api_key = '{k}'\nuser.ssn = '{s}'\nuser.iban = '{ib}'\n"
            f"request_id = {uuid()}\n")
    line(text, [("api_key", k), ("us_ssn", s), ("iban", ib)], "mixed config")

# ---------------------------------------------------------------- hard negatives

def neg(text, note):
    line(text, [], "hard negative: " + note)


for _ in range(8):
    neg(f"Order #A-2024-{R.randint(100000, 999999)} shipped on {ts()[:10]}.", "order number")
    neg(f"Your order number is {R.randint(10**8, 10**9 - 1)}.", "order number 9 digits")
    neg(f"Order {R.randint(10**9, 10**10 - 1)} was refunded.", "order number 10 digits")
for _ in range(5):
    neg(f"UPS tracking 1Z{rnd(6, string.ascii_uppercase + string.digits)}{R.randint(10**9, 10**10 - 1)}", "tracking number")
    neg(f"USPS: 9400 1{R.randint(100, 999)} {R.randint(1000, 9999)} {R.randint(1000, 9999)} {R.randint(1000, 9999)} {R.randint(10, 99)}", "tracking number")
    neg(f"FedEx tracking number {R.randint(10**11, 10**12 - 1)}", "tracking number")
for _ in range(10):
    neg(f"request_id={uuid()} trace_id={rnd(32, HEX)}", "uuid")
for _ in range(6):
    neg(f"md5 {rnd(32, HEX)}  sha1 {rnd(40, HEX)}", "hex hashes")
    neg(f"sha256:{rnd(64, HEX)}", "sha256")
    neg(f"commit {rnd(40, HEX)}\nAuthor: CI Bot\nDate: {ts()}", "git sha")
    neg(f"Fixed in {rnd(7, HEX)}, reverted in {rnd(7, HEX)}.", "short git sha")
for _ in range(6):
    neg(f"{ts()} level=info msg=\"request done\" duration_ms={R.randint(1, 999)} status=200", "timestamp")
    neg(f"Created: {R.randint(2019, 2025)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d} {R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}.{R.randint(100000, 999999)}+00:00", "timestamp")
    neg(f"Due {R.randint(1, 28):02d}/{R.randint(1, 12):02d}/{R.randint(2020, 2026)}, paid {R.randint(1, 12):02d}-{R.randint(1, 28):02d}-{R.randint(2020, 2026)}", "dates")
for v in ["v1.2.3.4", "version 1.2.3.4", "v2.10.0.1", "pkg@1.2.3.4", "1.2.3.4.5", "release 4.1.0.2",
          "\"version\": \"2.0.0.1\"", "firmware 1.0.12.7", "1.3.6.1.4.1.2021", "4.2.1.0-beta",
          "Bump ver 10.4.1.3 → 10.4.1.4", "npm i left-pad@1.3.0"]:
    neg(f"Upgrade notes: {v} fixes the crash.", "version string")
for _ in range(5):
    a = R.randint(10, 400)
    neg(f"See pp. {a}-{a + R.randint(2, 30)} and pages {a + 40}–{a + 45}.", "page range")
for _ in range(10):
    name, prefixes, length, grouping = R.choice(BRANDS)
    while True:
        n = luhn_complete(R.choice(prefixes), length)
        bad = n[:-1] + str((int(n[-1]) + R.randint(1, 9)) % 10)
        if not luhn_ok(bad):
            break
    neg(f"Reference number {bad} (not a card: fails the checksum).", "16-digit non-Luhn")
for _ in range(6):
    neg(f"Invoice {R.randint(10**8, 10**9 - 1)} and batch {R.randint(10**8, 10**9 - 1)}", "9-digit numbers")
for t in ["![logo](assets/icon@2x.png)", "background: url(img/hero@3x.webp);", "@media (max-width: 600px) {",
          "@Override\npublic String toString()", "@app.route(\"/login\")", "user@localhost is not routable",
          "npm install @types/node@20.11.5", "git@github.com:acme/infra.git", "ssh://git@gitlab.example.com/team/repo",
          "@param user the user"]:
    neg(t, "at-sign that is not an email")
for t in ["let s = add::<u32>(1, 2);", "use std::io::Result;", "impl fmt::Display for Kind", "std::vector<int> v;",
          "Foo::Bar::3", "xs = arr[::2]", "ys = arr[1::2]", "rev = s[::-1]", "u8::MAX + i32::from(x)",
          "match x { Kind::A => 1, _ => 2 }", "time 12:30:45 and 23:59:59", "MAC 00:1A:2B:3C:4D:5E",
          "assert_eq!(a, b); // add::"]:
    neg(t, "code that looks like ipv6")
for _ in range(10):
    neg(f"IBAN {iban(spaced=R.random() < 0.5, broken=True)} was rejected by the bank (bad checksum).", "invalid iban checksum")
for s in ["000-12-3456", "666-45-1234", "912-34-5678", "987-65-4321", "078-05-1120", "123-45-6789",
          "536-00-1234", "536-22-0000", "900-11-2222"]:
    neg(f"Test SSN {s} from the docs.", "invalid ssn")
for t in ["OPENAI_API_KEY=sk-...", "api_key: YOUR_API_KEY", "export ANTHROPIC_API_KEY=sk-ant-...",
          "OPENAI_API_KEY=<your key here>", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
          "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
          "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "stripe.api_key = 'sk_test_...'",
          "publishable key pk_live_" + rnd(24), "token: ${{ secrets.GITHUB_TOKEN }}", "key = os.environ['OPENAI_API_KEY']",
          "Bearer {{token}}", "AKIAXXXXXXXXXXXXXXXX", "risk-adjusted-return-on-capital-for-the-fund"]:
    neg(t, "placeholder or lookalike key")
for label in ["PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY"]:
    neg(pem(label), "public pem")
for _ in range(4):
    h = b64url(json.dumps({"typ": "JWT", "kid": rnd(6, HEX)}))
    p = b64url(json.dumps({"sub": str(R.randint(1, 10**6)), "role": "user"}))
    neg(f"data={h}.{p}.{rnd(43, URL)}", "base64 json without alg")
    neg(f"payload: {b64url(json.dumps({'event': 'click', 'id': R.randint(1, 10**6), 'page': '/home'}))}", "base64 json")
for t in ["ISBN 978-3-16-148410-0", "ext. 4521", "$1,299.99 and 1,234,567 units", "coordinates 40.7128, -74.0060",
          "resolution 1920x1080 @ 60Hz", "HTTP/1.1 200 OK", "Error 0x80070005", "epoch 1710513000 ms 1710513000123",
          "IMEI 356938035643809", "build 20240315.1", "port 8080, pid 31337", "score: +12 / -3",
          "Python 3.11.4 on linux", "Chrome/120.0.6099.109 Safari/537.36", "RFC 7515 section 4.1.1",
          "The loop ran 1000000 times in 0.25 s", "lat/long 51.5074 N, 0.1278 W", "SKU 4006381333931",
          "routing table 10/8 via eth0", "matrix [[1, 2, 3], [4, 5, 6]]"]:
    neg(t, "misc numbers")

# More shapes: case, punctuation at the end, brackets.
for _ in range(6):
    v = email()
    local, domain = v.split("@")
    v = f"{local.title()}@{domain.upper()}"
    line(f"Is {v} a valid address?", [("email", v)], "email upper case")
for _ in range(6):
    v = ipv4("public")
    line(f"Blocked requests came from {v}.", [("ip_address", v)], "ipv4 at sentence end")
    w = phone()
    line(f"[{w}]", [("phone", w)], "phone in brackets")
for _ in range(4):
    a, b = ipv4("private"), ipv4("private")
    line(f"Hosts: {a} {b}", [("ip_address", a), ("ip_address", b)], "two ipv4")
    c1, c2 = card(), card()
    line(f"cards={c1};{c2}", [("credit_card", c1), ("credit_card", c2)], "two cards")
v = api_key("openai_proj")
line(f"The key is {v}.", [("api_key", v)], "api_key at sentence end")

for t in ["€ 1 234 567,89 incl. VAT", "am 15.03.2024 um 14:30 Uhr", "ORCID 0000-0002-1825-0097",
          "Total: USD 4,111,111.11", "color: #4111ff;", "1-800-FLOWERS", "SN 4CE0460D0G",
          "Step 3 of 10: 25% done", "Table 2: 12 34 56 78", "chmod 0755 /usr/local/bin/tool",
          "Jan 12 10:11:12 host CRON[2231]: (root) CMD (run-parts /etc/cron.hourly)",
          "Uptime 1234567 s, load 0.52 0.48 0.41", "EAN 4006381333931", "docker run -p 8080:80 -p 127:1"]:
    neg(t, "misc numbers")

# Cases found by probing the detector with realistic text after the first evaluation; they
# stay whether or not the detector gets them right.
for _ in range(3):
    ip = ipv4("private")
    line(f"MONGO_URL=mongodb://app:{rnd(10)}@{ip}:27017/orders", [("ip_address", ip)], "ipv4 in url userinfo")
    a = f"192.168.{R.randint(0, 9)}.{R.randint(10, 99)}"
    b = a.rsplit(".", 1)[0] + f".{R.randint(100, 250)}"
    line(f"DHCP range {a}-{b} is exhausted", [("ip_address", a), ("ip_address", b)], "ipv4 range")
    v = f"030/{R.randint(1000000, 99999999)}"
    line(f"Tel.: {v}", [("phone", v)], "german slash phone")
    p1 = f"{R.randint(201, 989)} {R.randint(200, 999)} {R.randint(1000, 9999)}"
    p2 = f"{R.randint(201, 989)} {R.randint(200, 999)} {R.randint(1000, 9999)}"
    line(f"Numbers: 1) {p1} 2) {p2}", [("phone", p1), ("phone", p2)], "phones in a numbered list")
    v = f"+1{R.randint(201, 989)}{R.randint(200, 999)}{R.randint(1000, 9999)}"
    line(f'<a href="tel:{v}">call us</a>', [("phone", v)], "tel: link")
    e = email()
    line(f'Reply-To: "{R.choice(FIRST).title()}" <{e}>', [("email", e)], "email header")
    v = f"0{R.randint(2, 9)}-{R.randint(2000000, 9999999)}"
    line(f"My Israeli number is {v}", [("phone", v)], "nine-digit trunk number (Presidio's test case)")
for t in ["JDK 1.8.0.202 crashed with SIGSEGV", "see section 3.2.1.4 of RFC 8446", "OID 2.5.4.3 (commonName)",
          "x[:, ::2] and a[::-1] and b[1::2]", "foo :: Int -> Int", "Meeting ID: 812 3456 7890, passcode 123456",
          "Zoom link https://us02web.zoom.us/j/81234567890?pwd=abc", "Account no. 12345678, sort code 12-34-56",
          "AWS account 123456789012, arn:aws:iam::123456789012:role/admin", "Order 112-3456789-1234567 (Amazon)",
          "Ubuntu 22.04.3 LTS, kernel 6.1.0-18-amd64", "Date: Tue, 15 Nov 1994 08:12:31 GMT",
          "How do I fix 'unable to load -----BEGIN RSA PRIVATE KEY----- expecting: ANY PRIVATE KEY'?",
          "The header eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 alone is not a token", "numpy: arr[::3, 1::2]"]:
    neg(t, "probe")

# ---------------------------------------------------------------- write

with open("pii.jsonl", "w", encoding="utf-8") as f:
    for obj in OUT:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
print(f"{len(OUT)} lines, {sum(len(o['spans']) for o in OUT)} spans")
