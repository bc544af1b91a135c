//! Throughput of `ironcage_guard::pii` on one core, in MB/s (decimal), over ~1 MiB texts
//! assembled deterministically from fragments:
//!
//! - `typical`: what a coding assistant's prompt carries: English prose, Rust/Python/shell/
//!   SQL snippets, JSON, a few log lines, and now and then a PII value;
//! - `digits`: CSV metrics, access logs, JSON number arrays and hex dumps, where nearly every
//!   token starts a digit run;
//! - `chat_json`: an OpenAI chat body through `apply_json`.
//!
//! `cargo bench -p ironcage-guard --bench pii` (bench/pii.sh runs it with the evaluation).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ironcage_guard::pii::{Rules, Scanner};
use std::time::Duration;

const TARGET: usize = 1 << 20;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const PROSE: &[&str] = &[
    "I'm refactoring the billing service and the integration tests started failing after I moved the retry logic into its own module. ",
    "Can you explain why the borrow checker complains here, and suggest a version that doesn't clone the whole vector on every iteration? ",
    "The customer reported that exports larger than 2 GB time out after 30 seconds, which matches the default proxy timeout we set last year. ",
    "Please summarize the following meeting notes in five bullet points, keeping the action items and their owners. ",
    "We measured p50 latency at 12 ms and p99 at 85 ms with 4 workers; the goal for Q3 is to halve the tail without adding hardware. ",
    "Write a short, friendly reply to the user explaining that the feature is on the roadmap but not scheduled yet. ",
    "The migration adds a nullable column first, backfills it in batches of 10,000 rows, and only then adds the NOT NULL constraint. ",
    "Translate the paragraph below into German, keeping technical terms like 'rate limit' and 'webhook' in English. ",
    "Our onboarding flow has 7 steps and about 40% of users drop off at step 3, where we ask them to connect a bank account. ",
    "Compare the two approaches in a table: memory use, latency, operational complexity, and how each fails under load. ",
    "The log shows the worker restarting every few minutes; I suspect the health check hits the endpoint before the cache is warm. ",
    "Given the schema below, write a query that returns the top 10 customers by revenue in 2023, excluding refunds. ",
    "Rewrite this function so it streams the file instead of reading it into memory, and add error handling for partial reads. ",
    "According to the release notes, version 3.2 deprecates the old config format, and 4.0 will remove it entirely. ",
    "Draft a postmortem for the outage on March 3rd: 47 minutes of elevated errors caused by an expired TLS certificate. ",
];

const CODE: &[&str] = &[
    "```rust\nuse std::collections::HashMap;\nuse std::io::{self, BufRead};\n\nfn count_words(input: impl BufRead) -> io::Result<HashMap<String, usize>> {\n    let mut counts = HashMap::new();\n    for line in input.lines() {\n        for word in line?.split_whitespace() {\n            *counts.entry(word.to_lowercase()).or_insert(0) += 1;\n        }\n    }\n    Ok(counts)\n}\n```\n",
    "```python\nimport json\nfrom dataclasses import dataclass\n\n@dataclass\nclass Order:\n    id: int\n    total: float\n    items: list[str]\n\ndef load(path: str) -> list[Order]:\n    with open(path) as f:\n        return [Order(**o) for o in json.load(f)[\"orders\"][::2]]\n```\n",
    "```bash\nset -euo pipefail\nfor f in logs/*.gz; do\n  zcat \"$f\" | grep -c ' 500 ' || true\ndone\ndocker compose up -d --scale worker=4\n```\n",
    "```sql\nSELECT c.id, c.name, SUM(o.total) AS revenue\nFROM customers c JOIN orders o ON o.customer_id = c.id\nWHERE o.created_at >= '2023-01-01' AND o.status <> 'refunded'\nGROUP BY c.id, c.name ORDER BY revenue DESC LIMIT 10;\n```\n",
    "```yaml\nservices:\n  api:\n    image: registry.example.com/api:1.24.3\n    ports: [\"8080:8080\"]\n    environment:\n      LOG_LEVEL: info\n      MAX_CONNECTIONS: \"200\"\n```\n",
    "```ts\nexport async function fetchUser(id: string): Promise<User> {\n  const res = await fetch(`/api/v2/users/${id}`, { headers: { Accept: 'application/json' } });\n  if (!res.ok) throw new Error(`HTTP ${res.status}`);\n  return res.json() as Promise<User>;\n}\n```\n",
    "{\"model\": \"gpt-4o\", \"temperature\": 0.2, \"max_tokens\": 1024, \"messages\": [{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"}]}\n",
    "{\"id\": \"evt_1OqX\", \"type\": \"invoice.paid\", \"created\": 1710513000, \"data\": {\"amount_due\": 4999, \"currency\": \"usd\", \"lines\": 3}}\n",
    "error[E0502]: cannot borrow `self.items` as mutable because it is also borrowed as immutable\n  --> src/cart.rs:42:9\n   |\n41 |     let first = &self.items[0];\n42 |     self.items.push(item);\n",
    "Traceback (most recent call last):\n  File \"/app/worker.py\", line 88, in run\n    result = handler(payload)\nKeyError: 'customer_id'\n",
    "2024-03-15T10:11:12.481Z INFO request completed method=GET path=/api/v1/items status=200 duration_ms=23\n",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8\nAuthor: CI <ci@example.invalid>\nDate:   Fri Mar 15 10:11:12 2024 +0000\n\n    fix: retry on 503\n",
];

