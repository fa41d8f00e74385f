//! The credential chain with injected environments and temporary files, IMDSv2 and STS
//! against local fakes that follow AWS's documented request and response shapes, and a
//! sweep for secrets in errors and Debug output.

mod common;

use bidding_core::credentials::Secret;
use bidding_core::sigv4::{self, KnownKey};
use bidding_parent::aws::Env;
use bidding_parent::aws::credentials::{
    AssumeRole, CredentialSource, CredentialsError, Imds, Provider,
};
use bidding_parent::aws::http::HttpClient;
use common::{FakeRequest, FakeServer, creds, quick_retry, region, respond};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const ENV_SECRET: &str = "EnvSecretValue/0000000000000000000000000";
const FILE_SECRET: &str = "FileSecretValue/000000000000000000000000";
const IMDS_SECRET: &str = "ImdsSecretValue/000000000000000000000000";
const IMDS_TOKEN: &str = "ImdsSessionTokenValue//////////////////";
const STS_SECRET: &str = "StsSecretValue/0000000000000000000000000";
const STS_TOKEN: &str = "StsSessionTokenValue///////////////////";
const ALL_SECRETS: [&str; 6] = [
    ENV_SECRET,
    FILE_SECRET,
    IMDS_SECRET,
    IMDS_TOKEN,
    STS_SECRET,
    STS_TOKEN,
];

/// 2099-01-01T00:00:00Z
const FAR_FUTURE: u64 = 4_070_908_800;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn assert_no_secret(text: &str) {
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "secret leaked into: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Environment and shared files

#[test]
fn environment_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        ".aws/credentials",
        &format!(
            "[default]\naws_access_key_id = AKIAFILEKEY000000001\naws_secret_access_key = {FILE_SECRET}\n"
        ),
    );
    let home = dir.path().display().to_string();
    let e = env(&[
        ("HOME", &home),
        ("AWS_ACCESS_KEY_ID", "AKIAENVKEY0000000001"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_SESSION_TOKEN", "envtoken"),
    ]);
    let (c, provider) = CredentialSource::chain(e, region())
        .fetch_with_provider()
        .unwrap();
    assert_eq!(provider, Provider::Environment);
    assert_eq!(c.access_key_id, "AKIAENVKEY0000000001");
    assert_eq!(c.secret_access_key.expose(), ENV_SECRET);
    assert_eq!(
        c.session_token.as_ref().map(Secret::expose),
        Some("envtoken")
    );
    assert_eq!((c.expiration, c.region.as_str()), (None, "us-east-1"));

    // Without the environment, the default profile under $HOME/.aws.
    let e = env(&[("HOME", &home)]);
    let (c, provider) = CredentialSource::chain(e, region())
        .fetch_with_provider()
        .unwrap();
    assert_eq!(
        provider,
        Provider::Profile {
            name: "default".into()
        }
    );
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.expose()),
        ("AKIAFILEKEY000000001", FILE_SECRET)
    );
    assert_eq!(c.session_token, None);
}

