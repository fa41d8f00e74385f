//! The command line and start-up sequence, shared by the `enclave-init` binary and by
//! `bidctl`, which runs a dev enclave as a child process of itself.

use crate::kms::KmsSettings;
use crate::nsm::Nsm;
use crate::{keys, log, nsm, pid1, server, transport};
use bidding_core::config::Mode;
use bidding_core::endpoint::Endpoint;
use bidding_core::session::enclave::EnclaveSettings;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const HELP: &str = "\
enclave-init: the sealed-bid auction enclave. Production defaults need no arguments.

Usage: enclave-init [OPTIONS]

Options:
  --listen ENDPOINT          where the parent connects [default: vsock:any:5005]
  --kms-proxy ENDPOINT       the vsock-proxy forwarding to kms.<region>.amazonaws.com:443
                             [default: vsock:3:8000]
  --kms-connections N        parallel persistent KMS connections [default: 8]
  --kms-deadline-secs N      seconds one bid may take at KMS, retries included, before the
                             auction fails [default: 60]
  --max-frame BYTES          largest frame accepted from the parent [default: 1048576]
  --max-pending-bids N       bids being opened at once before the enclave stops reading
                             (bounds memory) [default: 4096]
  --max-lots N               lots per auction, reserved at open, 130 bytes each
                             [default: 2000000]
  --max-bids N               rows naming a lot in per-bid files, over every buyer's file
                             (one KMS call each), reserved at open, 12 bytes each
                             [default: 1000000]
  --max-file-bytes BYTES     largest bid file (files are streamed) [default: 1073741824]
  --replay-capacity N        unsealed auctions: ciphertexts remembered per boot, 32 bytes
                             each [default: 2000000]
  --limits-file PATH         apply the limit flags in PATH (one --NAME=VALUE a line) before
                             the rest; as PID 1, /limits is applied when present (the image's
                             measured limits: bidctl initramfs --limits)
  --no-heartbeat             as PID 1: skip the boot heartbeat (tests outside an enclave)
  --nsm-ko PATH              as PID 1: the NSM driver module to load when present
                             [default: /nsm.ko]
  -h, --help                 print this help
  -V, --version              print the version

