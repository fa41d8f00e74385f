//! The enclave's limits as an input PCR0 measures: a limits file in the image.
//!
//! `bidctl initramfs --limits FILE` writes FILE as `/limits` into the way-1 image, whose bytes
//! PCR0 covers; enclave-init, as PID 1, reads `/limits` when it is there and applies it before
//! its command line (`--limits-file PATH` does the same anywhere, for way 2's `CMD` and for
//! tests). So an image is built per set of limits, and a buyer who pins its PCR0 pins them too:
//! the operator cannot raise a limit (and the memory it costs) without a new PCR0.
//!
//! The file holds one limit per line as the flag it stands for, `--max-lots=500000`; blank
//! lines and lines starting with `#` are skipped. Only the limit flags ([`LIMIT_FLAGS`]) are
//! allowed, each at most once, with a positive decimal value: an image's limits file cannot
//! carry anything else (a listen address, a CA, a dev-only switch).

use std::ffi::OsString;

/// Where the image keeps its limits file; enclave-init as PID 1 reads it when present.
pub const LIMITS_PATH: &str = "/limits";

/// The flags a limits file may set (enclave-init's `--help` says what each bounds).
pub const LIMIT_FLAGS: &[&str] = &[
    "--max-lots",
    "--max-bids",
    "--max-file-bytes",
    "--max-pending-bids",
    "--replay-capacity",
];

/// Parses a limits file into the arguments it stands for, checking every line.
pub fn parse(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = i + 1;
        let (flag, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {at}: `{line}` is not --NAME=VALUE"))?;
        let (flag, value) = (flag.trim(), value.trim());
        if !LIMIT_FLAGS.contains(&flag) {
            return Err(format!(
                "line {at}: `{flag}` is not a limit (only {})",
                LIMIT_FLAGS.join(", ")
            ));
        }
        if value.is_empty()
            || !value.bytes().all(|b| b.is_ascii_digit())
            || value.parse::<u64>().map_or(true, |v| v == 0)
        {
            return Err(format!(
                "line {at}: {flag}: `{value}` is not a positive whole number"
            ));
        }
        if out.iter().any(|a| a.starts_with(&format!("{flag}="))) {
            return Err(format!("line {at}: {flag} is given twice"));
        }
        out.push(format!("{flag}={value}"));
    }
    Ok(out)
}

/// The command line with the limits file applied: `--limits-file PATH` (taken out), else, as
/// PID 1, [`LIMITS_PATH`] when it exists. The file's flags go right after the program name, so
/// later command-line words still win (they are measured too: the kernel command line is in
/// PCR0). Returns the arguments and the applied limits, for the log.
pub fn apply(
    mut argv: Vec<OsString>,
    pid1: bool,
    read: impl Fn(&str) -> Option<std::io::Result<String>>,
) -> Result<(Vec<OsString>, Vec<String>), String> {
    let mut path: Option<String> = None;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].to_string_lossy().into_owned();
        if a == "--limits-file" {
            let p = argv
                .get(i + 1)
                .ok_or("--limits-file needs a path")?
                .to_string_lossy()
                .into_owned();
            argv.drain(i..i + 2);
            path = Some(p);
        } else if let Some(p) = a.strip_prefix("--limits-file=") {
            path = Some(p.to_owned());
            argv.remove(i);
        } else {
            i += 1;
        }
    }
    let (path, required) = match path {
        Some(p) => (p, true),
        None if pid1 => (LIMITS_PATH.to_owned(), false),
        None => return Ok((argv, Vec::new())),
    };
    let text = match read(&path) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return Err(format!("limits file {path}: {e}")),
        None if required => return Err(format!("limits file {path}: no such file")),
        None => return Ok((argv, Vec::new())),
    };
    let limits = parse(&text).map_err(|e| format!("limits file {path}, {e}"))?;
    let at = 1.min(argv.len());
    argv.splice(at..at, limits.iter().map(OsString::from));
    Ok((argv, limits))
}

/// Reads a file for [`apply`]: `None` when it does not exist.
pub fn read_file(path: &str) -> Option<std::io::Result<String>> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_limits_positive_and_once() {
        assert_eq!(
            parse("# limits\n--max-lots=10\n\n --max-bids = 20 \n").unwrap(),
            ["--max-lots=10", "--max-bids=20"]
        );
        for bad in [
            "--listen=vsock:any:1",
            "--kms-ca=/x",
            "--max-lots",
            "--max-lots=0",
            "--max-lots=-1",
            "--max-lots=1e6",
            "--max-lots=1\n--max-lots=2",
            "max-lots=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn applied_before_the_command_line() {
        let read = |p: &str| (p == "/limits").then(|| Ok("--max-lots=7\n".to_owned()));
        let (argv, applied) = apply(os(&["/init", "--max-bids", "9"]), true, read).unwrap();
        assert_eq!(argv, os(&["/init", "--max-lots=7", "--max-bids", "9"]));
        assert_eq!(applied, ["--max-lots=7"]);
        // Not PID 1 and no --limits-file: nothing read.
        let (argv, applied) = apply(os(&["x"]), false, read).unwrap();
        assert_eq!((argv, applied.len()), (os(&["x"]), 0));
        // PID 1 without /limits: the built-in defaults.
        let none = |_: &str| None;
        assert_eq!(apply(os(&["/init"]), true, none).unwrap().1.len(), 0);
        // --limits-file must exist, and is taken out of the arguments.
        assert!(apply(os(&["x", "--limits-file", "/nope"]), false, none).is_err());
        let read = |p: &str| (p == "/l").then(|| Ok("--replay-capacity=5".to_owned()));
        let (argv, _) = apply(
            os(&["x", "--limits-file=/l", "--no-heartbeat"]),
            false,
            read,
        )
        .unwrap();
        assert_eq!(argv, os(&["x", "--replay-capacity=5", "--no-heartbeat"]));
        let bad = |_: &str| Some(Ok("--listen=unix:/x".to_owned()));
        assert!(
            apply(os(&["/init"]), true, bad)
                .unwrap_err()
                .contains("not a limit")
        );
    }
}