#[test]
fn half_an_environment_pair_is_an_error_not_a_fall_through() {
    let e = env(&[("AWS_ACCESS_KEY_ID", "AKIAENVKEY0000000001")]);
    let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
    assert!(
        matches!(err, CredentialsError::Environment { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "environment credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
    );
    let e = env(&[
        ("AWS_ACCESS_KEY_ID", "not a key id"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
    ]);
    let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
    assert!(
        matches!(
            err,
            CredentialsError::Invalid {
                provider: Provider::Environment,
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_secret(&format!("{err} {err:?}"));
}

#[test]
fn named_profile_from_both_files_with_the_credentials_file_winning() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "cfg/config",
        "[default]\nregion = eu-west-1\n\n[profile auction]\nregion = eu-west-1\naws_access_key_id = AKIACONFIGKEY0000001\naws_secret_access_key = from-config\ns3 =\n  addressing_style = path\n",
    );
    let credentials = write(
        dir.path(),
        "cfg/credentials",
        &format!(
            "# operator keys\n[auction]\naws_secret_access_key = {FILE_SECRET}\naws_session_token = filetoken\n[other]\naws_access_key_id = AKIAOTHER00000000001\n"
        ),
    );
    let e = env(&[
        ("AWS_CONFIG_FILE", &config),
        ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
        ("AWS_PROFILE", "auction"),
    ]);
    let (c, provider) = CredentialSource::chain(e.clone(), region())
        .fetch_with_provider()
        .unwrap();
    assert_eq!(
        provider,
        Provider::Profile {
            name: "auction".into()
        }
    );
    assert_eq!(c.access_key_id, "AKIACONFIGKEY0000001");
    assert_eq!(c.secret_access_key.expose(), FILE_SECRET);
    assert_eq!(
        c.session_token.as_ref().map(Secret::expose),
        Some("filetoken")
    );

    // An explicit name beats AWS_PROFILE; a missing one is an error naming both files.
    let err = CredentialSource::profile(e, region(), Some("absent".into()))
        .fetch()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("shared config profile `absent`: not found in "),
        "{msg}"
    );
    assert!(msg.contains(&credentials) && msg.contains(&config), "{msg}");
}

#[test]
fn profiles_needing_other_providers_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config",
        "[profile sso]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n\
         [profile proc]\ncredential_process = /bin/creds\n\
         [profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = default\n",
    );
    for (profile, key) in [
        ("sso", "sso_start_url"),
        ("proc", "credential_process"),
        ("role", "role_arn"),
    ] {
        let e = env(&[
            ("AWS_CONFIG_FILE", &config),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ("AWS_PROFILE", profile),
        ]);
        let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::Profile { .. }), "{err:?}");
        assert!(
            msg.contains(&format!(
                "it sets `{key}`, which this program does not support"
            )),
            "{msg}"
        );
    }
}

#[test]
fn malformed_shared_file_errors_give_the_line_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = write(
        dir.path(),
        "credentials",
        &format!("[default]\naws_access_key_id = AKIAFILEKEY000000001\n{FILE_SECRET}\n"),
    );
    let e = env(&[
        ("AWS_SHARED_CREDENTIALS_FILE", &credentials),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
    ]);
    let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("line 3: expected `[section]` or `key = value`"),
        "{msg}"
    );
    assert_no_secret(&format!("{msg} {err:?}"));
}

#[test]
fn nothing_configured_lists_what_was_tried() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().display().to_string();
    write(dir.path(), ".aws/config", "[default]\nregion = eu-west-1\n");
    let e = env(&[("HOME", &home), ("AWS_EC2_METADATA_DISABLED", "true")]);
    let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
    let CredentialsError::NotFound { tried } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0].starts_with("environment:"));
    assert!(tried[1].starts_with("shared files: no keys for profile `default`"));
    assert_eq!(tried[2], "instance role: AWS_EC2_METADATA_DISABLED is set");

    // With IMDS enabled but nothing listening, the chain says so and ends.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let e = env(&[
        ("HOME", &home),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
    ]);
    let err = CredentialSource::chain(e, region()).fetch().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("no AWS credentials found: environment:"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "instance role (IMDSv2 at {endpoint}): no instance metadata service answered"
        )),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// IMDSv2

#[derive(Default)]
struct ImdsState {
    /// (token, expiry)
    tokens: Vec<(String, Instant)>,
    puts: u32,
    ttls_asked: Vec<String>,
    unauthorized: u32,
    role: Option<String>,
    document: String,
    refuse_all_gets: bool,
}

struct FakeImds {
    server: FakeServer,
    state: Arc<Mutex<ImdsState>>,
}

fn credential_document(expiration: &str) -> String {
    format!(
        r#"{{
  "Code" : "Success",
  "LastUpdated" : "2026-11-27T11:50:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAIMDSKEY000000001",
  "SecretAccessKey" : "{IMDS_SECRET}",
  "Token" : "{IMDS_TOKEN}",
  "Expiration" : "{expiration}"
}}"#
    )
}

