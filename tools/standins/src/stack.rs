//! The whole local pipeline on one machine: an S3 server, the KMS emulator, the software NSM's
//! dev root and a dev enclave process, with an operator and buyers that each have their own
//! AWS account, credentials, KMS key (with the key policy `bidctl key-policy --document`
//! prints, pinned to the enclave's PCR0) and bucket. The demo, the end-to-end tests and the
//! benchmarks all stand on it.
//!
//! Accounts: the operator's is [`ACCOUNT`] (its role `bidding-parent`); each buyer's is its own,
//! derived from the buyer's name ([`buyer_account`]), so every Decrypt of a bid is a
//! cross-account call, as on AWS. With [`StackOptions::enforce_policies`] the S3 server also
//! serves TLS (the emulator's CA) and enforces bucket policies across accounts: each buyer's
//! bucket lets the operator's role read it, and [`Stack::share_auction`] lets the buyers read
//! one auction's manifest and results; without it S3 lets every stack principal do anything.

use crate::kms_emulator::{self, FaultRule, Principal};
use crate::s3_server::S3Server;
use anyhow::{Context, Result, anyhow, bail};
use bidding_client::encrypt::{Sealing, envelope_file, envelope_plaintext, seal_rows};
use bidding_client::key_policy;
use bidding_client::kms_client::KmsClient;
use bidding_core::bidfile::PlaintextRow;
use bidding_core::config::Mode;
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::endpoint::Endpoint;
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use bidding_parent::aws::s3::S3Client;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = kms_emulator::DEFAULT_ACCOUNT;
pub const REGION: &str = kms_emulator::DEFAULT_REGION;
pub const OPERATOR_ROLE: &str = "arn:aws:iam::111122223333:role/bidding-parent";
pub const OUTPUT_BUCKET: &str = "auction-results";

#[derive(Clone, Default)]
pub struct StackOptions {
    /// Serve S3 over TLS and enforce bucket (and identity) policies across accounts.
    pub enforce_policies: bool,
    pub kms_faults: Vec<FaultRule>,
    pub kms_fault_seed: Option<u64>,
    /// Emulator request log (on stderr in process, in `kms.log` as a process).
    pub kms_log: bool,
    /// Run the emulator as `exe kms-emulator ...`, a process of its own (for measuring it, or
    /// for keeping its log), instead of in this process.
    pub kms_process: Option<PathBuf>,
    /// The emulator also accepts QEMU's unsigned attestation documents (`kms-emulator
    /// --accept-qemu-unsigned-attestation`), for an enclave image booted under QEMU.
    pub kms_accept_qemu_unsigned: bool,
    /// The rule set of the dev enclave this stack's buyers trust (their keys name its PCR0,
    /// and their bids are made for it): sealed unless a test or `dev-stack --unsealed` asks.
    pub rules: Mode,
}

impl StackOptions {
    /// A stack for the unsealed image: its dev enclave serves unsealed auctions only, under
    /// its own PCR0, which the buyers' keys trust instead of the sealed one's.
    pub fn unsealed() -> StackOptions {
        StackOptions {
            rules: Mode::Unsealed,
            ..StackOptions::default()
        }
    }
}

/// The KMS emulator, in this process or as a child process.
pub enum KmsHandle {
    InProcess(kms_emulator::Running),
    Process {
        child: Child,
        addr: std::net::SocketAddr,
        ca_pem: PathBuf,
        log: PathBuf,
    },
}

impl KmsHandle {
    pub fn addr(&self) -> std::net::SocketAddr {
        match self {
            KmsHandle::InProcess(r) => r.addr(),
            KmsHandle::Process { addr, .. } => *addr,
        }
    }
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr())
    }
    pub fn ca_pem(&self) -> PathBuf {
        match self {
            KmsHandle::InProcess(r) => r.ca_pem(),
            KmsHandle::Process { ca_pem, .. } => ca_pem.clone(),
        }
    }
    /// The emulator's process id, when it runs as a process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            KmsHandle::Process { child, .. } => Some(child.id()),
            KmsHandle::InProcess(_) => None,
        }
    }
    pub fn log(&self) -> Option<&Path> {
        match self {
            KmsHandle::Process { log, .. } => Some(log),
            KmsHandle::InProcess(_) => None,
        }
    }
}

