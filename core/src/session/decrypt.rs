//! One ciphertext to open with KMS: what the session asks for ([`DecryptJob`]), what it gets
//! back ([`DecryptOutcome`]), and the driver's rules in between ([`DecryptAttempts`]): which
//! request to send, what each answer means, when to try again and when to give up.
//!
//! The rules live here, not in the driver, so that the enclave (`enclave-init`'s KMS workers)
//! and the information-flow search (`core/tests/infoflow.rs`, whose model KMS answers them)
//! follow exactly the same ones: the number, order and sizes of the requests an operator sees
//! relayed are these rules' doing.

use super::Millis;
use crate::auction::Reason;
use crate::credentials::Credentials;
use crate::kms::{self, EncodedRecipient, Failure};
use crate::names::KeyArn;
use crate::wire::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identifies one ciphertext being opened. The driver hands it back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BidTicket {
    /// A serial number, unique in the session.
    pub request: u64,
    /// The session's slot for the job.
    pub index: usize,
}

/// A ciphertext for the driver to open with KMS Decrypt (Recipient = the enclave's key).
#[derive(Debug, Clone)]
pub struct DecryptJob {
    pub ticket: BidTicket,
    /// Passed to Decrypt as `KeyId`; the answer's `KeyId` must equal it.
    pub key_arn: KeyArn,
    pub ciphertext: Vec<u8>,
    /// The encryption context: {auction, lot, buyer, rules} for a sealed bid ({auction, lot,
    /// buyer} for an unsealed one), {auction, buyer, manifest} for a seal, the header's for
    /// an envelope file's data key.
    pub context: BTreeMap<String, String>,
    /// When KMS refuses the ciphertext with the context, try once more without it (bids made
    /// with plain `aws kms encrypt`, allowed by an unsealed auction's terms). Never for seals,
    /// never in a sealed auction.
    pub retry_without_context: bool,
    pub credentials: Arc<Credentials>,
}

/// What the driver reports for a [`DecryptJob`].
pub enum DecryptOutcome {
    /// The plaintext, opened from KMS's CiphertextForRecipient inside the enclave.
    Plaintext(crate::cms::Plaintext),
    /// KMS refused this ciphertext for a reason only its maker can cause.
    Disqualified(Reason),
    /// Nothing can be decided (credentials refused, access denied, a key made unusable, KMS
    /// unreachable within the deadline, an answer that makes no sense). Ends the auction.
    Fatal { code: ErrorCode, message: String },
}

/// The next thing a driver does for a job.
pub enum Step {
    /// Send the request [`DecryptAttempts::body`] gives, now.
    Send,
    /// Wait this long, then send.
    Wait(Millis),
    /// KMS answered with a CiphertextForRecipient: open it with the enclave's key; a failure
    /// to open is [`DecryptAttempts::unopenable`].
    Open(Vec<u8>),
    /// The job is decided.
    Done(DecryptOutcome),
}

/// The rules for one job: Decrypt with the job's context (and, where the terms allow, once
/// more without it); throttling, KMS-side failures and lost connections retried with
/// exponential backoff and full jitter until the deadline; every other answer decides.
pub struct DecryptAttempts {
    with_context: bool,
    attempts: u32,
    deadline: Millis,
    deadline_secs: u64,
}

impl DecryptAttempts {
    /// A job started at `now` that may take `deadline` ms, retries included.
    pub fn new(now: Millis, deadline: Millis) -> DecryptAttempts {
        DecryptAttempts {
            with_context: true,
            attempts: 0,
            deadline: now.saturating_add(deadline),
            deadline_secs: deadline / 1000,
        }
    }

    /// The body of the next Decrypt request.
    pub fn body(&self, job: &DecryptJob, recipient: &EncodedRecipient) -> Vec<u8> {
        kms::decrypt_body(
            &job.ciphertext,
            job.key_arn.as_str(),
            self.with_context.then_some(&job.context),
            recipient,
        )
    }

    /// Requests sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// KMS answered the request with `status` and `body`. `jitter` is a random number (the
    /// driver's) that spreads retries.
    pub fn answered(
        &mut self,
        job: &DecryptJob,
        status: u16,
        body: &[u8],
        now: Millis,
        jitter: u64,
    ) -> Step {
        self.attempts += 1;
        let failure = if (200..300).contains(&status) {
            match kms::recipient_ciphertext(body, job.key_arn.as_str()) {
                Ok(cfr) => return Step::Open(cfr),
                Err(f) => f,
            }
        } else {
            kms::classify_error(status, body)
        };
        self.judge(job, failure, now, jitter)
    }

    /// The request got no answer (the connection was lost, or timed out).
    pub fn lost(&mut self, job: &DecryptJob, problem: String, now: Millis, jitter: u64) -> Step {
        self.attempts += 1;
        let failure = Failure::Retry {
            code: "ConnectionError".into(),
            message: problem,
        };
        self.judge(job, failure, now, jitter)
    }

    /// The CiphertextForRecipient did not open with the enclave's key.
    pub fn unopenable(problem: String) -> DecryptOutcome {
        DecryptOutcome::Fatal {
            code: ErrorCode::KmsFailure,
            message: format!("cannot open KMS's CiphertextForRecipient: {problem}"),
        }
    }

