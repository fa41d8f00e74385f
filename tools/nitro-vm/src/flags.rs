//! `--name value` pairs, all required unless a default is given: the harness binaries' command
//! lines, written by the scripts that run them.

use std::collections::BTreeMap;

pub struct Flags(BTreeMap<String, String>);

impl Flags {
    pub fn from_env() -> Result<Flags, String> {
        let mut m = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            if m.insert(k.clone(), v).is_some() {
                return Err(format!("{k} given twice"));
            }
        }
        Ok(Flags(m))
    }

    pub fn take(&mut self, k: &str) -> Result<String, String> {
        self.0.remove(k).ok_or_else(|| format!("{k} is required"))
    }

    /// The value of `k` parsed, or `default` without it.
    pub fn take_or<T: std::str::FromStr>(&mut self, k: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.remove(k) {
            Some(v) => v.parse().map_err(|e| format!("{k} {v:?}: {e}")),
            None => Ok(default),
        }
    }

    /// Fails on any flag nobody took.
    pub fn finish(self) -> Result<(), String> {
        match self.0.keys().next() {
            Some(k) => Err(format!("unknown argument {k}")),
            None => Ok(()),
        }
    }
}