impl FakeImds {
    /// Behaves as IMDS with IMDSv2 required (`HttpTokens=required`).
    fn start() -> Self {
        let state = Arc::new(Mutex::new(ImdsState {
            role: Some("bidding-parent-role".into()),
            document: credential_document("2099-01-01T00:00:00Z"),
            ..Default::default()
        }));
        let s = state.clone();
        let server = FakeServer::start(move |req, stream| {
            let mut st = s.lock().unwrap();
            if req.target == "/latest/api/token" {
                if req.method != "PUT" {
                    return respond(stream, 405, &[], b"");
                }
                let ttl = req
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .unwrap_or("")
                    .to_owned();
                st.ttls_asked.push(ttl.clone());
                let Some(secs) = ttl.parse::<u64>().ok().filter(|s| (1..=21_600).contains(s))
                else {
                    return respond(stream, 400, &[], b"");
                };
                st.puts += 1;
                let token = format!("TOKEN-{}-AQAEAPHs0XwFqk", st.puts);
                st.tokens
                    .push((token.clone(), Instant::now() + Duration::from_secs(secs)));
                return respond(
                    stream,
                    200,
                    &[("x-aws-ec2-metadata-token-ttl-seconds", &ttl)],
                    token.as_bytes(),
                );
            }
            let valid = req.header("x-aws-ec2-metadata-token").is_some_and(|t| {
                st.tokens
                    .iter()
                    .any(|(v, exp)| v == t && Instant::now() < *exp)
            });
            if !valid || st.refuse_all_gets {
                st.unauthorized += 1;
                return respond(stream, 401, &[], b"");
            }
            const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
            match (req.target.strip_prefix(ROLES), &st.role) {
                (Some(""), Some(role)) => respond(stream, 200, &[], role.as_bytes()),
                (Some(r), Some(role)) if r == role => {
                    respond(stream, 200, &[], st.document.as_bytes())
                }
                _ => respond(stream, 404, &[], b""),
            }
        });
        FakeImds { server, state }
    }

    fn env(&self) -> Env {
        env(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &self.server.url()),
            ("HOME", "/nonexistent"),
        ])
    }

    fn source(&self) -> CredentialSource {
        CredentialSource::instance_role(self.env(), region())
    }
}

#[test]
fn fake_imds_requires_the_token_like_imdsv2() {
    let imds = FakeImds::start();
    let mut s = TcpStream::connect(imds.server.addr).unwrap();
    s.write_all(b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn imds_token_then_role_then_credentials() {
    let imds = FakeImds::start();
    let (c, provider) = imds.source().fetch_with_provider().unwrap();
    assert_eq!(
        provider,
        Provider::InstanceRole {
            role: "bidding-parent-role".into()
        }
    );
    assert_eq!(c.access_key_id, "ASIAIMDSKEY000000001");
    assert_eq!(c.secret_access_key.expose(), IMDS_SECRET);
    assert_eq!(
        c.session_token.as_ref().map(Secret::expose),
        Some(IMDS_TOKEN)
    );
    assert_eq!(c.expiration, Some(FAR_FUTURE));

    let reqs = imds.server.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/iam/security-credentials/"),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/bidding-parent-role"
            ),
        ]
    );
    assert_eq!(
        reqs[0].header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.header("x-aws-ec2-metadata-token") == Some("TOKEN-1-AQAEAPHs0XwFqk"))
    );
    assert_eq!(imds.state.lock().unwrap().unauthorized, 0);
}

#[test]
fn imds_token_is_reused_within_its_ttl_and_renewed_after() {
    let imds = FakeImds::start();
    let source = imds.source();
    source.fetch().unwrap();
    source.fetch().unwrap();
    assert_eq!(
        imds.state.lock().unwrap().puts,
        1,
        "one token serves both refreshes"
    );

    let imds = FakeImds::start();
    let source = imds
        .source()
        .with_imds(Imds::new(imds.server.url()).with_token_ttl(Duration::from_secs(1)));
    source.fetch().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    source.fetch().unwrap();
    let st = imds.state.lock().unwrap();
    assert_eq!(st.ttls_asked, ["1", "1"]);
    assert_eq!(
        (st.puts, st.unauthorized),
        (2, 0),
        "the client knew its token had expired"
    );
}

#[test]
fn imds_401_gets_a_new_token_and_one_retry() {
    let imds = FakeImds::start();
    let source = imds.source();
    source.fetch().unwrap();
    // IMDS forgot every token (as after a restart) before the cached one ran out.
    imds.state.lock().unwrap().tokens.clear();
    let c = source.fetch().unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDSKEY000000001");
    let st = imds.state.lock().unwrap();
    assert_eq!((st.puts, st.unauthorized), (2, 1));
    drop(st);

    // A 401 with a brand-new token too: give up, don't loop.
    imds.state.lock().unwrap().refuse_all_gets = true;
    let before = imds.server.requests().len();
    let err = source.fetch().unwrap_err();
    assert!(
        err.to_string()
            .contains("refused a freshly issued session token (HTTP 401)"),
        "{err}"
    );
    // GET (401), PUT, GET (401).
    assert_eq!(imds.server.requests().len() - before, 3);
}

