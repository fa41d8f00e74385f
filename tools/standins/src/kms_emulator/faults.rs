//! Injected faults: `--fault OP:KIND=VALUE`, repeatable, with `--fault-seed N`.
//!
//! OP is an operation name (`Decrypt`, `Encrypt`, …) or `*` for all. KIND is one of
//! - `latency=DURATION` — wait before answering (`10ms`, `1s`); latencies of matching rules add;
//! - `throttle=RATE` — answer 400 ThrottlingException "Rate exceeded" with probability RATE;
//! - `error500=RATE` — answer 500 InternalFailure;
//! - `reset=RATE` — perform the operation, then cut the connection in the middle of the
//!   response with a TCP reset.
//!
//! RATE is a probability from 0 to 1. Each rule draws from its own generator, seeded from the
//! seed and the rule's position, so a given seed and request sequence always fault the same
//! requests, and adding a rule does not change when the others fire. Throttling, 500 and
//! reset are exclusive: the first rule (in command-line order) that fires decides.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// The operations the emulator serves, for checking fault specs.
pub const OPERATIONS: &[&str] = &[
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "EnableKey",
    "DisableKey",
];

#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// `None` for every operation.
    pub operation: Option<String>,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    Latency(Duration),
    Throttle(f64),
    Error500(f64),
    Reset(f64),
}

impl FromStr for FaultRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected OP:KIND=VALUE, e.g. Decrypt:throttle=0.3, *:latency=10ms, Decrypt:error500=0.1, Decrypt:reset=0.05";
        let (op, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("fault {s:?}: {usage}"))?;
        let (kind, value) = rest
            .split_once('=')
            .ok_or_else(|| format!("fault {s:?}: {usage}"))?;
        let operation = match op {
            "*" => None,
            op if OPERATIONS.contains(&op) => Some(op.to_owned()),
            op => {
                return Err(format!(
                    "fault {s:?}: unknown operation {op:?} (one of {}, or *)",
                    OPERATIONS.join(", ")
                ));
            }
        };
        let rate = || -> Result<f64, String> {
            let r: f64 = value
                .parse()
                .map_err(|_| format!("fault {s:?}: {value:?} is not a number"))?;
            if (0.0..=1.0).contains(&r) {
                Ok(r)
            } else {
                Err(format!("fault {s:?}: the rate must be between 0 and 1"))
            }
        };
        let kind = match kind {
            "latency" => FaultKind::Latency(
                humantime::parse_duration(value)
                    .map_err(|e| format!("fault {s:?}: latency {value:?}: {e}"))?,
            ),
            "throttle" => FaultKind::Throttle(rate()?),
            "error500" => FaultKind::Error500(rate()?),
            "reset" => FaultKind::Reset(rate()?),
            other => {
                return Err(format!(
                    "fault {s:?}: unknown kind {other:?} (latency, throttle, error500, reset)"
                ));
            }
        };
        Ok(FaultRule { operation, kind })
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.operation.as_deref().unwrap_or("*");
        match self.kind {
            FaultKind::Latency(d) => write!(f, "{op}:latency={}", humantime::format_duration(d)),
            FaultKind::Throttle(r) => write!(f, "{op}:throttle={r}"),
            FaultKind::Error500(r) => write!(f, "{op}:error500={r}"),
            FaultKind::Reset(r) => write!(f, "{op}:reset={r}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Throttle,
    Error500,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub latency: Duration,
    pub fault: Option<Injected>,
}

pub struct Faults {
    rules: Vec<(FaultRule, Mutex<SplitMix64>)>,
}

impl Faults {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Faults {
        Faults {
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        r,
                        Mutex::new(SplitMix64(
                            seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        )),
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn decide(&self, operation: &str) -> Decision {
        let mut d = Decision::default();
        for (rule, rng) in &self.rules {
            if rule.operation.as_deref().is_some_and(|op| op != operation) {
                continue;
            }
            let (rate, fault) = match rule.kind {
                FaultKind::Latency(l) => {
                    d.latency += l;
                    continue;
                }
                FaultKind::Throttle(r) => (r, Injected::Throttle),
                FaultKind::Error500(r) => (r, Injected::Error500),
                FaultKind::Reset(r) => (r, Injected::Reset),
            };
            // Every matching rule draws, fired or not, so each rule's sequence depends only
            // on the requests it matches.
            let draw = rng.lock().unwrap_or_else(|e| e.into_inner()).next_f64();
            if draw < rate && d.fault.is_none() {
                d.fault = Some(fault);
            }
        }
        d
    }
}

/// Vigna's SplitMix64: tiny, seedable, good enough to decide which requests fail.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for s in [
            "Decrypt:throttle=0.3",
            "*:latency=10ms",
            "Decrypt:error500=0.1",
            "Encrypt:reset=1",
        ] {
            let r: FaultRule = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        for bad in [
            "Decrypt",
            "Decrypt:throttle",
            "Frobnicate:throttle=0.1",
            "Decrypt:throttle=1.5",
            "Decrypt:throttle=x",
            "Decrypt:explode=0.1",
            "*:latency=soon",
        ] {
            assert!(bad.parse::<FaultRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn seeded_decisions_repeat_and_match_the_rate() {
        let rules: Vec<FaultRule> = [
            "Decrypt:throttle=0.3",
            "*:latency=5ms",
            "Decrypt:error500=0.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let run = |seed| {
            let f = Faults::new(rules.clone(), seed);
            (0..2000).map(|_| f.decide("Decrypt")).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let throttled = a
            .iter()
            .filter(|d| d.fault == Some(Injected::Throttle))
            .count();
        assert!((500..700).contains(&throttled), "{throttled}");
        assert!(a.iter().all(|d| d.latency == Duration::from_millis(5)));
        let f = Faults::new(rules, 1);
        assert!((0..100).all(|_| f.decide("Encrypt").fault.is_none()));
    }
}
