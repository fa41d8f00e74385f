//! The initramfs of an enclave image in which enclave-init is PID 1: a `newc` cpio archive whose
//! bytes depend only on its inputs, so that the image's PCRs do too.
//!
//! Contents, in this (byte-sorted) order:
//!
//! | path          | what                                                        | mode |
//! |---------------|-------------------------------------------------------------|------|
//! | `dev/`        | mount point for devtmpfs                                    | 0755 |
//! | `dev/console` | character device 5:1, the kernel opens it as init's stdio   | 0600 |
//! | `init`        | enclave-init (static)                                       | 0755 |
//! | `kms-ca`      | test images only: the KMS emulator's CA (PEM), for a dev    | 0644 |
//! |               | build's `--kms-ca /kms-ca` (a release build refuses it)     |      |
//! | `limits`      | the enclave's limits, when given (`--limits`): one limit    | 0644 |
//! |               | flag a line, which enclave-init as PID 1 applies; PCR0      |      |
//! |               | measures them with the rest of the image                    |      |
//! | `nsm.ko`      | the NSM driver, when given; enclave-init loads it at boot   | 0644 |
//! | `proc/`       | mount point for proc                                        | 0755 |
//!
//! Every entry is owned by root (0:0) with mtime 0, inode numbers count from 1 in archive order,
//! directories have 2 links and everything else 1; the archive ends with the usual
//! `TRAILER!!!` entry and is not padded further.

use std::io::Write;

/// Where `tools/scripts/reproducible-build.sh` leaves the enclave binary, relative to the checkout.
pub const DEFAULT_ENCLAVE_INIT: &str = "target/x86_64-unknown-linux-musl/release/enclave-init";
/// Where `tools/scripts/reproducible-build.sh --unsealed` leaves the unsealed image's binary.
pub const DEFAULT_UNSEALED_ENCLAVE_INIT: &str =
    "target/x86_64-unknown-linux-musl/release/enclave-init-unsealed";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Directory,
    File(&'a [u8]),
    CharDevice { major: u32, minor: u32 },
}

/// One archive member: a path without a leading `/`, permission bits and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub path: &'static str,
    pub permissions: u32,
    pub kind: Kind<'a>,
}

impl Entry<'_> {
    /// The full `st_mode`: file type and permission bits.
    pub fn mode(&self) -> u32 {
        let file_type = match self.kind {
            Kind::Directory => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::CharDevice { .. } => S_IFCHR,
        };
        file_type | self.permissions
    }

    /// `ls -l` style, for `bidctl initramfs` to show what it wrote.
    pub fn describe(&self) -> String {
        let rwx = |bits: u32| {
            format!(
                "{}{}{}",
                if bits & 4 != 0 { 'r' } else { '-' },
                if bits & 2 != 0 { 'w' } else { '-' },
                if bits & 1 != 0 { 'x' } else { '-' }
            )
        };
        let (t, detail) = match &self.kind {
            Kind::Directory => ('d', String::new()),
            Kind::File(data) => ('-', format!("{} bytes", data.len())),
            Kind::CharDevice { major, minor } => ('c', format!("{major},{minor}")),
        };
        let p = self.permissions;
        format!(
            "{t}{}{}{} 0:0 /{} {detail}",
            rwx(p >> 6),
            rwx(p >> 3),
            rwx(p),
            self.path
        )
        .trim_end()
        .to_string()
    }
}

/// Where a test image keeps the KMS emulator's CA. No dot: the path travels on the kernel's
/// command line, and the kernel drops words with a dot (it takes them for module parameters)
/// instead of handing them to init.
pub const TEST_KMS_CA_PATH: &str = "kms-ca";

/// The entries of the initramfs for `init` (the enclave-init binary) and, optionally, the NSM
/// driver and (test images only) the KMS emulator's CA, in archive order.
pub fn entries<'a>(
    init: &'a [u8],
    nsm_ko: Option<&'a [u8]>,
    test_kms_ca: Option<&'a [u8]>,
) -> Vec<Entry<'a>> {
    entries_with_limits(init, nsm_ko, test_kms_ca, None)
}

/// The same, with the enclave's limits file (already checked with
/// [`enclave_init::limits::parse`]) as `/limits`.
pub fn entries_with_limits<'a>(
    init: &'a [u8],
    nsm_ko: Option<&'a [u8]>,
    test_kms_ca: Option<&'a [u8]>,
    limits: Option<&'a [u8]>,
) -> Vec<Entry<'a>> {
    let mut v = vec![
        Entry {
            path: "dev",
            permissions: 0o755,
            kind: Kind::Directory,
        },
        Entry {
            path: "dev/console",
            permissions: 0o600,
            kind: Kind::CharDevice { major: 5, minor: 1 },
        },
        Entry {
            path: "init",
            permissions: 0o755,
            kind: Kind::File(init),
        },
        Entry {
            path: "proc",
            permissions: 0o755,
            kind: Kind::Directory,
        },
    ];
    if let Some(ko) = nsm_ko {
        v.push(Entry {
            path: "nsm.ko",
            permissions: 0o644,
            kind: Kind::File(ko),
        });
    }
    if let Some(text) = limits {
        v.push(Entry {
            path: "limits",
            permissions: 0o644,
            kind: Kind::File(text),
        });
    }
    if let Some(pem) = test_kms_ca {
        v.push(Entry {
            path: TEST_KMS_CA_PATH,
            permissions: 0o644,
            kind: Kind::File(pem),
        });
    }
    v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    v
}