#[test]
fn imds_without_a_role_and_with_bad_documents() {
    let imds = FakeImds::start();
    imds.state.lock().unwrap().role = None;
    let err = imds.source().fetch().unwrap_err();
    assert!(
        matches!(err, CredentialsError::InstanceRole { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no IAM role is attached to this instance"),
        "{err}"
    );
    // In the chain, no role means "not configured": the chain reports it among the others.
    let err = CredentialSource::chain(imds.env(), region())
        .fetch()
        .unwrap_err();
    assert!(matches!(err, CredentialsError::NotFound { .. }), "{err:?}");

    let cases = [
        (
            credential_document("next tuesday"),
            "Expiration `next tuesday` is not an RFC 3339 time",
        ),
        (
            credential_document("2001-01-01T00:00:00Z"),
            "credentials expired at 978307200",
        ),
        (
            credential_document("x")
                .replace("\"Success\"", "\"Failure\"")
                .replace("\"Type\"", "\"Message\" : \"role is broken\", \"T\""),
            "IMDS reports Code `Failure`: role is broken",
        ),
        (
            format!(
                "{{\"AccessKeyId\":\"ASIAIMDSKEY000000001\",\"SecretAccessKey\":\"{IMDS_SECRET}\"}}"
            ),
            "lack Token, Expiration",
        ),
        (
            format!("{{\"SecretAccessKey\":\"{IMDS_SECRET}\",\"Token\":\"{IMDS_TOKEN}\", oops"),
            "not the expected JSON",
        ),
        (
            format!("{{\"SecretAccessKey\":[\"{IMDS_SECRET}\"]}}"),
            "not the expected JSON",
        ),
    ];
    for (doc, expected) in cases {
        let imds = FakeImds::start();
        imds.state.lock().unwrap().document = doc;
        let err = imds.source().fetch().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expected), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "EC2 instance role (IMDSv2 at {}): ",
                imds.server.url()
            )),
            "{msg}"
        );
        assert_no_secret(&format!("{msg} {err:?}"));
        // A broken answer stops the chain rather than being reported as "not found".
        let err = CredentialSource::chain(imds.env(), region())
            .fetch()
            .unwrap_err();
        assert!(
            matches!(err, CredentialsError::InstanceRole { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn default_profile_without_keys_falls_through_to_the_instance_role() {
    let imds = FakeImds::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".aws/config", "[default]\nregion = eu-west-1\n");
    let home = dir.path().display().to_string();
    let e = env(&[
        ("HOME", &home),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.server.url()),
    ]);
    let (_, provider) = CredentialSource::chain(e, region())
        .fetch_with_provider()
        .unwrap();
    assert_eq!(
        provider,
        Provider::InstanceRole {
            role: "bidding-parent-role".into()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// STS

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/auction-reader";

#[derive(Clone, Copy)]
enum StsScript {
    Succeed,
    Deny,
    ThrottleOnce,
    Garbage,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// STS `AssumeRole` as documented: a form-encoded POST to `/`, SigV4 for service `sts`
/// (checked in full with the base key), XML answers.
fn fake_sts(
    script: StsScript,
    base_secret: &'static str,
    base_token: Option<&'static str>,
) -> FakeServer {
    let calls = Arc::new(Mutex::new(0u32));
    FakeServer::start(move |req: &FakeRequest, stream| {
        let n = {
            let mut c = calls.lock().unwrap();
            *c += 1;
            *c
        };
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let verified = sigv4::verify(
            &req.method,
            &req.target,
            &headers,
            &req.body,
            "sts",
            "us-east-1",
            |id| {
                (id == "AKIABASEKEY000000001").then(|| KnownKey {
                    secret: Secret::new(base_secret),
                    session_token: base_token.map(Secret::new),
                })
            },
            SystemTime::now(),
            Duration::from_secs(300),
        );
        if let Err(e) = verified {
            let body = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>{e}</Message></Error><RequestId>sig-{n}</RequestId></ErrorResponse>"
            );
            return respond(
                stream,
                403,
                &[("content-type", "text/xml")],
                body.as_bytes(),
            );
        }
        let auth = req.header("authorization").unwrap();
        assert!(auth.contains("/us-east-1/sts/aws4_request"), "{auth}");
        assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/"));
        assert_eq!(
            req.header("content-type"),
            Some("application/x-www-form-urlencoded; charset=utf-8")
        );
        let form: Vec<(String, String)> = std::str::from_utf8(&req.body)
            .unwrap()
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let get = |k: &str| form.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Action"), Some("AssumeRole"));
        assert_eq!(get("Version"), Some("2011-06-15"));
        assert_eq!(get("RoleArn"), Some(ROLE_ARN));
        assert_eq!(get("RoleSessionName"), Some("auction-2026.11@parent"));
        assert_eq!(get("DurationSeconds"), Some("1800"));
        let ok = format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleResult>\n    <SourceIdentity>parent</SourceIdentity>\n    <AssumedRoleUser>\n      <Arn>arn:aws:sts::123456789012:assumed-role/auction-reader/auction-2026.11@parent</Arn>\n      <AssumedRoleId>ARO123EXAMPLE123:auction-2026.11@parent</AssumedRoleId>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>ASIASTSKEY0000000001</AccessKeyId>\n      <SecretAccessKey>{STS_SECRET}</SecretAccessKey>\n      <SessionToken>{STS_TOKEN}</SessionToken>\n      <Expiration>2099-01-01T00:00:00Z</Expiration>\n    </Credentials>\n    <PackedPolicySize>6</PackedPolicySize>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n"
        );
        let error = |code: &str, message: &str| {
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  </Error>\n  <RequestId>req-{n}</RequestId>\n</ErrorResponse>\n"
            )
        };
        match script {
            StsScript::Succeed => respond(stream, 200, &[("content-type", "text/xml")], ok.as_bytes()),
            StsScript::ThrottleOnce if n == 1 => respond(stream, 400, &[], error("Throttling", "Rate exceeded").as_bytes()),
            StsScript::ThrottleOnce => respond(stream, 200, &[], ok.as_bytes()),
            StsScript::Deny => respond(
                stream,
                403,
                &[],
                error("AccessDenied", &format!("User: arn:aws:iam::123456789012:user/parent is not authorized to perform: sts:AssumeRole on resource: {ROLE_ARN}")).as_bytes(),
            ),
            StsScript::Garbage => respond(stream, 200, &[], format!("<AssumeRoleResponse><AssumeRoleResult><Credentials><SecretAccessKey>{STS_SECRET}</SecretAccessKey><SessionToken>{STS_TOKEN}</Sess").as_bytes()),
        }
    })
}

fn role(server: &FakeServer) -> AssumeRole {
    AssumeRole::new(ROLE_ARN, "auction-2026.11@parent")
        .with_duration(Duration::from_secs(1800))
        .with_endpoint(Some(server.url()))
        .with_retry(quick_retry(3))
}

#[test]
fn assume_role_signs_for_sts_and_reads_the_documented_xml() {
    for token in [None, Some("base-session-token")] {
        let server = fake_sts(StsScript::Succeed, ENV_SECRET, token);
        let base = creds("AKIABASEKEY000000001", ENV_SECRET, token);
        let c = role(&server)
            .call(HttpClient::shared(), &base, &region())
            .unwrap();
        assert_eq!(c.access_key_id, "ASIASTSKEY0000000001");
        assert_eq!(c.secret_access_key.expose(), STS_SECRET);
        assert_eq!(
            c.session_token.as_ref().map(Secret::expose),
            Some(STS_TOKEN)
        );
        assert_eq!(c.expiration, Some(FAR_FUTURE));
        assert_eq!(server.requests().len(), 1);
        assert_eq!(server.requests()[0].header("x-amz-security-token"), token);
    }
}

#[test]
fn assume_role_on_top_of_the_chain_uses_the_sts_endpoint_from_the_environment() {
    let server = fake_sts(StsScript::Succeed, ENV_SECRET, None);
    let e = env(&[
        ("AWS_ACCESS_KEY_ID", "AKIABASEKEY000000001"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_ENDPOINT_URL_STS", &server.url()),
    ]);
    let source = CredentialSource::chain(e, region()).assume_role(
        AssumeRole::new(ROLE_ARN, "auction-2026.11@parent")
            .with_duration(Duration::from_secs(1800)),
    );
    let (c, provider) = source.fetch_with_provider().unwrap();
    assert_eq!(
        provider,
        Provider::AssumeRole {
            role_arn: ROLE_ARN.into()
        }
    );
    assert_eq!(c.access_key_id, "ASIASTSKEY0000000001");
    // Refreshing is fetching again.
    source.fetch().unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn sts_errors_carry_code_message_and_request_id() {
    let server = fake_sts(StsScript::Deny, ENV_SECRET, None);
    let base = creds("AKIABASEKEY000000001", ENV_SECRET, None);
    let err = role(&server)
        .call(HttpClient::shared(), &base, &region())
        .unwrap_err();
    let CredentialsError::StsRejected {
        status,
        code,
        message,
        request_id,
        attempts,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*status, code.as_deref(), request_id.as_deref(), *attempts),
        (403, Some("AccessDenied"), Some("req-1"), 1)
    );
    assert!(
        message
            .as_deref()
            .unwrap()
            .contains("is not authorized to perform: sts:AssumeRole")
    );
    assert_eq!(server.requests().len(), 1, "AccessDenied is final");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "STS AssumeRole of {ROLE_ARN} at {}/: HTTP 403 AccessDenied: User: ",
            server.url()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("(request id req-1; after 1 attempt(s))"),
        "{msg}"
    );

    // A wrong base secret: the fake's own SigV4 check refuses it.
    let server = fake_sts(StsScript::Succeed, ENV_SECRET, None);
    let base = creds("AKIABASEKEY000000001", "wrong-secret", None);
    let err = role(&server)
        .call(HttpClient::shared(), &base, &region())
        .unwrap_err();
    assert!(
        err.to_string().contains("HTTP 403 SignatureDoesNotMatch"),
        "{err}"
    );
}

#[test]
fn sts_throttling_is_retried() {
    let server = fake_sts(StsScript::ThrottleOnce, ENV_SECRET, None);
    let base = creds("AKIABASEKEY000000001", ENV_SECRET, None);
    role(&server)
        .call(HttpClient::shared(), &base, &region())
        .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn sts_garbage_is_an_error_without_the_secret_in_it() {
    let server = fake_sts(StsScript::Garbage, ENV_SECRET, None);
    let base = creds("AKIABASEKEY000000001", ENV_SECRET, None);
    let err = role(&server)
        .call(HttpClient::shared(), &base, &region())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not the documented AssumeRoleResponse XML"),
        "{err}"
    );
    assert_no_secret(&format!("{err} {err:?}"));
}

// ---------------------------------------------------------------------------------------------
// Secrets never printed

#[test]
fn debug_output_of_every_type_holding_secrets_is_redacted() {
    let imds = FakeImds::start();
    let source = imds.source();
    let c = source.fetch().unwrap();
    let sts = fake_sts(StsScript::Succeed, IMDS_SECRET, Some(IMDS_TOKEN));
    let assumed = role(&sts).call(HttpClient::shared(), &c, &region());
    let e = env(&[
        ("AWS_ACCESS_KEY_ID", "AKIAENVKEY0000000001"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
    ]);
    let chain = CredentialSource::chain(e.clone(), region()).assume_role(role(&sts));
    let s3 = bidding_parent::aws::s3::S3Client::new(region(), c.clone());
    // The IMDS client now caches a session token: its Debug must not show it either.
    let texts = [
        format!("{c:?}"),
        format!("{source:?}"),
        format!("{assumed:?}"),
        format!("{chain:?}"),
        format!("{e:?}"),
        format!("{s3:?}"),
    ];
    for t in &texts {
        assert_no_secret(t);
        assert!(!t.contains("TOKEN-1-AQAEAPHs0XwFqk"), "{t}");
    }
    assert!(
        texts[0].contains("ASIAIMDSKEY000000001"),
        "the key id is not secret: {}",
        texts[0]
    );
}
