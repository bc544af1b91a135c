//! Finds where a chunked body ends while its bytes pass through unchanged (chunk extensions
//! and trailers included). Strict about CRLF so the proxy and the server agree on the end.

/// How long a chunk-size line (size and extensions) may be.
const MAX_SIZE_LINE: usize = 4096;
/// How long the trailer section may be.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size line")]
    BadSize,
    #[error("chunk size line too long")]
    SizeLineTooLong,
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    #[error("malformed or oversized trailers")]
    BadTrailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions up to CR.
    Ext {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Tracks one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedScanner {
    /// Reads the next bytes of the body. `Some(n)`: the body ended after `n` bytes of
    /// `data` (the rest belongs to whatever follows); `None`: all of `data` is body.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            if let State::Data { left } = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { value, digits } => {
                self.line += 1;
                if let Some(d) = (b as char).to_digit(16) {
                    if digits >= 15 {
                        return Err(ChunkError::BadSize);
                    }
                    State::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                    }
                } else if digits == 0 {
                    return Err(ChunkError::BadSize);
                } else if b == b'\r' {
                    State::SizeLf { value }
                } else if b == b';' || b == b' ' || b == b'\t' {
                    State::Ext { value }
                } else {
                    return Err(ChunkError::BadSize);
                }
            }
            State::Ext { value } => {
                self.line += 1;
                if self.line > MAX_SIZE_LINE {
                    return Err(ChunkError::SizeLineTooLong);
                }
                match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkError::BadSize),
                    _ => State::Ext { value },
                }
            }
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(ChunkError::BadSize);
                }
                self.line = 0;
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data { left: value }
                }
            }
            // `feed` consumes data in bulk; one byte at a time is the same thing.
            State::Data { left } if left > 1 => State::Data { left: left - 1 },
            State::Data { .. } => State::DataCr,
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(ChunkError::BadChunkEnd),
            State::TrailerStart | State::TrailerLine | State::TrailerLf | State::FinalLf => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkError::BadTrailers);
                }
                match (self.state, b) {
                    (State::TrailerStart, b'\r') => State::FinalLf,
                    (State::FinalLf, b'\n') => State::Done,
                    (State::TrailerStart | State::TrailerLine, b'\n') => {
                        return Err(ChunkError::BadTrailers)
                    }
                    (State::TrailerLine, b'\r') => State::TrailerLf,
                    (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                    (State::TrailerLf, b'\n') => State::TrailerStart,
                    _ => return Err(ChunkError::BadTrailers),
                }
            }
            State::Done => State::Done,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns where it ended.
    fn end(body: &[u8], step: usize) -> Result<Option<usize>, ChunkError> {
        let mut s = ChunkedScanner::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(n) = s.feed(piece)? {
                return Ok(Some(at + n));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_in_any_split() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let want = body.len() - 4;
        for step in 1..=body.len() {
            assert_eq!(end(body, step), Ok(Some(want)), "step {step}");
        }
        assert_eq!(end(b"0\r\n\r\n", 3), Ok(Some(5)));
        assert_eq!(end(b"A\r\n0123456789\r\n", 4), Ok(None));
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(end(b"\r\n", 9), Err(ChunkError::BadSize));
        assert_eq!(end(b"x\r\n", 9), Err(ChunkError::BadSize));
        assert_eq!(end(b"5\nhello", 9), Err(ChunkError::BadSize));
        assert_eq!(end(b"1\r\nab\r\n", 9), Err(ChunkError::BadChunkEnd));
        assert_eq!(end(b"ffffffffffffffff\r\n", 9), Err(ChunkError::BadSize));
        assert_eq!(end(b"0\r\nX: 1\n\r\n", 9), Err(ChunkError::BadTrailers));
        let long = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(end(&long, 100), Err(ChunkError::SizeLineTooLong));
    }
}