    fn judge(&mut self, job: &DecryptJob, failure: Failure, now: Millis, jitter: u64) -> Step {
        let fatal = |code, message| Step::Done(DecryptOutcome::Fatal { code, message });
        match failure {
            Failure::Bid(Reason::Undecryptable)
                if self.with_context && job.retry_without_context =>
            {
                self.with_context = false;
                Step::Send
            }
            Failure::Bid(reason) => Step::Done(DecryptOutcome::Disqualified(reason)),
            Failure::Credentials { code, message } => fatal(
                ErrorCode::KmsCredentials,
                format!("KMS refused the credentials: {code}: {message}"),
            ),
            Failure::Denied { code, message } => fatal(
                ErrorCode::KmsAccessDenied,
                format!(
                    "KMS denied access to {}: {code}: {message} (the key policy must allow this role to Decrypt with this enclave's measurement)",
                    job.key_arn
                ),
            ),
            Failure::KeyState { code, message } => fatal(
                ErrorCode::KeyUnavailable,
                format!("key {} is not usable: {code}: {message}", job.key_arn),
            ),
            Failure::Fatal { code, message } => fatal(
                ErrorCode::KmsFailure,
                format!("KMS Decrypt failed: {code}: {message}"),
            ),
            Failure::Retry { code, message } => {
                let pause = backoff(self.attempts - 1, jitter);
                if now.saturating_add(pause) >= self.deadline {
                    return fatal(
                        ErrorCode::KmsUnavailable,
                        format!(
                            "KMS did not answer within {} s ({} attempts; last: {code}: {message})",
                            self.deadline_secs, self.attempts
                        ),
                    );
                }
                Step::Wait(pause)
            }
        }
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(2 s, 50 ms · 2^attempt)].
pub fn backoff(attempt: u32, jitter: u64) -> Millis {
    let cap = 50u64.saturating_mul(1 << attempt.min(10)).min(2_000);
    jitter % (cap + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Region;

    fn job(retry_without_context: bool) -> DecryptJob {
        DecryptJob {
            ticket: BidTicket {
                request: 1,
                index: 0,
            },
            key_arn: KeyArn::new("arn:aws:kms:us-east-1:111122223333:key/k").unwrap(),
            ciphertext: vec![1, 2, 3],
            context: BTreeMap::from([("lot".to_owned(), "1".to_owned())]),
            retry_without_context,
            credentials: Arc::new(Credentials {
                access_key_id: "AKIA".into(),
                secret_access_key: crate::credentials::Secret::new("s"),
                session_token: None,
                expiration: None,
                region: Region::new("us-east-1").unwrap(),
            }),
        }
    }

    fn error(kind: &str) -> Vec<u8> {
        format!(r#"{{"__type":"{kind}","message":"m"}}"#).into_bytes()
    }

    #[test]
    fn each_answer_decides_as_the_driver_always_did() {
        let j = job(false);
        let doc = EncodedRecipient::new(&[0xa0]);
        let mut a = DecryptAttempts::new(0, 60_000);
        assert!(
            a.body(&j, &doc)
                .windows(17)
                .any(|w| w == b"EncryptionContext")
        );
        let ok = br#"{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/k","CiphertextForRecipient":"AQID"}"#;
        assert!(matches!(a.answered(&j, 200, ok, 0, 0), Step::Open(c) if c == [1, 2, 3]));
        let cases: [(&str, Option<ErrorCode>, Option<Reason>); 6] = [
            (
                "InvalidCiphertextException",
                None,
                Some(Reason::Undecryptable),
            ),
            ("IncorrectKeyException", None, Some(Reason::WrongKey)),
            (
                "AccessDeniedException",
                Some(ErrorCode::KmsAccessDenied),
                None,
            ),
            ("DisabledException", Some(ErrorCode::KeyUnavailable), None),
            (
                "ExpiredTokenException",
                Some(ErrorCode::KmsCredentials),
                None,
            ),
            ("ValidationException", Some(ErrorCode::KmsFailure), None),
        ];
        for (kind, code, reason) in cases {
            let mut a = DecryptAttempts::new(0, 60_000);
            match a.answered(&j, 400, &error(kind), 0, 0) {
                Step::Done(DecryptOutcome::Fatal { code: c, .. }) => assert_eq!(Some(c), code),
                Step::Done(DecryptOutcome::Disqualified(r)) => assert_eq!(Some(r), reason),
                _ => panic!("{kind}"),
            }
        }
    }

    #[test]
    fn retries_back_off_until_the_deadline_and_the_context_is_dropped_once() {
        let j = job(false);
        let mut a = DecryptAttempts::new(0, 3_000);
        let mut now = 0;
        let mut waits = 0;
        loop {
            match a.answered(&j, 400, &error("ThrottlingException"), now, u64::MAX) {
                Step::Wait(ms) => {
                    assert!(ms <= 2_000);
                    now += ms;
                    waits += 1;
                }
                Step::Done(DecryptOutcome::Fatal { code, message }) => {
                    assert_eq!(code, ErrorCode::KmsUnavailable);
                    assert!(message.contains("within 3 s"), "{message}");
                    break;
                }
                _ => panic!("throttling decides nothing but the deadline"),
            }
        }
        assert!(waits >= 2);
        // Without a context once, where the terms allow; the second refusal decides.
        let j = job(true);
        let doc = EncodedRecipient::new(&[0xa0]);
        let mut a = DecryptAttempts::new(0, 3_000);
        let bad = error("InvalidCiphertextException");
        assert!(matches!(a.answered(&j, 400, &bad, 0, 0), Step::Send));
        assert!(
            !a.body(&j, &doc)
                .windows(17)
                .any(|w| w == b"EncryptionContext")
        );
        assert!(matches!(
            a.answered(&j, 400, &bad, 0, 0),
            Step::Done(DecryptOutcome::Disqualified(Reason::Undecryptable))
        ));
        assert_eq!(a.attempts(), 2);
        assert!(matches!(a.lost(&j, "reset".into(), 0, 7), Step::Wait(7)));
        assert_eq!(backoff(0, u64::MAX), u64::MAX % 51);
        assert_eq!(backoff(20, 2_000), 2_000);
    }
}
