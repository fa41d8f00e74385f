//! One line per event on stderr (the console in debug mode). Callers log lifecycle, counts,
//! timings and errors; never an amount, a plaintext, a key or a credential.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::logging::line(format_args!($($t)*)) };
}

pub fn line(args: std::fmt::Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = bidding_core::sigv4::format_amz_date(
        UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs()),
    );
    let text = format!("{stamp} enclave-init: {args}\n");
    // One write per line so lines from different threads do not interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
