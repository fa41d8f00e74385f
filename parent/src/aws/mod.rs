//! The parent's AWS plumbing: one HTTP agent, the standard credential chain, and an S3 client
//! small enough to read (GET and PUT of whole objects is all the parent does).
//!
//! Nothing here reads the process environment directly: everything takes an [`Env`], so the
//! binary passes [`Env::process`] and tests pass a map.
//!
//! Every error's `Display` is complete on its own (what was asked, of whom, what came back)
//! and none has a `source()` chain, so that printing with `{:#}` does not say it twice.

pub mod credentials;
pub mod env;
pub mod http;
pub mod s3;

pub use env::Env;

/// Text from a peer (or a key name), made safe for one log line: control characters are
/// escaped, and length is bounded.
pub(crate) fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}
