//! The provider-independent part of an answer: which text a request carries, how many tokens
//! it "costs", and which words the fake replies with. Pure; the rules are the ones documented
//! in this crate's README, and tests elsewhere rely on them exactly.

use serde_json::Value;

use crate::directives::{self, DirectiveError, Directives};

/// Fixed token overhead counted for every message (system prompts and instructions count as
/// one message each).
pub const PER_MESSAGE_OVERHEAD: u64 = 3;

/// At most this many characters of the last user text are echoed back.
pub const ECHO_CHARS: usize = 200;

/// The first word of every reply.
pub const ECHO_PREFIX: &str = "echo:";

/// Number of whitespace-separated words in `text`.
pub fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// All text in a message `content` (a string, or a list of parts), parts joined by spaces.
/// Parts with a string `text` count (OpenAI `text`/`input_text`/`output_text`, Anthropic
/// `text`); Anthropic `tool_result` parts count through their own `content`; images and
/// other parts count nothing.
pub fn content_text(content: &Value) -> String {
    let mut out = String::new();
    collect_text(content, &mut out);
    out
}

fn collect_text(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => push_word_run(out, s),
        Value::Array(parts) => {
            for part in parts {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    push_word_run(out, t);
                } else if let Some(inner) = part.get("content") {
                    collect_text(inner, out);
                }
            }
        }
        _ => {}
    }
}

fn push_word_run(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(s);
}

/// The prompt side of a request, gathered by each provider's parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Text of every message (system and instructions included), one entry per message.
    pub messages: Vec<String>,
    /// Text of the last user message: directives are read from it, and it is echoed.
    pub last_user: String,
    /// The completion cap the request asked for, if any.
    pub max_tokens: Option<u64>,
}

impl Prompt {
    /// `words + PER_MESSAGE_OVERHEAD` summed over the messages.
    pub fn tokens(&self) -> u64 {
        self.messages
            .iter()
            .map(|m| words(m) + PER_MESSAGE_OVERHEAD)
            .sum()
    }
}

/// What the fake answers to one request, before it is put in a provider's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub directives: Directives,
    /// Prompt tokens (OpenAI `prompt_tokens`/`input_tokens`; for Anthropic this is
    /// `input_tokens + cache_read_input_tokens`).
    pub prompt_tokens: u64,
    /// Cached prompt tokens (`cached_tokens` / `cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// The reply, one word per stream chunk.
    pub reply: Vec<String>,
    /// Completion tokens for one choice (OpenAI multiplies by `n` unless `usage=` is given).
    pub completion_tokens: u64,
    /// True when `usage=` fixed the numbers (they are then reported as given).
    pub usage_fixed: bool,
    /// True when `max_tokens` cut the reply short.
    pub truncated: bool,
}

impl Exchange {
    /// Applies the documented rules to a prompt.
    pub fn new(prompt: &Prompt) -> Result<Exchange, DirectiveError> {
        let directives = directives::parse(&prompt.last_user)?;
        let stripped = directives::strip(&prompt.last_user);
        let normalized = stripped.split_whitespace().collect::<Vec<_>>().join(" ");
        let echoed: String = normalized.chars().take(ECHO_CHARS).collect();
        let mut reply: Vec<String> = std::iter::once(ECHO_PREFIX)
            .chain(echoed.split_whitespace())
            .map(str::to_string)
            .collect();
        if let Some(n) = directives.chunks {
            let base = reply.clone();
            reply = base
                .iter()
                .cycle()
                .take(usize::try_from(n).unwrap_or(usize::MAX))
                .cloned()
                .collect();
        }
        let mut truncated = false;
        if let Some(max) = prompt.max_tokens {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if reply.len() > max {
                reply.truncate(max);
                truncated = true;
            }
        }
        let (prompt_tokens, completion_tokens) = match directives.usage {
            Some((p, c)) => (p, c),
            None => (prompt.tokens(), reply.len() as u64),
        };
        Ok(Exchange {
            cached_tokens: directives.cached,
            usage_fixed: directives.usage.is_some(),
            directives,
            prompt_tokens,
            reply,
            completion_tokens,
            truncated,
        })
    }

    /// The reply as one string.
    pub fn text(&self) -> String {
        self.reply.join(" ")
    }

    /// The text of stream delta `i`: the word, with a leading space after the first.
    pub fn delta(&self, i: usize) -> String {
        if i == 0 {
            self.reply[0].clone()
        } else {
            format!(" {}", self.reply[i])
        }
    }

    /// How many content deltas go out before a `cut` or `stream_error` strikes.
    pub fn deltas_before_fault(&self) -> usize {
        self.reply.len().min(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(messages: &[&str], last_user: &str, max: Option<u64>) -> Prompt {
        Prompt {
            messages: messages.iter().map(|s| s.to_string()).collect(),
            last_user: last_user.to_string(),
            max_tokens: max,
        }
    }

    #[test]
    fn content_text_reads_strings_and_text_parts() {
        assert_eq!(content_text(&json!("a b")), "a b");
        let parts = json!([
            {"type": "text", "text": "one two"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "input_text", "text": "three"},
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "four"}]},
        ]);
        assert_eq!(content_text(&parts), "one two three four");
        assert_eq!(content_text(&json!(null)), "");
    }

    #[test]
    fn usage_formula() {
        let p = prompt(
            &["be brief", "hello there world"],
            "hello there world",
            None,
        );
        let e = Exchange::new(&p).unwrap();
        assert_eq!(e.prompt_tokens, 2 + 3 + 3 + 3);
        assert_eq!(e.text(), "echo: hello there world");
        assert_eq!(e.completion_tokens, 4);
        assert!(!e.truncated);
    }

    #[test]
    fn directives_are_not_echoed_but_count_as_prompt_words() {
        let p = prompt(&["hi [[fake:cached=2]]"], "hi [[fake:cached=2]]", None);
        let e = Exchange::new(&p).unwrap();
        assert_eq!(e.text(), "echo: hi");
        assert_eq!(e.prompt_tokens, 2 + 3);
        assert_eq!(e.cached_tokens, 2);
    }

    #[test]
    fn max_tokens_caps_the_reply() {
        let p = prompt(&["a b c d e"], "a b c d e", Some(3));
        let e = Exchange::new(&p).unwrap();
        assert_eq!(e.reply, ["echo:", "a", "b"]);
        assert_eq!(e.completion_tokens, 3);
        assert!(e.truncated);
    }

    #[test]
    fn chunks_cycles_the_reply() {
        let p = prompt(&["x [[fake:chunks=5]]"], "x [[fake:chunks=5]]", None);
        let e = Exchange::new(&p).unwrap();
        assert_eq!(e.reply, ["echo:", "x", "echo:", "x", "echo:"]);
        assert_eq!(e.completion_tokens, 5);
        assert_eq!(e.delta(0), "echo:");
        assert_eq!(e.delta(1), " x");
    }

    #[test]
    fn usage_directive_is_reported_as_given() {
        let p = prompt(
            &["x [[fake:usage=100,7]]"],
            "x [[fake:usage=100,7]]",
            Some(1),
        );
        let e = Exchange::new(&p).unwrap();
        assert_eq!((e.prompt_tokens, e.completion_tokens), (100, 7));
        assert!(e.usage_fixed);
    }

    #[test]
    fn echo_is_limited_to_200_characters() {
        let long = "abcd ".repeat(100);
        let e = Exchange::new(&prompt(&[&long], &long, None)).unwrap();
        // 200 characters of "abcd abcd ..." are 40 words; plus the prefix.
        assert_eq!(e.reply.len(), 41);
    }
}
