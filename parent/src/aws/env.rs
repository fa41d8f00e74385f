//! An injectable view of environment variables.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Where configuration variables come from: the process environment in the binary, a map in
/// tests (so no test mutates the real environment, which is shared by all test threads).
#[derive(Clone)]
pub struct Env {
    lookup: Arc<Lookup>,
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Env {
    /// The process environment. Variables that are not valid UTF-8 count as unset.
    pub fn process() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Env {
            lookup: Arc::new(lookup),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// The variable's value; an empty value counts as unset, as in the AWS SDKs, so that
    /// `AWS_PROFILE= cmd` is a way to unset it.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// True for `true`/`1`, in any case.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

impl fmt::Debug for Env {
    // The environment holds AWS_SECRET_ACCESS_KEY; never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env { .. }")
    }
}

/// The endpoint configured for one service the way the AWS SDKs and CLI read it:
/// `AWS_ENDPOINT_URL_<SERVICE>` (e.g. `AWS_ENDPOINT_URL_S3`), then `AWS_ENDPOINT_URL`, both
/// ignored when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true. `service` is the upper-case
/// suffix: `S3`, `STS`.
pub fn endpoint_url(env: &Env, service: &str) -> Option<String> {
    if env.flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        return None;
    }
    env.get(&format!("AWS_ENDPOINT_URL_{service}"))
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
}

/// The region from `AWS_REGION`, then `AWS_DEFAULT_REGION`, unvalidated.
pub fn region(env: &Env) -> Option<String> {
    env.get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_endpoint_wins_and_can_be_ignored() {
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://general:1"),
            ("AWS_ENDPOINT_URL_S3", "http://s3:2"),
        ]);
        assert_eq!(endpoint_url(&env, "S3").as_deref(), Some("http://s3:2"));
        assert_eq!(
            endpoint_url(&env, "STS").as_deref(),
            Some("http://general:1")
        );
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL_S3", "http://s3:2"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ]);
        assert_eq!(endpoint_url(&env, "S3"), None);
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL_S3", ""),
            ("AWS_ENDPOINT_URL", "http://g"),
        ]);
        assert_eq!(endpoint_url(&env, "S3").as_deref(), Some("http://g"));
        assert_eq!(format!("{env:?}"), "Env { .. }");
    }

    #[test]
    fn region_order() {
        let env = Env::from_pairs([
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "us-east-2"),
        ]);
        assert_eq!(region(&env).as_deref(), Some("us-east-2"));
        let env = Env::from_pairs([("AWS_DEFAULT_REGION", "eu-west-1")]);
        assert_eq!(region(&env).as_deref(), Some("eu-west-1"));
    }
}
