//! boto3 against the KMS emulator, over HTTPS with the emulator's CA and over plain HTTP:
//! botocore's SigV4 signer is AWS's reference, so its requests verifying here (and its
//! deliberate mistakes failing with the right errors) is evidence that our verification
//! agrees with AWS's. Needs `BIDDING_PYTHON`, a Python with boto3 (`tools/test.sh` makes one);
//! without it the test says it is skipped, unless `BIDDING_REQUIRE_PEERS=1`.

#[path = "../../test-support/common/mod.rs"]
mod common;

use common::*;

fn python() -> Option<String> {
    match std::env::var("BIDDING_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("BIDDING_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("BIDDING_REQUIRE_PEERS=1 but BIDDING_PYTHON is not set (run tools/test.sh)")
        }
        _ => {
            println!(
                "kms_boto3: skipped: BIDDING_PYTHON is not set (tools/test.sh sets it to a venv with boto3)"
            );
            None
        }
    }
}

fn run_peer(python: &str, emu: &Emu, ca: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../test-support/peers/kms_boto3.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .args([
            &emu.running().endpoint(),
            ca,
            ALICE,
            ALICE_SECRET,
            "us-east-1",
        ])
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("running the boto3 peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "boto3 peer failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boto3_round_trips_and_gets_aws_errors() {
    let Some(python) = python() else { return };
    let emu = Emu::start(None);
    let ca = emu.running().ca_pem().to_string_lossy().into_owned();
    run_peer(&python, &emu, &ca);

    let plain = Emu::start_with(None, |c| c.plain_http = true);
    run_peer(&python, &plain, "-");
}
