//! A whole sealed auction under the deployment's own policies. The bucket, key and IAM
//! policies are loaded straight from `deploy/buyer.yaml` and `deploy/operator.yaml`, resolved
//! for this stack's parameters by `tools/scripts/cfn_resolve.py` (cfn-lint's CloudFormation YAML
//! decoder), and enforced across accounts: the operator in its account, each buyer in its own;
//! the local S3 (over TLS, so the templates' TlsOnly denies hold) applies the bucket policies
//! and the operator role's IAM policy, the KMS emulator the key policies and the same IAM
//! policy. Buyer1 names a user as its administrator, Buyer2 leaves it to its account root.
//!
//! The buyers' steps (`bidctl encrypt` to this auction's own key, `bidctl seal --upload` from
//! the operator's bucket, which puts the seal beside it), the operator's (`bidding-parent
//! manifest`, the run) and the buyers fetching and verifying their results all go through; and
//! each denial that must happen does: the operator's role reading a bid object it was not
//! given, decrypting a bid outside the attested enclave, or calling kms:Encrypt on a buyer's
//! key; a buyer reading another's bids, or another auction's results, or writing to the output
//! bucket; a principal of Buyer1's account granted kms:Encrypt making a seal (it may still
//! encrypt bids); and a buyer's own result before it exists is AccessDenied, not NoSuchKey.
//!
//! Needs Python with cfn-lint (tools/test.sh installs it in target/peers-venv).

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_core::manifest::{SEAL_MARKER, seal_context};
use bidding_core::names::{AuctionId, BuyerName};
use bidding_standins::kms_emulator::{self, Principal, state};
use bidding_standins::stack::{
    ACCOUNT, Buyer, OPERATOR_ROLE, OUTPUT_BUCKET, StackOptions, buyer_account, buyer_arn,
    new_credentials,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const AUCTION: &str = "deploy-2026";
/// Where each buyer's bid file goes, as the README and auction.toml.example lay it out: under
/// buyer.yaml's BidKeyPrefix, one key per auction (the seal beside it).
const BID_KEY: &str = "bids/deploy-2026/encrypted.csv";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Python with cfn-lint, or `None` after saying why the test skips (a failure with
/// `BIDDING_REQUIRE_PEERS=1`).
fn python() -> Option<String> {
    let required = std::env::var("BIDDING_REQUIRE_PEERS").as_deref() == Ok("1");
    let python = std::env::var("BIDDING_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let ok = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import cfnlint"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match (ok, required) {
        (true, _) => python,
        (false, true) => panic!("BIDDING_REQUIRE_PEERS=1 but BIDDING_PYTHON has no cfn-lint"),
        (false, false) => {
            println!("deploy_policies: skipped: BIDDING_PYTHON with cfn-lint (tools/test.sh)");
            None
        }
    }
}

/// The template resolved as CloudFormation would deploy it with these values.
fn resolve(python: &str, template: &str, account: &str, args: &[(&str, String)]) -> Value {
    let mut c = Command::new(python);
    c.arg(repo().join("tools/scripts/cfn_resolve.py"))
        .arg(repo().join("deploy").join(template))
        .args(["--account", account]);
    for (flag, value) in args {
        c.arg(flag).arg(value);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "cfn_resolve {template}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A buyer's shell: the AWS CLI's environment, as dev-stack prints it.
fn buyer_cmd(w: &World, b: &Buyer, home: &Path) -> Command {
    let mut c = Command::new(exe());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", &b.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            b.credentials.secret_access_key.expose(),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_S3", w.stack.s3.endpoint())
        .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
        .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

fn ok(o: std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{what}: {err}");
    err
}

fn denied<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> String {
    match r {
        Ok(v) => panic!("{what} was allowed: {v:?}"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("AccessDenied"), "{what}: not AccessDenied: {e}");
            e
        }
    }
}

#[test]
fn a_sealed_auction_under_the_deployments_own_policies() {
    let Some(python) = python() else { return };
    let w = world(
        &["Buyer1", "Buyer2"],
        StackOptions {
            enforce_policies: true,
            ..StackOptions::default()
        },
    );
    let s = &w.stack;
    let pcr0 = hex::encode(s.pcr0);
    let kms_dir = s.dir.join("kms");
    let b1 = s.buyer("Buyer1").unwrap();
    let b2 = s.buyer("Buyer2").unwrap();
    assert_ne!(buyer_account(&b1.name), ACCOUNT);
    assert_ne!(buyer_account(&b1.name), buyer_account(&b2.name));

    // Each buyer deploys buyer.yaml in its own account: the key policy onto its key (through
    // KMS, as CloudFormation would), the bucket policy onto its bucket.
    let mut bid_objects = Vec::new();
    for (b, admin) in [(b1, buyer_arn(&b1.name)), (b2, String::new())] {
        let account = buyer_account(&b.name);
        let r = resolve(
            &python,
            "buyer.yaml",
            &account,
            &[
                ("--param", format!("OperatorRoleArn={OPERATOR_ROLE}")),
                ("--param", format!("Pcr0={pcr0}")),
                ("--param", format!("AdministratorArn={admin}")),
                ("--ref", format!("BidBucket={}", b.bucket)),
                ("--attr", format!("BidBucket.Arn=arn:aws:s3:::{}", b.bucket)),
                ("--attr", format!("BidKey.Arn={}", b.key)),
            ],
        );
        let key_policy = &r["Resources"]["BidKey"]["Properties"]["KeyPolicy"];
        s.kms_client(&b.credentials)
            .unwrap()
            .put_key_policy(b.key.as_str(), &key_policy.to_string())
            .unwrap_or_else(|e| panic!("{}: buyer.yaml's key policy: {e}", b.name));
        let bucket_policy = &r["Resources"]["BidBucketPolicy"]["Properties"]["PolicyDocument"];
        s.s3.put_bucket_policy(&b.bucket, &bucket_policy.to_string())
            .unwrap_or_else(|e| panic!("{}: buyer.yaml's bucket policy: {e}", b.name));
        bid_objects.push(r["Outputs"]["BidObjectArns"].as_str().unwrap().to_owned());
    }

    // The operator deploys operator.yaml with the buyers' outputs and this auction's buyers.
    let r = resolve(
        &python,
        "operator.yaml",
        ACCOUNT,
        &[
            ("--param", "VpcId=vpc-0123".into()),
            ("--param", "ImageId=ami-0123456789abcdef0".into()),
            ("--param", format!("AuctionId={AUCTION}")),
            (
                "--param",
                format!(
                    "BuyerPrincipals={},arn:aws:iam::{}:root",
                    buyer_arn(&b1.name),
                    buyer_account(&b2.name)
                ),
            ),
            ("--param", format!("BuyerKeyArns={},{}", b1.key, b2.key)),
            (
                "--param",
                format!("BuyerBidObjectArns={}", bid_objects.join(",")),
            ),
            ("--ref", format!("OutputBucket={OUTPUT_BUCKET}")),
            (
                "--attr",
                format!("OutputBucket.Arn=arn:aws:s3:::{OUTPUT_BUCKET}"),
            ),
            ("--ref", "InstanceRole=bidding-parent".into()),
            ("--attr", format!("InstanceRole.Arn={OPERATOR_ROLE}")),
            ("--ref", "InstanceProfile=bidding-parent".into()),
            (
                "--attr",
                "InstanceProfile.Arn=arn:aws:iam::111122223333:instance-profile/bidding-parent"
                    .into(),
            ),
            ("--ref", "SecurityGroup=sg-0123".into()),
            ("--ref", "LaunchTemplate=lt-0123".into()),
        ],
    );
    let res = &r["Resources"];
    s.s3.put_bucket_policy(
        OUTPUT_BUCKET,
        &res["OutputBucketPolicy"]["Properties"]["PolicyDocument"].to_string(),
    )
    .unwrap();
    let role_policies: Vec<Value> = res["InstanceRole"]["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["PolicyDocument"].clone())
        .collect();
    assert!(!role_policies.is_empty());
    s.s3.set_identity_policies(
        OPERATOR_ROLE,
        &role_policies
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    state::write_identity_policies(
        &kms_dir,
        &[(OPERATOR_ROLE.to_owned(), role_policies.clone())]
            .into_iter()
            .collect(),
    )
    .unwrap();

    // The buyers' steps: bidctl encrypt, and the file uploaded under bids/.
    let homes: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let plain = [
        ("Buyer1", "contract,bid\n1,300\n2,100\n3,250\n"),
        ("Buyer2", "contract,bid\n1,200\n2,400\n3,250\n"),
    ];
    for ((b, home), (_, text)) in [b1, b2].into_iter().zip(&homes).zip(plain) {
        let bids = home.path().join("bids.csv");
        std::fs::write(&bids, text).unwrap();
        let enc = home.path().join("encrypted.csv");
        let o = buyer_cmd(&w, b, home.path())
            .args(["encrypt", "--key-id", b.key.as_str(), "--auction", AUCTION])
            .args(["--buyer", b.name.as_str()])
            .arg(&bids)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(&enc, &o.stdout).unwrap();
        ok(
            buyer_cmd(&w, b, home.path())
                .args(["encrypt", "--key-id", b.key.as_str(), "--auction", AUCTION])
                .args(["--buyer", b.name.as_str()])
                .arg(&bids)
                .arg("--upload")
                .arg(format!("s3://{}/{BID_KEY}", b.bucket))
                .output()
                .unwrap(),
            "bidctl encrypt --upload",
        );
        // The uploaded file is the one sealed below: keep what S3 holds.
        let held = s
            .s3_client(&b.credentials)
            .get_object(&b.bucket, BID_KEY, 1 << 20)
            .unwrap();
        std::fs::write(&enc, held).unwrap();
    }
    // Something of Buyer1's outside the prefix the operator was given.
    s.s3_client(&b1.credentials)
        .put_object(
            &b1.bucket,
            "private/notes.csv",
            b"not for the operator",
            "text/csv",
        )
        .unwrap();

    // The operator, after the deadline: the manifest, from the files under bids/.
    let enclave = s.start_enclave(&exe(), "enclave-deploy", &[]).unwrap();
    let id = AuctionId::new(AUCTION).unwrap();
    let config = w.dir.path().join("auction.toml");
    std::fs::write(
        &config,
        s.parent_config(&id, &enclave.endpoint, "winning-bid", false)
            .replace("key = \"encrypted.csv\"", &format!("key = \"{BID_KEY}\"")),
    )
    .unwrap();
    // Before anything exists a buyer's result is AccessDenied, not NoSuchKey: no ListBucket.
    denied(
        s.s3_client(&b1.credentials).get_object(
            OUTPUT_BUCKET,
            &format!("{AUCTION}/output.csv"),
            1 << 20,
        ),
        "Buyer1 reading a result not written yet",
    );
    s.make_manifest(&exe(), &config).unwrap();

    // Each buyer seals the manifest, read from the operator's bucket, and uploads the seal
    // next to its bid file.
    let manifest_url = format!("s3://{OUTPUT_BUCKET}/{AUCTION}/manifest.json");
    for (b, home) in [b1, b2].into_iter().zip(&homes) {
        ok(
            buyer_cmd(&w, b, home.path())
                .args([
                    "seal",
                    "--manifest",
                    &manifest_url,
                    "--buyer",
                    b.name.as_str(),
                ])
                .args(["--key-id", b.key.as_str(), "--bids"])
                .arg(home.path().join("encrypted.csv"))
                .arg("--upload")
                .output()
                .unwrap(),
            &format!("{}: bidctl seal", b.name),
        );
    }

    // The operator's run: bids and seals across accounts, KMS through the enclave. Each seal
    // is where bidctl put it, beside the bid file under this auction's key.
    for b in [b1, b2] {
        assert!(
            s.s3.object_path(&b.bucket, &format!("{BID_KEY}.seal"))
                .is_file(),
            "{}'s seal",
            b.name
        );
    }
    let run = s.run_parent(&exe(), &config, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Each buyer fetches its auction's results and verifies them.
    let expected = "Property,Result,Price\n1,Buyer1 Wins,300\n2,Buyer2 Wins,400\n3,\"Tie: Buyer1, Buyer2\",250\n";
    for (b, home) in [b1, b2].into_iter().zip(&homes) {
        let c = s.s3_client(&b.credentials);
        for key in [
            "output.csv",
            "output.json",
            "output.csv.attestation",
            "manifest.json",
        ] {
            let bytes = c
                .get_object(OUTPUT_BUCKET, &format!("{AUCTION}/{key}"), 1 << 20)
                .unwrap_or_else(|e| panic!("{} fetching {key}: {e}", b.name));
            std::fs::write(home.path().join(key), bytes).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(home.path().join("output.csv")).unwrap(),
            expected
        );
        let p = |n: &str| home.path().join(n);
        ok(
            buyer_cmd(&w, b, home.path())
                .arg("verify")
                .arg("--output")
                .arg(p("output.csv"))
                .arg("--attestation")
                .arg(p("output.csv.attestation"))
                .args(["--expect-pcr0", &pcr0])
                .arg("--manifest")
                .arg(p("manifest.json"))
                .arg("--root")
                .arg(&s.dev_root_pem)
                .args(["--buyer", b.name.as_str(), "--key-id", b.key.as_str()])
                .arg("--bids")
                .arg(p("encrypted.csv"))
                .output()
                .unwrap(),
            &format!("{}: bidctl verify", b.name),
        );
    }

    // The denials the policies must produce.
    let operator_s3 = s.s3_client(&s.operator);
    denied(
        operator_s3.get_object(&b1.bucket, "private/notes.csv", 1 << 20),
        "the operator's role reading a Buyer1 object outside bids/",
    );
    let operator_kms = s.kms_client(&s.operator).unwrap();
    for b in [b1, b2] {
        let e = denied(
            operator_kms.encrypt(b.key.as_str(), b"100000", None),
            "the operator's role calling kms:Encrypt",
        );
        assert!(e.contains(OPERATOR_ROLE.rsplit('/').next().unwrap()), "{e}");
    }
    // The operator's role opening a bid itself, outside the enclave (no attestation): the
    // key policy's only grant to the role requires the pinned PCR0.
    for (b, home) in [b1, b2].into_iter().zip(&homes) {
        use base64::Engine;
        let text = std::fs::read_to_string(home.path().join("encrypted.csv")).unwrap();
        let (lot, blob) = text.lines().nth(1).unwrap().split_once(',').unwrap();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap();
        let context = bidding_core::kms::bid_context(
            bidding_core::config::Mode::Sealed,
            &id,
            &bidding_core::names::LotId::new(lot).unwrap(),
            &b.name,
        );
        denied(
            operator_kms.decrypt_check(b.key.as_str(), &blob, Some(context)),
            "the operator's role decrypting a bid outside the enclave",
        );
    }
    denied(
        s.s3_client(&b2.credentials)
            .get_object(&b1.bucket, BID_KEY, 1 << 20),
        "Buyer2 reading Buyer1's bids",
    );
    denied(
        s.s3_client(&b1.credentials)
            .get_object(&b2.bucket, &format!("{BID_KEY}.seal"), 1 << 20),
        "Buyer1 reading Buyer2's seal",
    );
    // Another auction's results, in the same bucket.
    operator_s3
        .put_object(
            OUTPUT_BUCKET,
            "other-auction/output.csv",
            b"1,X Wins\n",
            "text/csv",
        )
        .unwrap();
    for b in [b1, b2] {
        denied(
            s.s3_client(&b.credentials).get_object(
                OUTPUT_BUCKET,
                "other-auction/output.csv",
                1 << 20,
            ),
            &format!("{} reading another auction's results", b.name),
        );
        denied(
            s.s3_client(&b.credentials).put_object(
                OUTPUT_BUCKET,
                &format!("{AUCTION}/output.csv"),
                b"1,Me Wins\n",
                "text/csv",
            ),
            &format!("{} writing its auction's results", b.name),
        );
    }
    assert_eq!(
        String::from_utf8(s.fetch_output("output.csv").unwrap()).unwrap(),
        expected
    );

    // A principal of Buyer1's account whom a statement lets kms:Encrypt: it may encrypt
    // bids, but not make Buyer1's seal; Buyer1's administrator still seals.
    let clerk_arn = format!("arn:aws:iam::{}:user/clerk", buyer_account(&b1.name));
    let clerk = new_credentials().unwrap();
    state::add_principal(
        &kms_dir,
        Principal {
            access_key_id: clerk.access_key_id.clone(),
            secret_access_key: clerk.secret_access_key.clone(),
            session_token: None,
            expiration: None,
            arn: clerk_arn.clone(),
        },
    )
    .unwrap();
    let admin_kms = s.kms_client(&b1.credentials).unwrap();
    let mut policy: Value =
        serde_json::from_str(&admin_kms.get_key_policy(b1.key.as_str()).unwrap()).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "ClerkEncryptsBids", "Effect": "Allow", "Principal": {"AWS": clerk_arn},
        "Action": "kms:Encrypt", "Resource": "*"
    }));
    admin_kms
        .put_key_policy(b1.key.as_str(), &policy.to_string())
        .unwrap();
    let manifest =
        bidding_core::manifest::Manifest::parse(&s.fetch_output("manifest.json").unwrap()).unwrap();
    let buyer1 = BuyerName::new("Buyer1").unwrap();
    let seal_ctx = || seal_context(&id, &buyer1, &manifest.digest());
    let clerk_kms = s.kms_client(&clerk).unwrap();
    let bid_ctx = bidding_core::kms::bid_context(
        bidding_core::config::Mode::Sealed,
        &id,
        &bidding_core::names::LotId::new("4").unwrap(),
        &buyer1,
    );
    clerk_kms
        .encrypt(b1.key.as_str(), b"000000000000100000.00", Some(bid_ctx))
        .expect("the clerk encrypts a bid");
    let e = denied(
        clerk_kms.encrypt(b1.key.as_str(), SEAL_MARKER, Some(seal_ctx())),
        "a clerk of Buyer1's account making Buyer1's seal",
    );
    assert!(e.contains("explicit deny"), "{e}");
    admin_kms
        .encrypt(b1.key.as_str(), SEAL_MARKER, Some(seal_ctx()))
        .expect("Buyer1's administrator seals");
    // Buyer2's administrator is its account root: a principal outside the account whom a
    // statement lets kms:Encrypt cannot seal either (the operator's role, here).
    let b2_kms = s.kms_client(&b2.credentials).unwrap();
    let mut policy: Value =
        serde_json::from_str(&b2_kms.get_key_policy(b2.key.as_str()).unwrap()).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "Careless", "Effect": "Allow", "Principal": {"AWS": OPERATOR_ROLE},
        "Action": "kms:Encrypt", "Resource": "*"
    }));
    b2_kms
        .put_key_policy(b2.key.as_str(), &policy.to_string())
        .unwrap();
    let buyer2 = BuyerName::new("Buyer2").unwrap();
    let e = denied(
        operator_kms.encrypt(
            b2.key.as_str(),
            SEAL_MARKER,
            Some(seal_context(&id, &buyer2, &manifest.digest())),
        ),
        "the operator's role making Buyer2's seal",
    );
    assert!(e.contains("explicit deny"), "{e}");
    b2_kms
        .encrypt(
            b2.key.as_str(),
            SEAL_MARKER,
            Some(seal_context(&id, &buyer2, &manifest.digest())),
        )
        .expect("a principal of Buyer2's own account seals");
    let _ = kms_emulator::find_key(&kms_dir, b2.key.as_str()).unwrap();
}