const PII: &[&str] = &[
    "Contact the account owner at maria.garcia@example.com about the renewal. ",
    "Her number is +44 20 7946 0958 if the email bounces. ",
    "The card ending 1111 (4111 1111 1111 1111) was charged twice. ",
    "Requests from 203.0.113.42 hit the rate limit. ",
    "Payment went to DE89 3704 0044 0532 0130 00 yesterday. ",
    "Call (212) 555-0147 to confirm. ",
];

const CSV: &[&str] = &[
    "2024-03-15T10:11:12.123Z,web-17,10.0.3.4,200,1532,0.0231,48213,GET,/api/v1/items/8812\n",
    "2024-03-15T10:11:12.456Z,web-03,10.0.7.19,404,312,0.0042,48214,GET,/api/v1/items/99120\n",
    "2024-03-15T10:11:13.001Z,web-11,10.0.1.250,500,0,1.2004,48215,POST,/api/v1/orders\n",
];

const DIGITS: &[&str] = &[
    "[0.12, 0.53, 1.77, 2.01, 3.14, 12.5, 100.25, 1024, 2048, 4096, 65535, 1710513000]\n",
    "00000010: 4865 6c6c 6f2c 2077 6f72 6c64 2120 3132  Hello, world! 12\n",
    "id,qty,price,total\n1001,3,19.99,59.97\n1002,12,4.50,54.00\n1003,1,1299.00,1299.00\n",
    "Mar 15 10:11:12 host kernel: [12345.678901] eth0: link up 1000 Mbps full duplex\n",
    "{\"ts\": 1710513072123, \"cpu\": [12.5, 13.1, 9.8, 22.4], \"mem_mb\": 15360, \"disk_iops\": 4312}\n",
    "192.168.1.10 - - [15/Mar/2024:10:11:12 +0000] \"GET /index.html HTTP/1.1\" 200 5120 \"-\" \"curl/8.4.0\"\n",
    "order 100234987 shipped 2024-03-15, tracking 9400 1000 0000 0000 0000 00, weight 2.35 kg\n",
];

fn typical(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(TARGET + 4096);
    while s.len() < TARGET {
        match rng.below(20) {
            0..=10 => s.push_str(rng.pick(PROSE)),
            11..=17 => s.push_str(rng.pick(CODE)),
            18 => s.push_str(rng.pick(CSV)),
            _ => {
                if rng.below(4) == 0 {
                    s.push_str(rng.pick(PII));
                } else {
                    s.push_str(rng.pick(PROSE));
                }
            }
        }
    }
    s
}

fn digits(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(TARGET + 4096);
    while s.len() < TARGET {
        if rng.below(2) == 0 {
            s.push_str(rng.pick(CSV));
        } else {
            s.push_str(rng.pick(DIGITS));
        }
    }
    s
}

fn chat_json(text: &str) -> serde_json::Value {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(16 * 1024);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    let messages: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            serde_json::json!({"role": role, "content": c})
        })
        .collect();
    serde_json::json!({"model": "gpt-4o", "messages": messages})
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new();
    let rules = Rules::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let typical = typical(&mut rng);
    let digits = digits(&mut rng);
    let body = chat_json(&typical);

    let mut g = c.benchmark_group("pii");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, text) in [("typical", &typical), ("digits", &digits)] {
        g.throughput(Throughput::BytesDecimal(text.len() as u64));
        g.bench_function(format!("scan/{name}"), |b| {
            b.iter(|| scanner.scan(black_box(text)))
        });
        g.bench_function(format!("apply/{name}"), |b| {
            b.iter(|| scanner.apply(black_box(text), &rules).counts)
        });
    }
    g.throughput(Throughput::BytesDecimal(typical.len() as u64));
    g.bench_function("apply_json/chat_json", |b| {
        b.iter_batched(
            || body.clone(),
            |mut v| scanner.apply_json(&mut v, &rules, &["model", "role"]),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
