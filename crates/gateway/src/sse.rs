//! Splits a server-sent-events byte stream into events, keeping each event's bytes exactly
//! as received (the gateway forwards them unchanged), and reads the fields it meters.

use bytes::{Bytes, BytesMut};

/// Largest single event accepted from an upstream (a runaway line would otherwise grow
/// without bound).
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// An upstream event longer than [`MAX_EVENT_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("an upstream stream event exceeds {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLong;

#[derive(Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Where the search for the next blank line resumes.
    scanned: usize,
}

impl Splitter {
    /// Adds bytes; returns the complete events (each including its terminating blank line).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, EventTooLong> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match find_event_end(&self.buf[..], self.scanned) {
                Some(end) => {
                    out.push(self.buf.split_to(end).freeze());
                    self.scanned = 0;
                }
                None => {
                    self.scanned = self.buf.len().saturating_sub(3);
                    break;
                }
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLong);
        }
        Ok(out)
    }

    /// Whatever is left when the stream ends (an event without its blank line).
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// End (exclusive) of the first event: after `\n\n`, `\r\n\r\n` or `\r\r`.
fn find_event_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = memchr_any(&b[i..]) {
        let j = i + p;
        if b[j] == b'\n' {
            if b.get(j + 1) == Some(&b'\n') {
                return Some(j + 2);
            }
            if b.get(j + 1) == Some(&b'\r') && b.get(j + 2) == Some(&b'\n') {
                return Some(j + 3);
            }
        } else if b.get(j + 1) == Some(&b'\r') {
            return Some(j + 2);
        }
        i = j + 1;
    }
    None
}

fn memchr_any(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n' || c == b'\r')
}

/// The `event:` name and the joined `data:` lines of one event.
pub fn fields(event: &[u8]) -> (Option<&str>, String) {
    let text = std::str::from_utf8(event).unwrap_or("");
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim_start());
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_pushes_and_line_endings() {
        let mut s = Splitter::default();
        let mut got = Vec::new();
        for piece in [
            &b"data: {\"a\""[..],
            b":1}\n",
            b"\ndata: x\r\n\r\nevent: e\n",
            b"data: y\n\n",
            b"data: tail",
        ] {
            got.extend(s.push(piece).unwrap());
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"data: {\"a\":1}\n\n"),
                Bytes::from_static(b"data: x\r\n\r\n"),
                Bytes::from_static(b"event: e\ndata: y\n\n")
            ]
        );
        assert_eq!(s.rest().unwrap(), Bytes::from_static(b"data: tail"));
        assert_eq!(
            fields(b"event: message_delta\ndata: {\"x\":\ndata: 1}\n\n"),
            (Some("message_delta"), "{\"x\":\n1}".to_string())
        );
    }

    #[test]
    fn byte_at_a_time() {
        let input = b"event: a\ndata: 1\n\ndata: 2\n\n";
        let mut s = Splitter::default();
        let mut got = Vec::new();
        for b in input {
            got.extend(s.push(&[*b]).unwrap());
        }
        assert_eq!(got.concat(), input.to_vec());
        assert_eq!(got.len(), 2);
    }
}
