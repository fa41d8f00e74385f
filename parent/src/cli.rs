//! The command line, shared by the `bidding-parent` binary and `bidctl` (whose demo and
//! benchmarks run the parent as a child process of itself).

use crate::aws::Env;
use crate::config::{self, Cli};
use crate::log::Logger;
use crate::run::{self, Exit};
use clap::Parser;
use std::process::ExitCode;

pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>, env: Env) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Config as u8
            } else {
                0
            });
        }
    };
    let settings = match config::load(cli, &|k| env.get(k)) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("bidding-parent: configuration error: {e}");
            }
            return ExitCode::from(Exit::Config as u8);
        }
    };
    let log = Logger::new(settings.log_format);
    match run::run(&settings, env, &log) {
        Ok(_) => ExitCode::from(Exit::Success as u8),
        Err(e) => {
            log.error(&e.message);
            ExitCode::from(e.exit as u8)
        }
    }
}
