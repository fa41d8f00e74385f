//! Log lines on stderr: human by default, one JSON object per line for machines. The parent
//! never holds a bid amount, and credentials never reach a log line.

use crate::config::LogFormat;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Logger {
    format: LogFormat,
    progress_shown: Mutex<bool>,
    terminal: bool,
}

impl Logger {
    pub fn new(format: LogFormat) -> Self {
        Logger {
            format,
            progress_shown: Mutex::new(false),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn info(&self, msg: &str) {
        self.line("info", msg, None);
    }

    /// An info line that also carries machine-readable fields (in the JSON format).
    pub fn info_with(&self, msg: &str, fields: serde_json::Value) {
        self.line("info", msg, Some(fields));
    }
    pub fn warn(&self, msg: &str) {
        self.line("warn", msg, None);
    }
    pub fn error(&self, msg: &str) {
        self.line("error", msg, None);
    }

    fn line(&self, level: &str, msg: &str, fields: Option<serde_json::Value>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let text = match self.format {
            LogFormat::Human => {
                let stamp = bidding_core::sigv4::format_amz_date(
                    UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs()),
                );
                // Clear a progress line first so the log stays readable.
                let clear = if *shown { "\r\x1b[2K" } else { "" };
                format!("{clear}{stamp} bidding-parent {level}: {msg}\n")
            }
            LogFormat::Json => {
                let mut v = serde_json::json!({
                    "ts_ms": now.as_millis() as u64,
                    "level": level,
                    "msg": msg,
                });
                v["program"] = "bidding-parent".into();
                if let Some(serde_json::Value::Object(extra)) = fields {
                    for (k, x) in extra {
                        v[k] = x;
                    }
                }
                format!("{v}\n")
            }
        };
        *shown = false;
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// A progress line, only when stderr is a terminal and the format is human.
    pub fn progress(&self, done: usize, total: usize) {
        if !self.terminal || self.format != LogFormat::Human {
            return;
        }
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let width = 30;
        let filled = done.saturating_mul(width) / total.max(1);
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let _ = write!(std::io::stderr().lock(), "\r[{bar}] {done}/{total} lots");
        *shown = true;
    }
}