impl Drop for KmsHandle {
    fn drop(&mut self) {
        if let KmsHandle::Process { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
            crate::cleanup::unregister_child(child.id());
        }
    }
}

fn spawn_kms_process(exe: &Path, dir: &Path, opts: &StackOptions) -> Result<KmsHandle> {
    let log = dir.join("kms.log");
    let mut cmd = Command::new(exe);
    cmd.arg("kms-emulator")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state")
        .arg(dir.join("kms"))
        .arg("--attestation-root")
        .arg(dir.join("nsm").join("root.pem"));
    for f in &opts.kms_faults {
        cmd.arg("--fault").arg(f.to_string());
    }
    if let Some(seed) = opts.kms_fault_seed {
        cmd.arg("--fault-seed").arg(seed.to_string());
    }
    if !opts.kms_log {
        cmd.arg("--quiet");
    }
    if opts.kms_accept_qemu_unsigned {
        cmd.arg("--accept-qemu-unsigned-attestation");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {} kms-emulator", exe.display()))?;
    crate::cleanup::register_child(child.id());
    let mut handle = KmsHandle::Process {
        child,
        addr: "127.0.0.1:0".parse().expect("valid"),
        ca_pem: dir.join("kms").join("ca.pem"),
        log: log.clone(),
    };
    // It announces `serving <region> on https://ADDR ...` once it listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.split("://").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            if let KmsHandle::Process { addr: a, .. } = &mut handle {
                *a = addr;
            }
            return Ok(handle);
        }
        if let KmsHandle::Process { child, .. } = &mut handle
            && let Some(status) = child.try_wait()?
        {
            bail!("the KMS emulator exited at start ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("the KMS emulator did not start within 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A buyer's account: credentials, KMS key and bucket.
pub struct Buyer {
    pub name: BuyerName,
    pub credentials: Credentials,
    pub key: KeyArn,
    pub bucket: String,
}

pub struct Stack {
    pub dir: PathBuf,
    /// The auction of the last configuration written ([`Stack::parent_config_mode`]): whose
    /// output prefix [`Stack::fetch_output`] reads.
    current_auction: std::sync::Mutex<Option<AuctionId>>,
    pub s3: S3Server,
    pub kms: KmsHandle,
    pub nsm_dir: PathBuf,
    pub dev_root_pem: PathBuf,
    pub operator: Credentials,
    pub buyers: Vec<Buyer>,
    /// The enclave image's measurement: for the sealed rule set SHA-384 of the executable that
    /// runs the dev enclave (`soft_nsm::dev_pcr0`).
    pub pcr0: [u8; 48],
    /// The rule set of the dev enclaves this stack starts, which its buyers' keys trust.
    pub rules: Mode,
    /// Dev enclaves started from now on get SIGTERM when the thread that started them ends
    /// (`PR_SET_PDEATHSIG`): `bidctl dev-stack`, whose main thread starts them, sets it, so
    /// a dev-stack killed with SIGKILL leaves no enclave behind.
    pub enclave_dies_with_parent: bool,
}

fn random_token(len: usize, alphabet: &[u8]) -> Result<String> {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow!("system randomness failed"))?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

fn principal(c: &Credentials, arn: String) -> Principal {
    Principal {
        access_key_id: c.access_key_id.clone(),
        secret_access_key: c.secret_access_key.clone(),
        session_token: c.session_token.clone(),
        expiration: c.expiration,
        arn,
    }
}

/// SHA-384 of a file: the sealed dev enclave's PCR0 when that file runs it.
pub fn sha384_file(path: &Path) -> Result<[u8; 48]> {
    dev_pcr0(path, Mode::Sealed)
}

/// The PCR0 of a dev enclave that `exe` runs with `rules` (the software NSM measures the rule
/// set with the executable, as the real images differ by it).
pub fn dev_pcr0(exe: &Path, rules: Mode) -> Result<[u8; 48]> {
    let bytes = std::fs::read(exe).with_context(|| format!("reading {}", exe.display()))?;
    Ok(enclave_init::soft_nsm::dev_pcr0(&bytes, rules))
}

/// The key policy of a buyer's key, as `bidctl key-policy --document` prints it: the buyer
/// administers it and encrypts (and alone seals) with it; the operator's role may only
/// Decrypt, and only for a Recipient attested with this PCR0.
pub fn buyer_key_policy(buyer_arn: &str, pcr0: &[u8]) -> String {
    let admin = key_policy::Administrator::new(buyer_arn).expect("a buyer's IAM ARN");
    let role = key_policy::RoleArn::new(OPERATOR_ROLE).expect("the operator's role ARN");
    let pcr0 = hex::encode(pcr0);
    let pcrs = key_policy::Measurements::new(&[(0, &pcr0)]).expect("48 bytes");
    key_policy::document(&admin, &role, &pcrs).to_string()
}

/// The bucket policy of a buyer's bid bucket in the stack: the operator's role may read its
/// objects (buyer.yaml grants the same under its BidKeyPrefix), and nothing else.
pub fn buyer_bucket_policy(bucket: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "OperatorReadsBidFiles", "Effect": "Allow",
            "Principal": {"AWS": OPERATOR_ROLE}, "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/*")}]
    })
    .to_string()
}

