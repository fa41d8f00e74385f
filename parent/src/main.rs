use bidding_parent::aws::Env;
use bidding_parent::config::{self, Cli};
use bidding_parent::log::Logger;
use bidding_parent::run::{self, Exit};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::process();
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
