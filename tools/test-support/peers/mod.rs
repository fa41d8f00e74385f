//! The Python peers' command-line tools (AWS's own clients), installed by tools/test.sh in the
//! venv beside `BIDDING_PYTHON`.

use std::path::{Path, PathBuf};

/// The script `name` beside `BIDDING_PYTHON` (`what` says what it is), or `None` after one line
/// saying why `test` skips. With `BIDDING_REQUIRE_PEERS=1` a missing peer fails instead, so
/// no interop test can quietly skip.
pub fn peer_tool(name: &str, what: &str, test: &str) -> Option<PathBuf> {
    let required = std::env::var("BIDDING_REQUIRE_PEERS").as_deref() == Ok("1");
    let found = std::env::var("BIDDING_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .and_then(|p| Path::new(&p).parent().map(|d| d.join(name)))
        .filter(|tool| tool.is_file());
    match found {
        Some(tool) => Some(tool),
        None if required => panic!(
            "BIDDING_REQUIRE_PEERS=1 but no `{name}` ({what}) beside BIDDING_PYTHON (run \
             tools/test.sh)"
        ),
        None => {
            println!(
                "{test}: skipped: no `{name}` ({what}) beside BIDDING_PYTHON (tools/test.sh \
                 installs it in target/peers-venv)"
            );
            None
        }
    }
}