/// The stack's accounts: the operator's credentials and each buyer's, with the buyer's KMS key
/// once it exists (`bidctl dev-stack --dir` keeps them across runs and makes each key once).
#[derive(Clone)]
pub struct Accounts {
    pub operator: Credentials,
    pub buyers: Vec<(BuyerName, Credentials, Option<KeyArn>)>,
}

impl Accounts {
    /// New random credentials for the operator and every buyer; no keys yet.
    pub fn new(buyers: &[BuyerName]) -> Result<Accounts> {
        Ok(Accounts {
            operator: new_credentials()?,
            buyers: buyers
                .iter()
                .map(|n| Ok((n.clone(), new_credentials()?, None)))
                .collect::<Result<_>>()?,
        })
    }
}

/// New random dev credentials, in the stack's region.
pub fn new_credentials() -> Result<Credentials> {
    Ok(Credentials {
        access_key_id: format!(
            "AKIA{}",
            random_token(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?
        ),
        secret_access_key: Secret::new(random_token(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )?),
        session_token: None,
        expiration: None,
        region: Region::new(REGION).expect("valid region"),
    })
}

/// A buyer's own AWS account: 12 digits derived from the name (case-insensitively, as buyer
/// names are compared), never the operator's.
pub fn buyer_account(name: &BuyerName) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        name.as_str().to_ascii_lowercase().as_bytes(),
    );
    let n = u64::from_be_bytes(d.as_ref()[..8].try_into().expect("8 bytes"));
    format!("2{:011}", n % 100_000_000_000)
}

/// A buyer's IAM user ARN, in the buyer's own account.
pub fn buyer_arn(name: &BuyerName) -> String {
    format!("arn:aws:iam::{}:user/{name}", buyer_account(name))
}

/// The operator's principal: the parent instance's role session.
pub const OPERATOR_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0demo";

/// A buyer's bid bucket.
pub fn buyer_bucket(name: &BuyerName) -> String {
    format!(
        "{}-bids",
        name.as_str().to_ascii_lowercase().replace(['_', '.'], "-")
    )
}

impl Stack {
    /// Starts S3 and KMS under `dir` with an operator and the named buyers; `enclave_exe` is
    /// the executable that will run the dev enclave (its hash is the PCR0 the keys trust).
    pub fn start(
        dir: &Path,
        buyers: &[BuyerName],
        enclave_exe: &Path,
        opts: StackOptions,
    ) -> Result<Stack> {
        Stack::start_with(dir, Accounts::new(buyers)?, enclave_exe, opts)
    }

