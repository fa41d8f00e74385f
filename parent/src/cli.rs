//! The command line, shared by the `bidding-parent` binary and `bidctl` (whose demo and
//! benchmarks run the parent as a child process of itself).

use crate::aws::Env;
use crate::config::{self, Cli, LogFormat};
use crate::log::Logger;
use crate::run::{self, Exit};
use clap::Parser;
use std::process::ExitCode;

pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>, env: Env) -> ExitCode {
    // `bidding-parent manifest ...` makes the manifest; everything else runs the auction. A
    // word rather than a clap subcommand keeps the proof of concept's `bidding-parent CID PORT`.
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let make_manifest = args.get(1).is_some_and(|a| a == "manifest");
    if make_manifest {
        args.remove(1);
    }
    let json_asked = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && json_asked => {
            // A machine reads stderr: one JSON line, the first line of clap's message.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            Logger::new(LogFormat::Json).error(&format!(
                "command line: {first} (bidding-parent --help lists the flags)"
            ));
            return ExitCode::from(Exit::Config as u8);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Config as u8
            } else {
                0
            });
        }
    };
    // Configuration errors go out in the log format asked for: by flag, else by the config
    // file when it can be read.
    let format = cli
        .log_format
        .or_else(|| {
            cli.config
                .as_deref()
                .and_then(|p| config::read_file(p).ok())
                .and_then(|f| f.log_format)
        })
        .unwrap_or_default();
    let settings = match config::load(cli, &|k| env.get(k)) {
        Ok(s) => s,
        Err(errors) => {
            let log = Logger::new(format);
            for e in &errors {
                log.error(&format!("configuration error: {e}"));
            }
            return ExitCode::from(Exit::Config as u8);
        }
    };
    let log = Logger::new(settings.log_format);
    on_interrupt(&settings);
    if make_manifest {
        return match run::make_manifest(&settings, env, &log) {
            Ok(_) => ExitCode::from(Exit::Success as u8),
            Err(e) => {
                log.error(&e.message);
                ExitCode::from(e.exit as u8)
            }
        };
    }
    match run::run(&settings, env, &log) {
        Ok(_) => ExitCode::from(Exit::Success as u8),
        Err(e) => {
            log.error(&e.message);
            ExitCode::from(e.exit as u8)
        }
    }
}

/// Ctrl-C, SIGTERM or SIGHUP: one line saying what was written, then exit 130. Results are
/// written only after the enclave's result is verified, `output.csv` last, so a run
/// interrupted before then wrote nothing, and one interrupted while writing left either the
/// whole result (`output.csv` written) or none published: the next run checks which. (A
/// handler may already be set when bidctl runs the parent in its own process; then bidctl's
/// stays.)
fn on_interrupt(settings: &config::Settings) {
    let format = settings.log_format;
    let out = format!("s3://{}/{}", settings.output.bucket, settings.output.prefix);
    let key = settings.output.key.clone();
    let _ = ctrlc::set_handler(move || {
        let what = match run::WRITING.load(std::sync::atomic::Ordering::SeqCst) {
            // The last write may have reached S3 before the signal: say so, not "nothing".
            run::WRITING_RESULTS => format!(
                "interrupted while writing the results to {out}: {key} is written last, so either the whole result is published (the next run checks, and says the auction is decided) or no new one is; run again"
            ),
            run::WRITING_MANIFEST => format!(
                "interrupted while writing the manifest to {out}: it may or may not be there; run `bidding-parent manifest` again"
            ),
            _ => format!("interrupted; nothing was written to {out}"),
        };
        Logger::new(format).error(&what);
        std::process::exit(130);
    });
}
