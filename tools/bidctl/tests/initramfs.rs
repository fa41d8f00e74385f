//! `bidctl initramfs` against GNU cpio: GNU cpio lists the archive with the metadata we meant
//! (root, mtime 0, fixed modes, the console device), extracts it to the same files, and,
//! archiving the extracted tree again with `--reproducible`, writes the same entries with the
//! same fields and bytes (only its inode numbering, from 0, and its upper-case hex differ).
//!
//! Needs GNU cpio (Debian: `cpio`); without it the test says why it is skipped, unless
//! `BIDDING_REQUIRE_PEERS=1`. The device node is only extracted when running as root.

use bidding_client::initramfs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn gnu_cpio() -> Option<&'static str> {
    let ok = Command::new("cpio")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GNU cpio")
        });
    if ok {
        return Some("cpio");
    }
    let required = std::env::var("BIDDING_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "BIDDING_REQUIRE_PEERS=1 but GNU cpio is not installed (apt-get install cpio)"
    );
    eprintln!("skipped: GNU cpio is not installed (apt-get install cpio)");
    None
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bidctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cmd` run in `dir` with `stdin` from a file; returns stdout, panics with stderr on failure.
fn run(dir: &Path, cmd: &str, args: &[&str], stdin: Option<&Path>) -> Vec<u8> {
    let mut c = Command::new(cmd);
    c.args(args).current_dir(dir);
    c.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A `newc` entry as an independent reader sees it: name, the 13 header fields, data.
#[derive(Debug)]
struct Member {
    name: String,
    fields: [u32; 13],
    data: Vec<u8>,
}

const INO: usize = 0;

/// Parses a `newc` archive up to and including its trailer; returns the members and where the
/// trailer ends.
fn parse_newc(b: &[u8]) -> (Vec<Member>, usize) {
    let mut off = 0;
    let mut members = Vec::new();
    loop {
        assert_eq!(&b[off..off + 6], b"070701", "bad magic at {off}");
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let s = std::str::from_utf8(&b[off + 6 + 8 * i..off + 14 + 8 * i]).unwrap();
            *f = u32::from_str_radix(s, 16).unwrap();
        }
        let namesize = fields[11] as usize;
        let filesize = fields[6] as usize;
        let name_at = off + 110;
        assert_eq!(b[name_at + namesize - 1], 0, "name not NUL-terminated");
        let name = String::from_utf8(b[name_at..name_at + namesize - 1].to_vec()).unwrap();
        let data_at = (name_at + namesize + 3) & !3;
        let data = b[data_at..data_at + filesize].to_vec();
        off = (data_at + filesize + 3) & !3;
        let last = name == "TRAILER!!!";
        members.push(Member { name, fields, data });
        if last {
            return (members, off);
        }
    }
}

#[test]
fn gnu_cpio_lists_extracts_and_rebuilds_our_archive() {
    let Some(cpio) = gnu_cpio() else { return };
    let dir = scratch("initramfs");
    // Sizes that need padding after the data.
    let init: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let ko: Vec<u8> = (0..77u8).collect();
    let ours = initramfs::build(&init, Some(&ko)).unwrap();
    let archive = dir.join("initramfs.cpio");
    std::fs::write(&archive, &ours).unwrap();

    // 1. The listing.
    let listing = run(&dir, cpio, &["-itvn", "--quiet"], Some(&archive));
    let rows: Vec<Vec<String>> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let expect = [
        "drwxr-xr-x 2 0 0 0 Jan 1 1970 dev",
        "crw------- 1 0 0 5, 1 Jan 1 1970 dev/console",
        "-rwxr-xr-x 1 0 0 100003 Jan 1 1970 init",
        "-rw-r--r-- 1 0 0 77 Jan 1 1970 nsm.ko",
        "drwxr-xr-x 2 0 0 0 Jan 1 1970 proc",
    ];
    let expect: Vec<Vec<String>> = expect
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(rows, expect, "cpio -itvn");

    // 2. Extraction.
    let root = is_root();
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let mut args = vec!["-idm", "--no-absolute-filenames", "--quiet"];
    if !root {
        eprintln!("not root: dev/console is not extracted and the rebuild is not compared");
        args.extend(["--nonmatching", "dev/console"]);
    }
    run(&tree, cpio, &args, Some(&archive));
    let meta = |p: &str| std::fs::symlink_metadata(tree.join(p)).unwrap();
    assert_eq!(std::fs::read(tree.join("init")).unwrap(), init);
    assert_eq!(std::fs::read(tree.join("nsm.ko")).unwrap(), ko);
    for (path, mode) in [
        ("init", 0o755),
        ("nsm.ko", 0o644),
        ("dev", 0o755),
        ("proc", 0o755),
    ] {
        assert_eq!(meta(path).permissions().mode() & 0o7777, mode, "{path}");
    }
    assert!(meta("dev").is_dir() && meta("proc").is_dir());
    assert_eq!(meta("init").mtime(), 0);
    if !root {
        return;
    }
    let console = meta("dev/console");
    assert!(console.file_type().is_char_device());
    let rdev = console.rdev();
    assert_eq!(
        (
            (rdev >> 8) & 0xfff,
            (rdev & 0xff) | ((rdev >> 12) & 0xfff00)
        ),
        (5, 1)
    );

    // 3. GNU cpio archives the extracted tree again. Directories got new mtimes when their
    //    contents were created; put them back to 0 as in the archive.
    run(&tree, "touch", &["-h", "-d", "@0", "dev", "proc"], None);
    let gnu = run(
        &tree,
        "sh",
        &[
            "-c",
            "find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet",
        ],
        None,
    );
    let (a, a_end) = parse_newc(&ours);
    let (g, g_end) = parse_newc(&gnu);
    assert_eq!(a_end, ours.len(), "bytes after our trailer");
    assert_eq!(a_end, g_end, "the archives' entries take different space");
    assert!(gnu[g_end..].iter().all(|&b| b == 0), "GNU's block padding");
    assert_eq!(a.len(), g.len());
    for (i, (x, y)) in a.iter().zip(&g).enumerate() {
        assert_eq!(x.name, y.name);
        assert_eq!(x.data, y.data, "{}", x.name);
        let (mut fx, mut fy) = (x.fields, y.fields);
        if x.name != "TRAILER!!!" {
            assert_eq!(fx[INO] as usize, i + 1, "our inode numbers count from 1");
        }
        fx[INO] = 0;
        fy[INO] = 0;
        assert_eq!(fx, fy, "{}: header fields differ from GNU cpio's", x.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A minimal static ELF header: one PT_LOAD program header.
fn tiny_static_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[16] = 2;
    elf[18] = 62;
    elf[32] = 64;
    elf[54] = 56;
    elf[56] = 1;
    elf[64] = 1;
    elf
}

#[test]
fn bidctl_initramfs_writes_the_library_archive_and_refuses_dynamic_binaries() {
    let dir = scratch("initramfs-cli");
    let elf = tiny_static_elf();
    let init = dir.join("enclave-init");
    std::fs::write(&init, &elf).unwrap();
    let out = dir.join("out.cpio");
    let bidctl = env!("CARGO_BIN_EXE_bidctl");
    let o = Command::new(bidctl)
        .args(["initramfs", "--out"])
        .arg(&out)
        .arg("--enclave-init")
        .arg(&init)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        initramfs::build(&elf, None).unwrap()
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("crw------- 0:0 /dev/console 5,1"),
        "{stdout}"
    );
    assert!(stdout.contains("sha384 "), "{stdout}");

    // bidctl itself is dynamically linked: refused, and no archive is left behind.
    let refused = dir.join("refused.cpio");
    let o = Command::new(bidctl)
        .args(["initramfs", "--out"])
        .arg(&refused)
        .arg("--enclave-init")
        .arg(bidctl)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("dynamically linked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!refused.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The limits are an input PCR0 measures: `--limits` puts the checked file in the archive as
/// /limits, which changes the image (and so PCR0); a file holding anything but limit flags is
/// refused and no archive is written.
#[test]
fn bidctl_initramfs_measures_the_limits() {
    let dir = scratch("initramfs-limits");
    let elf = tiny_static_elf();
    let init = dir.join("enclave-init");
    std::fs::write(&init, &elf).unwrap();
    let limits = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/enclave-limits");
    let bidctl = env!("CARGO_BIN_EXE_bidctl");
    let make = |out: &Path, limits: Option<&Path>| {
        let mut c = Command::new(bidctl);
        c.args(["initramfs", "--out"])
            .arg(out)
            .arg("--enclave-init")
            .arg(&init);
        if let Some(l) = limits {
            c.arg("--limits").arg(l);
        }
        c.output().unwrap()
    };
    let with = dir.join("with.cpio");
    let o = make(&with, Some(Path::new(limits)));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("-rw-r--r-- 0:0 /limits "), "{stdout}");
    let text = std::fs::read(limits).unwrap();
    assert_eq!(
        std::fs::read(&with).unwrap(),
        initramfs::write_newc(&initramfs::entries_with_limits(
            &elf,
            None,
            None,
            Some(&text)
        ))
        .unwrap()
    );
    let (members, _) = parse_newc(&std::fs::read(&with).unwrap());
    assert!(members.iter().any(|m| m.name == "limits"));
    // Every line of the shipped file is a limit enclave-init accepts, at its built-in default.
    let applied = enclave_init::limits::parse(std::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!(applied.len(), enclave_init::limits::LIMIT_FLAGS.len());
    let without = dir.join("without.cpio");
    assert!(make(&without, None).status.success());
    assert_ne!(
        std::fs::read(&with).unwrap(),
        std::fs::read(&without).unwrap()
    );

    let bad = dir.join("bad-limits");
    std::fs::write(&bad, "--max-lots=10\n--kms-ca=/x\n").unwrap();
    let refused = dir.join("refused.cpio");
    let o = make(&refused, Some(&bad));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2: `--kms-ca` is not a limit"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!refused.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bidctl_pcr_prints_what_the_library_computes() {
    let dir = scratch("pcr-cli");
    let kernel = dir.join("bzImage");
    let cmdline = dir.join("cmdline");
    let (r1, r2) = (dir.join("r1"), dir.join("r2"));
    std::fs::write(&kernel, vec![7u8; 100_000]).unwrap();
    std::fs::write(&cmdline, "console=ttyS0 reboot=k\n").unwrap();
    std::fs::write(&r1, b"first").unwrap();
    std::fs::write(&r2, b"second").unwrap();
    let m = bidding_client::pcr::measure(
        &[7u8; 100_000],
        b"console=ttyS0 reboot=k",
        &[b"first", b"second"],
    );
    let bidctl = env!("CARGO_BIN_EXE_bidctl");
    // Both spellings: one --ramdisk with two values, and --ramdisk twice.
    for ramdisk_args in [
        vec!["--ramdisk", "r1", "r2"],
        vec!["--ramdisk", "r1", "--ramdisk", "r2"],
    ] {
        let o = Command::new(bidctl)
            .current_dir(&dir)
            .args(["pcr", "--kernel", "bzImage", "--cmdline", "cmdline"])
            .args(&ramdisk_args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8(o.stdout).unwrap(), m.to_text());
    }
    let o = Command::new(bidctl)
        .current_dir(&dir)
        .args([
            "pcr",
            "--json",
            "--kernel",
            "bzImage",
            "--cmdline",
            "cmdline",
        ])
        .args(["--ramdisk", "r1", "r2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Measurements"]["PCR2"], hex::encode(m.pcr2));
    // A missing ramdisk is named.
    let o = Command::new(bidctl)
        .current_dir(&dir)
        .args([
            "pcr",
            "--kernel",
            "bzImage",
            "--cmdline",
            "cmdline",
            "--ramdisk",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two images: `bidctl initramfs` takes the sealed release binary by default and the unsealed
/// image's with `--unsealed` (each where tools/scripts/reproducible-build.sh leaves it), and `bidctl
/// pcr` gives the two ramdisks two PCR0s.
#[test]
fn bidctl_initramfs_and_pcr_for_both_images() {
    let dir = scratch("two-images");
    let release = dir.join("target/x86_64-unknown-linux-musl/release");
    std::fs::create_dir_all(&release).unwrap();
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[16] = 2;
    elf[18] = 62;
    elf[32] = 64;
    elf[54] = 56;
    elf[56] = 1;
    elf[64] = 1;
    let bidctl = env!("CARGO_BIN_EXE_bidctl");
    let initramfs = |extra: &[&str]| {
        Command::new(bidctl)
            .current_dir(&dir)
            .args(["initramfs", "--out"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Nothing built yet: the error says which build makes the binary.
    let o = initramfs(&["unsealed.cpio", "--unsealed"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("tools/scripts/reproducible-build.sh --unsealed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(release.join("enclave-init"), &elf).unwrap();
    let mut unsealed = elf.clone();
    unsealed.push(1);
    std::fs::write(release.join("enclave-init-unsealed"), &unsealed).unwrap();
    for (extra, init) in [
        (&["sealed.cpio"][..], &elf),
        (&["unsealed.cpio", "--unsealed"][..], &unsealed),
    ] {
        let o = initramfs(extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read(dir.join(extra[0])).unwrap(),
            initramfs::build(init, None).unwrap()
        );
    }
    let o = initramfs(&["x.cpio", "--unsealed", "--enclave-init", "y"]);
    assert!(!o.status.success(), "--unsealed names the binary itself");
    std::fs::write(dir.join("bzImage"), vec![7u8; 1000]).unwrap();
    std::fs::write(dir.join("cmdline"), "console=ttyS0\n").unwrap();
    let pcr0 = |ramdisk: &str| {
        let o = Command::new(bidctl)
            .current_dir(&dir)
            .args([
                "pcr",
                "--json",
                "--kernel",
                "bzImage",
                "--cmdline",
                "cmdline",
            ])
            .args(["--ramdisk", ramdisk])
            .output()
            .unwrap();
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["Measurements"]["PCR0"].as_str().unwrap().to_owned()
    };
    assert_ne!(pcr0("sealed.cpio"), pcr0("unsealed.cpio"));
    std::fs::remove_dir_all(&dir).unwrap();
}