    /// The same with given accounts; a buyer's key is made (with the policy pinned to the
    /// enclave's PCR0) only when the buyer has none yet.
    pub fn start_with(
        dir: &Path,
        accounts: Accounts,
        enclave_exe: &Path,
        opts: StackOptions,
    ) -> Result<Stack> {
        std::fs::create_dir_all(dir)?;
        let nsm_dir = dir.join("nsm");
        let dev_root = enclave_init::soft_nsm::dev_root_der(&nsm_dir).map_err(|e| anyhow!(e))?;
        let kms_dir = dir.join("kms");
        std::fs::create_dir_all(&kms_dir)?;
        let Accounts {
            operator,
            buyers: accounts,
        } = accounts;
        let mut principals = vec![principal(&operator, OPERATOR_SESSION.to_owned())];
        for (name, c, _) in &accounts {
            principals.push(principal(c, buyer_arn(name)));
        }
        kms_emulator::state::write_principals(&kms_dir, &principals).map_err(|e| anyhow!(e))?;
        let kms = match &opts.kms_process {
            Some(exe) => spawn_kms_process(exe, dir, &opts)?,
            None => {
                let mut config = kms_emulator::Config::new(&kms_dir);
                config.attestation_root_der = dev_root;
                config.faults = opts.kms_faults.clone();
                config.fault_seed = opts.kms_fault_seed;
                config.log = opts.kms_log;
                config.accept_qemu_unsigned_attestation = opts.kms_accept_qemu_unsigned;
                KmsHandle::InProcess(kms_emulator::spawn(config)?)
            }
        };
        let keys: Vec<(&str, &str)> = std::iter::once(&operator)
            .chain(accounts.iter().map(|(_, c, _)| c))
            .map(|c| (c.access_key_id.as_str(), c.secret_access_key.expose()))
            .collect();
        let tls = if opts.enforce_policies {
            // The emulator made its CA before it listened: S3 gets a certificate from it, so
            // one AWS_CA_BUNDLE serves both.
            Some(
                kms_emulator::tls::server_config_as(
                    &kms_dir,
                    REGION,
                    "s3-server.pem",
                    "s3-server-key.pem",
                )
                .map_err(|e| anyhow!("the S3 server's TLS certificate: {e}"))?,
            )
        } else {
            None
        };
        let s3 = S3Server::start_with(&dir.join("s3"), &keys, tls)?;
        s3.set_principal(&operator.access_key_id, OPERATOR_SESSION);
        for (name, c, _) in &accounts {
            s3.set_principal(&c.access_key_id, &buyer_arn(name));
        }
        s3.create_bucket(OUTPUT_BUCKET)?;
        s3.set_bucket_owner(OUTPUT_BUCKET, ACCOUNT);
        if opts.enforce_policies {
            s3.enforce_policies();
        }
        let pcr0 = dev_pcr0(enclave_exe, opts.rules)?;
        let mut stack = Stack {
            dir: dir.to_owned(),
            current_auction: std::sync::Mutex::new(None),
            s3,
            kms,
            dev_root_pem: nsm_dir.join("root.pem"),
            nsm_dir,
            operator,
            buyers: Vec::new(),
            pcr0,
            rules: opts.rules,
            enclave_dies_with_parent: false,
        };
        for (name, credentials, key) in accounts {
            let key = match key {
                Some(key) => key,
                None => {
                    let client = stack.kms_client(&credentials)?;
                    let meta = client
                        .create_key(
                            &format!("sealed bids of {name}"),
                            Some(buyer_key_policy(&buyer_arn(&name), &pcr0)),
                        )
                        .with_context(|| format!("creating {name}'s KMS key"))?;
                    KeyArn::new(meta.arn).map_err(|e| anyhow!("emulator key ARN: {e}"))?
                }
            };
            let bucket = buyer_bucket(&name);
            stack.s3.create_bucket(&bucket)?;
            stack.s3.set_bucket_owner(&bucket, &buyer_account(&name));
            stack
                .s3
                .put_bucket_policy(&bucket, &buyer_bucket_policy(&bucket))
                .map_err(|e| anyhow!("{bucket}'s policy: {e}"))?;
            stack.buyers.push(Buyer {
                name,
                credentials,
                key,
                bucket,
            });
        }
        Ok(stack)
    }