Endpoints are vsock:CID:PORT; dev builds also take unix:PATH and tcp:HOST:PORT.
The image's rule set is built in: a release image serves sealed auctions only, an image built
with the `unsealed` feature unsealed ones only.
Dev builds only:
  --rules sealed|unsealed    the rule set this dev enclave serves [default: sealed]; the
                             software NSM measures it into PCR0
  --soft-nsm DIR             the software NSM, with its chain in DIR
  --kms-ca PEM               also trust this CA for KMS (the KMS emulator's)
  --spawn CMD [ARGS...]      start this command after init (tests of PID 1 reaping)
";

/// The enclave's settings from its command line.
pub struct Args {
    listen: Endpoint,
    kms_proxy: Endpoint,
    kms_connections: usize,
    kms_deadline_secs: u64,
    max_frame: usize,
    max_pending_bids: usize,
    max_lots: usize,
    max_bids: usize,
    max_file_bytes: u64,
    replay_capacity: usize,
    rules: Option<Mode>,
    no_heartbeat: bool,
    nsm_ko: PathBuf,
    soft_nsm: Option<PathBuf>,
    kms_ca: Option<PathBuf>,
    spawn: Vec<String>,
}

/// What the command line asks for.
pub enum Parsed {
    Run(Box<Args>),
    /// `--help` or `--version`: print this and stop.
    Print(String),
}

/// Parses the arguments (the first is the program name). lexopt rather than clap: the enclave
/// image carries every byte of this binary, and clap would be an eighth of our own code.
pub fn parse(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    // The session's own defaults: one place says what an image built without `/limits` takes.
    let limits = EnclaveSettings::default();
    let mut a = Args {
        listen: "vsock:any:5005".parse().expect("valid default"),
        kms_proxy: "vsock:3:8000".parse().expect("valid default"),
        kms_connections: 8,
        kms_deadline_secs: 60,
        max_frame: limits.max_frame,
        max_pending_bids: limits.max_pending_bids,
        max_lots: limits.max_lots,
        max_bids: limits.max_bids,
        max_file_bytes: limits.max_file_bytes,
        replay_capacity: 2_000_000,
        rules: None,
        no_heartbeat: false,
        nsm_ko: PathBuf::from("/nsm.ko"),
        soft_nsm: None,
        kms_ca: None,
        spawn: Vec::new(),
    };
    let mut p = lexopt::Parser::from_iter(argv);
    let err = |e: lexopt::Error| e.to_string();
    fn num<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
        let v = p.value().map_err(|e| e.to_string())?;
        let s = v.to_string_lossy();
        s.parse()
            .map_err(|_| format!("{flag}: `{s}` is not a number"))
    }
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("listen") => {
                a.listen = p
                    .value()
                    .map_err(err)?
                    .string()
                    .map_err(err)?
                    .parse()
                    .map_err(|e| format!("--listen: {e}"))?
            }
            Long("kms-proxy") => {
                a.kms_proxy = p
                    .value()
                    .map_err(err)?
                    .string()
                    .map_err(err)?
                    .parse()
                    .map_err(|e| format!("--kms-proxy: {e}"))?
            }
            Long("kms-connections") => a.kms_connections = num(&mut p, "--kms-connections")?,
            Long("kms-deadline-secs") => a.kms_deadline_secs = num(&mut p, "--kms-deadline-secs")?,
            Long("max-frame") => a.max_frame = num(&mut p, "--max-frame")?,
            Long("max-pending-bids") => a.max_pending_bids = num(&mut p, "--max-pending-bids")?,
            Long("max-lots") => a.max_lots = num(&mut p, "--max-lots")?,
            Long("max-bids") => a.max_bids = num(&mut p, "--max-bids")?,
            Long("max-file-bytes") => a.max_file_bytes = num(&mut p, "--max-file-bytes")?,
            Long("replay-capacity") => a.replay_capacity = num(&mut p, "--replay-capacity")?,
            Long("rules") => {
                a.rules = Some(
                    match p.value().map_err(err)?.string().map_err(err)?.as_str() {
                        "sealed" => Mode::Sealed,
                        "unsealed" => Mode::Unsealed,
                        other => {
                            return Err(format!("--rules: `{other}` is not sealed or unsealed"));
                        }
                    },
                )
            }
            Long("no-heartbeat") => a.no_heartbeat = true,
            Long("nsm-ko") => a.nsm_ko = p.value().map_err(err)?.into(),
            Long("soft-nsm") => a.soft_nsm = Some(p.value().map_err(err)?.into()),
            Long("kms-ca") => a.kms_ca = Some(p.value().map_err(err)?.into()),
            Long("spawn") => {
                a.spawn = p
                    .raw_args()
                    .map_err(err)?
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if a.spawn.is_empty() {
                    return Err("--spawn needs a command".into());
                }
            }
            Short('h') | Long("help") => return Ok(Parsed::Print(HELP.to_owned())),
            Short('V') | Long("version") => {
                return Ok(Parsed::Print(format!(
                    "enclave-init {}\n",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            other => return Err(format!("{} (see --help)", other.unexpected())),
        }
    }
    if a.kms_connections == 0 || a.max_frame == 0 || a.max_pending_bids == 0 {
        return Err(
            "--kms-connections, --max-frame and --max-pending-bids must be positive".into(),
        );
    }
    Ok(Parsed::Run(Box::new(a)))
}

/// Runs the enclave with these command-line arguments (the first is the program name); never
/// returns. Call it before starting any thread: it blocks signals for the whole process.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let pid1 = pid1::is_pid1();
    // Before any thread exists, so all of them inherit the mask.
    let signals = pid1::block_signals();
    let mut argv: Vec<std::ffi::OsString> = args.into_iter().collect();
    if pid1 {
        // The kernel hands words of its command line it does not know (nitro-cli's
        // `nomodules`, say) to /init as arguments.
        let (ours, kernel_words) = pid1::split_kernel_words(argv);
        if !kernel_words.is_empty() {
            log!("ignoring the kernel's boot words {kernel_words:?}");
        }
        argv = ours;
    }
    let argv = match crate::limits::apply(argv, pid1, crate::limits::read_file) {
        Ok((argv, applied)) => {
            if !applied.is_empty() {
                log!("limits from the limits file: {}", applied.join(" "));
            }
            argv
        }
        Err(e) if !pid1 => {
            eprintln!("enclave-init: {e}");
            std::process::exit(2);
        }
        Err(e) => pid1::finish(&format!("bad limits: {e}"), 2, pid1),
    };
    let args = match parse(argv) {
        Ok(Parsed::Run(a)) => *a,
        Ok(Parsed::Print(text)) if !pid1 => {
            print!("{text}");
            std::process::exit(0);
        }
        Ok(Parsed::Print(_)) => pid1::finish("asked for help or version as PID 1", 2, pid1),
        Err(e) if !pid1 => {
            eprintln!("enclave-init: {e}");
            std::process::exit(2);
        }
        Err(e) => pid1::finish(&format!("bad arguments: {e}"), 2, pid1),
    };
    pid1::spawn_signal_thread(signals, pid1);
    if let Err(e) = run(args, pid1) {
        pid1::finish(&format!("fatal: {e}"), 1, pid1);
    }
    pid1::finish("stopped", 0, pid1);
}

fn run(args: Args, pid1: bool) -> Result<(), String> {
    log!(
        "{} starting (pid {}, {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        if cfg!(feature = "dev") {
            "DEV build"
        } else {
            "release build"
        }
    );
    transport::check_supported(&args.listen).map_err(|e| e.to_string())?;
    transport::check_supported(&args.kms_proxy).map_err(|e| e.to_string())?;
    // Before anything else, so a release image refuses it even where there is no /dev/nsm.
    let extra_ca_pem = read_kms_ca(&args)?;
    let rules = rule_set(&args)?;
    log!("rule set: {rules} ({})", rules.image());
    if pid1 {
        pid1::mount_filesystems()?;
        pid1::load_nsm_driver(&args.nsm_ko)?;
        if args.no_heartbeat {
            log!("heartbeat skipped (--no-heartbeat)");
        } else {
            pid1::heartbeat()?;
        }
    }
    let nsm = open_nsm(&args, rules)?;
    match nsm::seed_entropy(&*nsm) {
        Ok(0) => {}
        Ok(n) => log!("seeded the kernel entropy pool with {n} bytes from NSM GetRandom"),
        Err(e) => return Err(format!("seeding entropy from the NSM: {e}")),
    }
    let key = keys::PendingKey::spawn();
    if !args.spawn.is_empty() {
        spawn(&args.spawn)?;
    }
    let settings = EnclaveSettings {
        dev: cfg!(feature = "dev"),
        rules,
        max_frame: args.max_frame,
        max_pending_bids: args.max_pending_bids,
        max_lots: args.max_lots,
        max_bids: args.max_bids,
        max_file_bytes: args.max_file_bytes,
        ..EnclaveSettings::default()
    };
    let kms_settings = KmsSettings {
        proxy: args.kms_proxy.clone(),
        connections: args.kms_connections,
        bid_deadline: Duration::from_secs(args.kms_deadline_secs),
        io_timeout: Duration::from_secs(15),
        extra_ca_pem,
    };
    let ctx = server::Context::new(settings, nsm, key, kms_settings, args.replay_capacity);
    let listener =
        transport::listen(&args.listen).map_err(|e| format!("listen on {}: {e}", args.listen))?;
    log!(
        "listening on {}; KMS via {} ({} connections)",
        args.listen,
        args.kms_proxy,
        args.kms_connections
    );
    server::serve(listener, ctx).map_err(|e| format!("accept on {}: {e}", args.listen))
}

