//! `bidctl pcr` (bidding_client::pcr) against AWS's own code: EIFs built with the
//! aws-nitro-enclaves-image-format crate's `EifBuilder` (what `eif_build` and nitro-cli use),
//! whose PCRs come both from the builder and from reading the file back with `EifReader` (what
//! `nitro-cli describe-eif` does). Inputs: synthetic kernels and cmdlines, our real initramfs,
//! and one, two and three ramdisks, so PCR1 and PCR2 are told apart.

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use bidding_client::{initramfs, pcr};
use sha2::{Digest, Sha384};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deterministic filler bytes.
fn bytes(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pcr-crosscheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Builds an EIF with AWS's builder; returns the PCRs it reports while building and those
/// `EifReader` computes from the written file.
fn aws_measurements(
    dir: &Path,
    kernel: &Path,
    cmdline: &str,
    ramdisks: &[PathBuf],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let info = EifIdentityInfo {
        img_name: "crosscheck".into(),
        img_version: "0".into(),
        build_info: EifBuildInfo {
            build_time: "1970-01-01T00:00:00Z".into(),
            build_tool: "pcr-crosscheck".into(),
            build_tool_version: "0".into(),
            img_os: "test".into(),
            img_kernel: "test".into(),
        },
        docker_info: serde_json::Value::Null,
        custom_info: serde_json::Value::Null,
    };
    let mut builder = EifBuilder::new(kernel, cmdline.to_string(), None, Sha384::new(), 0, info);
    for r in ramdisks {
        builder.add_ramdisk(r);
    }
    let eif_path = dir.join(format!("image-{}.eif", ramdisks.len()));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&eif_path)
        .unwrap();
    let built = builder.write_to(&mut out);
    drop(out);
    let mut reader = EifReader::from_eif(eif_path.to_string_lossy().into_owned()).unwrap();
    assert!(reader.check_crc(), "the crate's own EIF fails its CRC");
    let described = reader.get_measurements().unwrap();
    (built, described)
}

#[test]
fn pcrs_match_aws_eif_builder_and_reader() {
    let dir = scratch();
    // A real initramfs (our layout, with a stand-in /init and nsm.ko) and two other ramdisks of
    // sizes that are not multiples of anything in particular.
    let init = bytes(1, 300_001);
    let ko = bytes(2, 9_999);
    let ours = initramfs::build(&init, Some(&ko)).unwrap();
    let ramdisks = [
        write(&dir, "initramfs.cpio", &ours),
        write(&dir, "app-1.cpio", &bytes(3, 65_537)),
        write(&dir, "app-2.cpio", &bytes(4, 1)),
    ];
    let kernel_bytes = bytes(5, 1_234_567);
    let kernel = write(&dir, "bzImage", &kernel_bytes);
    // nitro-cli's cmdline blob, as a file with its final newline.
    let cmdline_file = b"reboot=k panic=30 pci=off nomodules console=ttyS0 \
        i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on\n";
    let cmdline = pcr::trim_cmdline(cmdline_file);

    for n in 1..=ramdisks.len() {
        let (built, described) = aws_measurements(
            &dir,
            &kernel,
            std::str::from_utf8(cmdline).unwrap(),
            &ramdisks[..n],
        );
        let contents: Vec<Vec<u8>> = ramdisks[..n]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let refs: Vec<&[u8]> = contents.iter().map(|v| v.as_slice()).collect();
        let ours = pcr::measure(&kernel_bytes, cmdline, &refs);
        for (name, value) in [
            ("PCR0", ours.pcr0),
            ("PCR1", ours.pcr1),
            ("PCR2", ours.pcr2),
        ] {
            assert_eq!(
                built.get(name).map(String::as_str),
                Some(hex::encode(value).as_str()),
                "{name} with {n} ramdisk(s) differs from EifBuilder's"
            );
            assert_eq!(
                described.get(name),
                built.get(name),
                "{name}: EifReader and EifBuilder disagree"
            );
        }
        assert!(!built.contains_key("PCR8"), "an unsigned image has no PCR8");
        eprintln!("{n} ramdisk(s): PCR0 {} matches", &built["PCR0"][..16]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