    /// The enclave image is another one (its PCR0 is known only once the image is built, for
    /// an image holding the emulator's CA): each buyer puts a policy naming `pcr0` on their key
    /// through KMS's PutKeyPolicy, as a buyer would, and the parent's configuration names it.
    pub fn trust_pcr0(&mut self, pcr0: [u8; 48]) -> Result<()> {
        for b in &self.buyers {
            self.kms_client(&b.credentials)?
                .put_key_policy(
                    b.key.as_str(),
                    &buyer_key_policy(&buyer_arn(&b.name), &pcr0),
                )
                .with_context(|| format!("PutKeyPolicy on {}'s key", b.name))?;
        }
        self.pcr0 = pcr0;
        Ok(())
    }

    pub fn kms_client(&self, credentials: &Credentials) -> Result<KmsClient> {
        let ca = std::fs::read(self.kms.ca_pem())?;
        KmsClient::new(credentials.clone(), Some(self.kms.endpoint()), Some(&ca))
            .map_err(|e| anyhow!(e))
    }

    pub fn s3_client(&self, credentials: &Credentials) -> S3Client {
        let client = S3Client::new(credentials.region.clone(), credentials.clone())
            .with_endpoint(Some(self.s3.endpoint().to_owned()))
            .with_force_path_style(true);
        if self.s3.endpoint().starts_with("https://") {
            let pem = std::fs::read(self.kms.ca_pem()).unwrap_or_default();
            if let Ok(http) = bidding_parent::aws::http::HttpClient::with_ca_bundle(&pem) {
                return client.with_http(http);
            }
        }
        client
    }