/// The rule set this image serves: built in, or in a dev build chosen with `--rules`.
pub const IMAGE_RULES: Mode = if cfg!(feature = "unsealed") && !cfg!(feature = "dev") {
    Mode::Unsealed
} else {
    Mode::Sealed
};

fn rule_set(args: &Args) -> Result<Mode, String> {
    match args.rules {
        None => Ok(IMAGE_RULES),
        Some(rules) if cfg!(feature = "dev") => Ok(rules),
        Some(_) => Err(format!(
            "--rules exists only in dev builds; this image's rule set is built in: it is {}",
            IMAGE_RULES.image()
        )),
    }
}

#[cfg(feature = "dev")]
fn open_nsm(args: &Args, rules: Mode) -> Result<Arc<dyn Nsm>, String> {
    match &args.soft_nsm {
        Some(dir) => {
            let soft = crate::soft_nsm::SoftNsm::open_with(
                dir,
                crate::soft_nsm::SoftNsmOptions {
                    rules,
                    ..Default::default()
                },
            )?;
            log!(
                "using the SOFTWARE NSM from {} (dev only; not an attestation anyone should trust)",
                dir.display()
            );
            Ok(Arc::new(soft))
        }
        None => Ok(Arc::new(
            nsm::HardwareNsm::open().map_err(|e| e.to_string())?,
        )),
    }
}

