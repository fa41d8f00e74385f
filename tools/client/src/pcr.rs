//! The PCRs an AWS Nitro enclave image (EIF) will have, from the parts it is made of.
//!
//! The Nitro hypervisor measures an EIF's sections as AWS's image-format crate does when it
//! builds or describes one: each PCR is a TPM-style extend of one zeroed register with the
//! SHA-384 of a byte stream, `PCR = SHA-384(48 zero bytes ‖ SHA-384(stream))`, where the
//! streams are
//!
//! - PCR0: kernel ‖ cmdline ‖ every ramdisk, in order (the whole image);
//! - PCR1: kernel ‖ cmdline ‖ the first ramdisk (what `nitro-cli` takes from AWS's blobs);
//! - PCR2: every ramdisk after the first (the application); with one ramdisk, the empty stream.
//!
//! The cmdline is measured as its bytes without a terminating NUL. `nitro-cli build-enclave`
//! trims the whitespace around the contents of its `cmdline` blob, and so does
//! [`trim_cmdline`]; `eif_build --cmdline "$(cat cmdline)"` gets the same from the shell.

use aws_lc_rs::digest::{Context, SHA384, SHA384_OUTPUT_LEN};
use std::io::{self, Read};

/// One PCR value.
pub type Pcr = [u8; SHA384_OUTPUT_LEN];

/// PCR0, PCR1 and PCR2 of an EIF (PCR8, the signing certificate's, exists only for signed
/// images and is not computed here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurements {
    pub pcr0: Pcr,
    pub pcr1: Pcr,
    pub pcr2: Pcr,
}

impl Measurements {
    /// `PCRn` and hex value, one per line, as `bidctl pcr` prints them.
    pub fn to_text(&self) -> String {
        format!(
            "PCR0 {}\nPCR1 {}\nPCR2 {}\n",
            hex::encode(self.pcr0),
            hex::encode(self.pcr1),
            hex::encode(self.pcr2)
        )
    }

    /// A JSON object with the keys `nitro-cli build-enclave` prints under `Measurements`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": hex::encode(self.pcr0),
            "PCR1": hex::encode(self.pcr1),
            "PCR2": hex::encode(self.pcr2),
        })
    }
}

/// `SHA-384(48 zero bytes ‖ digest)`: one extend of a fresh register.
pub fn extend(digest: &[u8]) -> Pcr {
    let mut ctx = Context::new(&SHA384);
    ctx.update(&[0u8; SHA384_OUTPUT_LEN]);
    ctx.update(digest);
    let mut out = [0u8; SHA384_OUTPUT_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The cmdline as `nitro-cli` measures the contents of its `cmdline` file: surrounding ASCII
/// whitespace (the file's final newline, typically) removed.
pub fn trim_cmdline(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Measures an image streamed in its section order: the kernel, then the cmdline, then each
/// ramdisk. Nothing is held in memory beyond the hash states.
pub struct Measurer {
    image: Context,
    bootstrap: Context,
    app: Context,
    ramdisks: usize,
}

impl Measurer {
    /// Starts with the kernel (bzImage) and the cmdline (exactly these bytes; see
    /// [`trim_cmdline`]).
    pub fn new(kernel: impl Read, cmdline: &[u8]) -> io::Result<Self> {
        let mut m = Measurer {
            image: Context::new(&SHA384),
            bootstrap: Context::new(&SHA384),
            app: Context::new(&SHA384),
            ramdisks: 0,
        };
        m.feed(kernel, true)?;
        m.image.update(cmdline);
        m.bootstrap.update(cmdline);
        Ok(m)
    }

    /// Adds the next ramdisk.
    pub fn ramdisk(&mut self, ramdisk: impl Read) -> io::Result<()> {
        let first = self.ramdisks == 0;
        self.ramdisks += 1;
        self.feed(ramdisk, first)
    }

    pub fn finish(self) -> Measurements {
        Measurements {
            pcr0: extend(self.image.finish().as_ref()),
            pcr1: extend(self.bootstrap.finish().as_ref()),
            pcr2: extend(self.app.finish().as_ref()),
        }
    }

    fn feed(&mut self, mut r: impl Read, bootstrap: bool) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.image.update(&buf[..n]);
            if bootstrap {
                self.bootstrap.update(&buf[..n]);
            } else {
                self.app.update(&buf[..n]);
            }
        }
    }
}

/// Measures an image from bytes in memory.
pub fn measure(kernel: &[u8], cmdline: &[u8], ramdisks: &[&[u8]]) -> Measurements {
    let mut m = Measurer::new(kernel, cmdline).expect("reading from memory cannot fail");
    for r in ramdisks {
        m.ramdisk(*r).expect("reading from memory cannot fail");
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha384(parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = Context::new(&SHA384);
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    #[test]
    fn follows_the_definition() {
        let (k, c, r1, r2, r3) = (
            &b"kernel"[..],
            &b"cmd line"[..],
            &b"r1"[..],
            &b"r2"[..],
            &b"r3"[..],
        );
        let m = measure(k, c, &[r1, r2, r3]);
        let zeros = [0u8; 48];
        assert_eq!(
            m.pcr0.to_vec(),
            sha384(&[&zeros, &sha384(&[k, c, r1, r2, r3])])
        );
        assert_eq!(m.pcr1.to_vec(), sha384(&[&zeros, &sha384(&[k, c, r1])]));
        assert_eq!(m.pcr2.to_vec(), sha384(&[&zeros, &sha384(&[r2, r3])]));
    }

    #[test]
    fn one_ramdisk_leaves_pcr2_at_the_extend_of_nothing() {
        let m = measure(b"k", b"c", &[b"r"]);
        // SHA-384(48 zero bytes ‖ SHA-384("")), the PCR2 of every single-ramdisk image.
        assert_eq!(hex::encode(m.pcr2), hex::encode(extend(&sha384(&[]))));
        assert_eq!(
            m.pcr0, m.pcr1,
            "with one ramdisk the whole image is the bootstrap"
        );
    }

    #[test]
    fn streaming_in_small_reads_changes_nothing() {
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let kernel: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let r: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let mut m = Measurer::new(Dribble(&kernel), b"console=ttyS0").unwrap();
        m.ramdisk(Dribble(&r)).unwrap();
        m.ramdisk(Dribble(&r[..5])).unwrap();
        assert_eq!(
            m.finish(),
            measure(&kernel, b"console=ttyS0", &[&r, &r[..5]])
        );
    }

    #[test]
    fn cmdline_is_trimmed_like_nitro_cli() {
        assert_eq!(trim_cmdline(b"  reboot=k panic=30\n"), b"reboot=k panic=30");
        assert_eq!(trim_cmdline(b"\n"), b"");
    }
}