    /// The buyers may read `auction`'s manifest and results (`s3://auction-results/<auction>/`,
    /// the parent's default prefix) and nothing else of the output bucket, as operator.yaml's
    /// bucket policy grants them.
    pub fn share_auction(&self, auction: &AuctionId) -> Result<()> {
        let buyers: Vec<String> = self.buyers.iter().map(|b| buyer_arn(&b.name)).collect();
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "BuyersReadTheirAuction", "Effect": "Allow",
                "Principal": {"AWS": buyers}, "Action": "s3:GetObject",
                "Resource": format!("arn:aws:s3:::{OUTPUT_BUCKET}/{auction}/*")}]
        });
        self.s3
            .put_bucket_policy(OUTPUT_BUCKET, &policy.to_string())
            .map_err(|e| anyhow!("the output bucket's policy: {e}"))
    }

    pub fn buyer(&self, name: &str) -> Result<&Buyer> {
        self.buyers
            .iter()
            .find(|b| b.name.as_str() == name)
            .ok_or_else(|| anyhow!("no buyer {name}"))
    }

    /// Encrypts a buyer's plaintext rows with the buyer's own key and credentials and uploads
    /// `encrypted.csv` to the buyer's bucket, as `bidctl encrypt --upload` does.
    pub fn seal_and_upload(
        &self,
        buyer: &Buyer,
        auction: &AuctionId,
        rows: &[PlaintextRow],
        context: bool,
    ) -> Result<Vec<u8>> {
        let client = self.kms_client(&buyer.credentials)?;
        let sealing = Sealing {
            key: &buyer.key,
            auction,
            buyer: &buyer.name,
            rules: self.rules,
            context,
        };
        let csv = seal_rows(&client, &sealing, rows, 8)?;
        self.s3_client(&buyer.credentials).put_object(
            &buyer.bucket,
            "encrypted.csv",
            &csv,
            "text/csv",
        )?;
        Ok(csv)
    }

    /// Encrypts a buyer's plaintext rows as ONE envelope file (one GenerateDataKey with the
    /// buyer's key and credentials; amounts at one width, the plaintext padded) and uploads it
    /// as `encrypted.csv` (the name the parent config uses for every format), as `bidctl
    /// encrypt --format envelope --upload` does.
    pub fn envelope_and_upload(
        &self,
        buyer: &Buyer,
        auction: &AuctionId,
        rows: &[PlaintextRow],
    ) -> Result<Vec<u8>> {
        let client = self.kms_client(&buyer.credentials)?;
        let plaintext = envelope_plaintext(rows, None);
        let file = envelope_file(
            &client,
            &buyer.key,
            auction,
            &buyer.name,
            self.rules,
            &plaintext,
        )?;
        self.upload_bid_file(buyer, &file)?;
        Ok(file)
    }

    /// Puts `file` as the buyer's `encrypted.csv`.
    pub fn upload_bid_file(&self, buyer: &Buyer, file: &[u8]) -> Result<()> {
        self.s3_client(&buyer.credentials).put_object(
            &buyer.bucket,
            "encrypted.csv",
            file,
            "application/octet-stream",
        )?;
        Ok(())
    }

    /// Starts a dev enclave as `exe __enclave ...`, listening on a Unix socket in the stack's
    /// directory, reaching KMS over TLS with the emulator's CA.
    pub fn start_enclave(&self, exe: &Path, name: &str, extra: &[&str]) -> Result<EnclaveProcess> {
        let socket = self.dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let log = self.dir.join(format!("{name}.log"));
        let mut cmd = Command::new(exe);
        if self.enclave_dies_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("__enclave")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--kms-proxy")
            .arg(format!("tcp:{}", self.kms.addr()))
            .arg("--kms-ca")
            .arg(self.kms.ca_pem())
            .arg("--soft-nsm")
            .arg(&self.nsm_dir)
            .arg("--rules")
            .arg(self.rules.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {} __enclave", exe.display()))?;
        crate::cleanup::register_child(child.id());
        let mut process = EnclaveProcess {
            child,
            endpoint: Endpoint::Unix(socket.display().to_string()),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "the dev enclave exited at start ({status}); its log:\n{}",
                    process.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the dev enclave did not listen within 20 s; its log:\n{}",
                    process.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(process)
    }

    /// The parent's TOML configuration for a sealed auction among the stack's buyers.
    pub fn parent_config(
        &self,
        auction: &AuctionId,
        enclave: &Endpoint,
        reveal: &str,
        allow_no_context: bool,
    ) -> String {
        self.parent_config_mode(auction, enclave, reveal, allow_no_context, true)
    }

    /// The same, sealed or not.
    pub fn parent_config_mode(
        &self,
        auction: &AuctionId,
        enclave: &Endpoint,
        reveal: &str,
        allow_no_context: bool,
        sealed: bool,
    ) -> String {
        *self
            .current_auction
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(auction.clone());
        let mut t = format!(
            "auction_id = \"{auction}\"\nregion = \"{REGION}\"\nenclave = \"{enclave}\"\nexpected_pcr0 = \"{}\"\nallow_dev_enclave = true\nattestation_root = \"{}\"\nreveal = \"{reveal}\"\nallow_no_context = {allow_no_context}\nsealed = {sealed}\ns3_endpoint = \"{}\"\nlock_file = \"{}\"\n\n[output]\nbucket = \"{OUTPUT_BUCKET}\"\n",
            hex::encode(self.pcr0),
            self.dev_root_pem.display(),
            self.s3.endpoint(),
            self.dir.join("parent.lock").display(),
        );
        for b in &self.buyers {
            t.push_str(&format!(
                "\n[[buyers]]\nname = \"{}\"\nbucket = \"{}\"\nkey = \"encrypted.csv\"\nkey_arn = \"{}\"\n",
                b.name, b.bucket, b.key
            ));
        }
        t
    }

    /// The operator makes the manifest (`bidding-parent manifest`); returns its bytes as
    /// written to the output bucket.
    pub fn make_manifest(&self, exe: &Path, config: &Path) -> Result<Vec<u8>> {
        let out = self
            .parent_command_with(exe, &["manifest"], config, &[])
            .output()?;
        if !out.status.success() {
            bail!(
                "bidding-parent manifest failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // It prints `H  s3://BUCKET/KEY`.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let url = stdout
            .split_whitespace()
            .find(|w| w.starts_with("s3://"))
            .ok_or_else(|| anyhow!("bidding-parent manifest printed no s3:// URL: {stdout}"))?;
        let (bucket, key) = bidding_parent::config::parse_s3_url(url).map_err(|e| anyhow!(e))?;
        Ok(self
            .s3_client(&self.operator)
            .get_object(&bucket, &key, 256 * 1024 * 1024)?)
    }

    /// One buyer seals `manifest` with their own key and uploads the seal next to their bid
    /// file as the manifest names it (`<key>.seal`), with the metadata naming the manifest, as
    /// `bidctl seal --upload` does.
    pub fn seal(&self, buyer: &Buyer, manifest: &[u8]) -> Result<Vec<u8>> {
        let m = bidding_core::manifest::Manifest::parse(manifest).map_err(|e| anyhow!("{e}"))?;
        let file = m
            .file(&buyer.name)
            .ok_or_else(|| anyhow!("{} is not in the manifest", buyer.name))?;
        let context =
            bidding_core::manifest::seal_context(m.terms().auction_id(), &buyer.name, &m.digest());
        let seal = self.kms_client(&buyer.credentials)?.encrypt(
            buyer.key.as_str(),
            bidding_core::manifest::SEAL_MARKER,
            Some(context),
        )?;
        let text = format!(
            "{}\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &seal)
        );
        let digest = hex::encode(m.digest());
        let auction = m.terms().auction_id().to_string();
        self.s3_client(&buyer.credentials)
            .put_object_with_metadata(
                &file.bucket,
                &format!("{}.seal", file.key),
                text.as_bytes(),
                "text/plain",
                &[
                    (bidding_parent::run::SEAL_METADATA_MANIFEST, &digest),
                    (bidding_parent::run::SEAL_METADATA_AUCTION, &auction),
                ],
            )?;
        Ok(seal)
    }

    /// The whole seal round: the operator makes the manifest, every buyer seals it.
    pub fn seal_round(&self, exe: &Path, config: &Path) -> Result<Vec<u8>> {
        let manifest = self.make_manifest(exe, config)?;
        for b in &self.buyers {
            self.seal(b, &manifest)?;
        }
        Ok(manifest)
    }

    /// Runs the parent (`exe __parent --config FILE ...`) with the operator's credentials in
    /// its environment, and waits for it.
    pub fn run_parent(&self, exe: &Path, config: &Path, extra: &[&str]) -> Result<ParentRun> {
        let mut cmd = self.parent_command(exe, config, extra);
        let out = cmd
            .output()
            .with_context(|| format!("running {} __parent", exe.display()))?;
        Ok(ParentRun {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The parent as a command, for callers that need the child process itself.
    pub fn parent_command(&self, exe: &Path, config: &Path, extra: &[&str]) -> Command {
        self.parent_command_with(exe, &[], config, extra)
    }

    /// The parent with words before its flags (`manifest`).
    pub fn parent_command_with(
        &self,
        exe: &Path,
        words: &[&str],
        config: &Path,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new(exe);
        cmd.arg("__parent")
            .args(words)
            .arg("--config")
            .arg(config)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", &self.operator.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.operator.secret_access_key.expose(),
            )
            .env("AWS_REGION", REGION)
            .env("AWS_CA_BUNDLE", self.kms.ca_pem())
            // Nothing here may reach for the real instance metadata service.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        cmd
    }

    /// Reads an object of the output bucket through S3, as a user would: `key` under the
    /// prefix of the auction of the last configuration written (`<auction id>/`).
    pub fn fetch_output(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.s3_client(&self.operator).get_object(
            OUTPUT_BUCKET,
            &self.output_key(key),
            256 * 1024 * 1024,
        )?)
    }

    /// `key` under the prefix of the auction of the last configuration written.
    pub fn output_key(&self, key: &str) -> String {
        match &*self
            .current_auction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(a) => format!("{a}/{key}"),
            None => key.to_owned(),
        }
    }
}

pub struct ParentRun {
    pub code: Option<i32>,
    pub stderr: String,
}

/// A dev enclave child process; killed (by its PID) when dropped.
pub struct EnclaveProcess {
    pub child: Child,
    pub endpoint: Endpoint,
    pub log: PathBuf,
}

impl EnclaveProcess {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::cleanup::unregister_child(self.child.id());
    }
}

impl Drop for EnclaveProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
