//! Shared by the integration tests: start `fakellm` on a free port and stop it on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `fakellm`, killed when dropped.
pub struct Fake {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Fake {
    /// Starts the binary with `extra` arguments and waits for its `{"listen":...}` line.
    pub fn start(extra: &[&str]) -> Fake {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fakellm"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fakellm");
        let stdout = child.stdout.take().expect("fakellm stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listen line");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("fakellm printed {line:?}, not JSON: {e}"));
        let addr = v["listen"].as_str().expect("listen field").to_string();
        Fake { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