#[cfg(not(feature = "dev"))]
fn open_nsm(args: &Args, _rules: Mode) -> Result<Arc<dyn Nsm>, String> {
    if args.soft_nsm.is_some() {
        return Err("--soft-nsm exists only in dev builds; a release enclave uses /dev/nsm".into());
    }
    Ok(Arc::new(
        nsm::HardwareNsm::open().map_err(|e| e.to_string())?,
    ))
}

/// `--kms-ca`: a dev build trusts that CA for KMS too; a release build never trusts a CA
/// other than the public roots it was built with.
fn read_kms_ca(args: &Args) -> Result<Option<Vec<u8>>, String> {
    match &args.kms_ca {
        None => Ok(None),
        Some(p) if cfg!(feature = "dev") => std::fs::read(p)
            .map(Some)
            .map_err(|e| format!("--kms-ca {}: {e}", p.display())),
        Some(_) => Err(
            "--kms-ca exists only in dev builds; a release enclave trusts only the public roots"
                .into(),
        ),
    }
}

fn spawn(cmd: &[String]) -> Result<(), String> {
    if !cfg!(feature = "dev") {
        return Err("--spawn exists only in dev builds".into());
    }
    let child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .map_err(|e| format!("--spawn {}: {e}", cmd[0]))?;
    log!("spawned pid {} ({})", child.id(), cmd[0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Parsed, String> {
        parse(
            std::iter::once("enclave-init")
                .chain(v.iter().copied())
                .map(Into::into),
        )
    }

    /// deploy/enclave-limits says it is the built-in set: an image built with it and one
    /// built without take the same limits.
    #[test]
    fn the_shipped_limits_file_is_the_built_in_defaults() {
        let text = include_str!("../../deploy/enclave-limits");
        let flags = crate::limits::parse(text).unwrap();
        let Ok(Parsed::Run(file)) = args(&flags.iter().map(String::as_str).collect::<Vec<_>>())
        else {
            panic!("the limits file parses")
        };
        let Ok(Parsed::Run(built_in)) = args(&[]) else {
            panic!("defaults")
        };
        assert_eq!(flags.len(), crate::limits::LIMIT_FLAGS.len(), "{flags:?}");
        assert_eq!(
            (
                file.max_lots,
                file.max_bids,
                file.max_file_bytes,
                file.max_pending_bids,
                file.replay_capacity
            ),
            (
                built_in.max_lots,
                built_in.max_bids,
                built_in.max_file_bytes,
                built_in.max_pending_bids,
                built_in.replay_capacity
            )
        );
    }

    /// Way 2's image (enclave-init/Dockerfile) runs under AWS's init, which reads no /limits:
    /// its CMD passes the limits itself, and they must be exactly deploy/enclave-limits' lines
    /// (the README says the two ways take the same limits), after the production endpoints.
    #[test]
    fn the_dockerfile_cmd_passes_the_shipped_limits() {
        let dockerfile = include_str!("../Dockerfile");
        let cmd: Vec<String> = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("CMD "))
            .map(|json| serde_json::from_str(json).expect("CMD in exec form (a JSON array)"))
            .expect("the Dockerfile has a CMD");
        let limits = crate::limits::parse(include_str!("../../deploy/enclave-limits")).unwrap();
        let (program, rest) = cmd.split_first().expect("a program");
        assert_eq!(program, "/enclave-init");
        let (endpoints, flags) = rest.split_at(rest.len() - limits.len());
        assert_eq!(
            endpoints,
            ["--listen", "vsock:any:5005", "--kms-proxy", "vsock:3:8000"]
        );
        assert_eq!(
            flags,
            limits.as_slice(),
            "the CMD's limits are not deploy/enclave-limits'"
        );
        let Ok(Parsed::Run(_)) = args(&rest.iter().map(String::as_str).collect::<Vec<_>>()) else {
            panic!("the CMD parses as enclave-init's command line")
        };
    }

    #[test]
    fn defaults_and_flags() {
        let Ok(Parsed::Run(a)) = args(&[]) else {
            panic!("defaults")
        };
        assert_eq!(a.listen.to_string(), "vsock:any:5005");
        assert_eq!(a.kms_proxy.to_string(), "vsock:3:8000");
        assert_eq!(
            (a.kms_connections, a.kms_deadline_secs, a.max_pending_bids),
            (8, 60, 4096)
        );
        let Ok(Parsed::Run(a)) = args(&[
            "--listen",
            "unix:/tmp/e.sock",
            "--kms-connections=3",
            "--no-heartbeat",
            "--spawn",
            "sh",
            "-c",
            "exit 0",
        ]) else {
            panic!("flags")
        };
        assert_eq!(a.listen.to_string(), "unix:/tmp/e.sock");
        assert_eq!(a.kms_connections, 3);
        assert!(a.no_heartbeat);
        assert_eq!(a.spawn, ["sh", "-c", "exit 0"]);
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            args(&["--kms-connections", "x"]).err().unwrap(),
            "--kms-connections: `x` is not a number"
        );
        assert!(
            args(&["--listen", "ftp:x"])
                .err()
                .unwrap()
                .contains("unknown scheme")
        );
        assert!(
            args(&["--frobnicate"])
                .err()
                .unwrap()
                .contains("--frobnicate")
        );
        assert!(args(&["nomodules"]).err().unwrap().contains("nomodules"));
        assert!(matches!(args(&["--help"]), Ok(Parsed::Print(h)) if h.contains("--kms-proxy")));
    }

    #[test]
    fn kms_ca_only_in_dev_builds() {
        let Ok(Parsed::Run(a)) = args(&["--kms-ca", "/nonexistent/ca.pem"]) else {
            panic!("--kms-ca")
        };
        let e = read_kms_ca(&a).unwrap_err();
        if cfg!(feature = "dev") {
            assert!(e.starts_with("--kms-ca /nonexistent/ca.pem: "), "{e}");
        } else {
            assert!(e.contains("only in dev builds"), "{e}");
        }
    }

    /// One image, one rule set, on the real session this build runs: an enclave set up as
    /// `run` sets it up (the rule set from `rule_set`, no `--rules`) refuses to open an auction
    /// of the other rule set, after a hello and credentials, with `wrong_rule_set`. In the
    /// workspace's tests enclave-init is built with `dev` (bidctl runs it), so this is the
    /// sealed dev enclave; CI also runs it on the release image's features
    /// (`cargo test -p enclave-init --lib image_opens_only`) and the unsealed image's
    /// (`--features unsealed`), where the release image must refuse `open_unsealed`.
    #[test]
    fn the_image_opens_only_its_own_rule_set() {
        use bidding_core::auction::RevealPolicy;
        use bidding_core::config::{AuctionConfig, BuyerSpec};
        use bidding_core::credentials::{Credentials, Secret};
        use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
        use bidding_core::session::enclave::{Action, EnclaveSession, ReplayGuard};
        use bidding_core::wire::{
            ErrorCode, FrameDecoder, Hello, OpenSealed, PROTOCOL_VERSION, Request, Response,
            ToEnclave, decode_response, encode_frame, encode_request,
        };

        let Ok(Parsed::Run(a)) = args(&[]) else {
            panic!("defaults")
        };
        let rules = rule_set(&a).unwrap();
        assert_eq!(rules, IMAGE_RULES);
        if !cfg!(feature = "dev") {
            // The release image is the sealed one; only the `unsealed` feature makes the other.
            let built = if cfg!(feature = "unsealed") {
                Mode::Unsealed
            } else {
                Mode::Sealed
            };
            assert_eq!(rules, built);
            let e = args(&["--rules", "unsealed"])
                .ok()
                .map(|p| match p {
                    Parsed::Run(a) => rule_set(&a).unwrap_err(),
                    Parsed::Print(_) => panic!("not help"),
                })
                .unwrap();
            assert!(e.contains("only in dev builds"), "{e}");
        }
        let settings = EnclaveSettings {
            dev: cfg!(feature = "dev"),
            rules,
            ..EnclaveSettings::default()
        };
        let now = 1_800_000_000_000;
        let mut session = EnclaveSession::new(settings, ReplayGuard::new(16), now, [1; 16]);
        let mut decoder = FrameDecoder::new(64 * 1024 * 1024);
        let mut frames = 0;
        let mut exchange = |session: &mut EnclaveSession, id: u64, msg: Request| {
            let mut bytes = Vec::new();
            encode_frame(
                &encode_request(&ToEnclave { id, msg }),
                usize::MAX,
                &mut bytes,
            )
            .unwrap();
            session.handle_input(&bytes, now);
            while let Some(action) = session.poll_action() {
                if let Action::Attest { ticket, .. } = action {
                    session.attested(ticket, Ok(vec![0xd2, 0x84]));
                }
            }
            let mut replies = Vec::new();
            while let Some(out) = session.poll_transmit() {
                let mut input = &out[..];
                while let Some(frame) = decoder.decode(&mut input).unwrap() {
                    frames += 1;
                    replies.push(decode_response(frames, &frame).unwrap());
                }
            }
            replies
        };
        let hello = exchange(
            &mut session,
            1,
            Request::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                nonce: vec![7; 32],
            }),
        );
        assert!(
            matches!(hello[..], [ref r] if matches!(r.msg, Response::Hello(_))),
            "{hello:?}"
        );
        let credentials = exchange(
            &mut session,
            2,
            Request::Credentials(Credentials {
                access_key_id: "AKIAEXAMPLEEXAMPLE00".into(),
                secret_access_key: Secret::new("x".repeat(40)),
                session_token: None,
                expiration: None,
                region: Region::new("us-east-1").unwrap(),
            }),
        );
        assert!(
            matches!(credentials[..], [ref r] if matches!(r.msg, Response::Credentials(_))),
            "{credentials:?}"
        );
        let other = match rules {
            Mode::Sealed => Request::OpenUnsealed(
                AuctionConfig::new(
                    AuctionId::new("a").unwrap(),
                    vec![BuyerSpec {
                        name: BuyerName::new("V").unwrap(),
                        key_arn: KeyArn::new("arn:aws:kms:us-east-1:111122223333:key/v").unwrap(),
                    }],
                    RevealPolicy::WinningBid,
                    true,
                )
                .unwrap(),
            ),
            Mode::Unsealed => Request::OpenSealed(OpenSealed {
                manifest: b"{}".to_vec(),
            }),
        };
        let refused = exchange(&mut session, 3, other);
        let [ref reply] = refused[..] else {
            panic!("one reply: {refused:?}")
        };
        let Response::Error(e) = &reply.msg else {
            panic!("an error: {reply:?}")
        };
        assert_eq!(
            (reply.id, e.code),
            (Some(3), ErrorCode::WrongRuleSet),
            "{e:?}"
        );
        assert!(e.message.contains(rules.image()), "{}", e.message);
    }
}