/// Writes `entries` as a `newc` archive, in the given order, with the fixed metadata described
/// in the module documentation.
pub fn write_newc(entries: &[Entry<'_>]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let data: &[u8] = match e.kind {
            Kind::File(d) => d,
            _ => &[],
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: over 4 GiB, too large for newc", e.path),
            )
        })?;
        let (rdev_major, rdev_minor) = match e.kind {
            Kind::CharDevice { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let ino = u32::try_from(i + 1).expect("a handful of entries");
        let mut w = cpio::newc::Builder::new(e.path)
            .ino(ino)
            .mode(e.mode())
            .uid(0)
            .gid(0)
            .nlink(if e.kind == Kind::Directory { 2 } else { 1 })
            .mtime(0)
            .dev_major(0)
            .dev_minor(0)
            .rdev_major(rdev_major)
            .rdev_minor(rdev_minor)
            .write(&mut out, size);
        w.write_all(data)?;
        w.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

/// The initramfs for `init` and, optionally, the NSM driver.
pub fn build(init: &[u8], nsm_ko: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
    write_newc(&entries(init, nsm_ko, None))
}

/// Refuses what cannot run as `/init` in an image that holds nothing else: anything but a
/// 64-bit little-endian ELF executable for x86-64 or aarch64, and any dynamically linked one
/// (the interpreter it names does not exist there, and the kernel would panic with "No working
/// init found").
pub fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    match u16_at(16) {
        Some(2) | Some(3) => {}
        _ => return Err("not an ELF executable".into()),
    }
    match u16_at(18) {
        Some(62) | Some(183) => {}
        Some(m) => return Err(format!("ELF machine {m} is neither x86-64 nor aarch64")),
        None => unreachable!("length checked"),
    }
    let truncated = || "truncated ELF program headers".to_string();
    let phoff = usize::try_from(u64_at(32).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(54).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(56).ok_or_else(truncated)?);
    let table_end = phnum
        .checked_mul(phentsize)
        .and_then(|n| n.checked_add(phoff))
        .ok_or_else(truncated)?;
    if phentsize < 56 || table_end > bytes.len() {
        return Err(truncated());
    }
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if u32_at(ph).ok_or_else(truncated)? == PT_INTERP {
            let interp = u64_at(ph + 8)
                .zip(u64_at(ph + 32))
                .and_then(|(off, len)| {
                    let off = usize::try_from(off).ok()?;
                    let len = usize::try_from(len).ok()?;
                    bytes.get(off..off.checked_add(len)?)
                })
                .map(|s| {
                    String::from_utf8_lossy(s)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_else(|| "?".into());
            return Err(format!(
                "dynamically linked (it asks for {interp}); build the static musl binary with \
                 tools/scripts/reproducible-build.sh"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header with one program header of type `ptype`.
    pub(crate) fn tiny_elf(ptype: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b
    }

    #[test]
    fn static_and_dynamic_elves() {
        assert_eq!(check_static_elf(&tiny_elf(1)), Ok(()));
        let err = check_static_elf(&tiny_elf(3)).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(check_static_elf(b"#!/bin/sh\necho hi\n").is_err());
        let mut cut = tiny_elf(1);
        cut.truncate(70);
        assert!(check_static_elf(&cut).is_err());
        // The test binary itself is a dynamically linked glibc executable.
        let me = std::fs::read("/proc/self/exe").unwrap();
        let err = check_static_elf(&me).unwrap_err();
        assert!(err.contains("ld-linux"), "{err}");
    }

    #[test]
    fn entries_are_sorted_and_nsm_is_optional() {
        let paths = |e: Vec<Entry<'_>>| e.iter().map(|e| e.path).collect::<Vec<_>>();
        assert_eq!(
            paths(entries(b"x", None, None)),
            ["dev", "dev/console", "init", "proc"]
        );
        assert_eq!(
            paths(entries(b"x", Some(b"ko"), None)),
            ["dev", "dev/console", "init", "nsm.ko", "proc"]
        );
        let with_ca = entries(b"x", Some(b"ko"), Some(b"-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            paths(with_ca.clone()),
            ["dev", "dev/console", "init", "kms-ca", "nsm.ko", "proc"]
        );
        assert_eq!(with_ca[3].describe(), "-rw-r--r-- 0:0 /kms-ca 27 bytes");
    }

    #[test]
    fn the_bytes_are_exactly_these() {
        let a = build(b"#init", Some(b"ko")).unwrap();
        assert_eq!(a, build(b"#init", Some(b"ko")).unwrap());
        assert_eq!(a.len() % 4, 0);
        // First header: "dev", inode 1, a directory 0755, root, 2 links, mtime 0.
        let h = std::str::from_utf8(&a[..110]).unwrap();
        assert_eq!(
            h,
            "070701\
             00000001\
             000041ed\
             00000000\
             00000000\
             00000002\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000004\
             00000000"
        );
        assert_eq!(&a[110..114], b"dev\0");
        // dev/console: inode 2, a character device 0600 (0o020600), 1 link, rdev 5:1.
        let console: String = [2, 0o020_600, 0, 0, 1, 0, 0, 0, 0, 5, 1]
            .iter()
            .map(|v| format!("{v:08x}"))
            .collect();
        assert!(a.windows(console.len()).any(|w| w == console.as_bytes()));
        // The trailer: its 110-byte header, the name with its NUL, padding to 4.
        assert!(a.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert!(a.windows(5).any(|w| w == b"#init"));
        assert_ne!(a, build(b"#init", None).unwrap());
    }
}
