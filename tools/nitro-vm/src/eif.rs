//! Writing an EIF with AWS's own builder (the aws-nitro-enclaves-image-format crate, which
//! `eif_build` and nitro-cli use), with fixed identity metadata so the file depends only on
//! its parts.

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use sha2::{Digest, Sha384};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes an unsigned EIF of `kernel`, `cmdline` (as measured: no surrounding whitespace) and
/// the `ramdisks` in order to `out`. Returns the measurements (`PCR0`.. as hex) that the
/// builder reported, after checking that reading the file back gives the same ones and a
/// good CRC.
pub fn write_eif(
    kernel: &Path,
    cmdline: &str,
    ramdisks: &[&Path],
    out: &Path,
) -> Result<BTreeMap<String, String>, String> {
    let info = EifIdentityInfo {
        img_name: "bidding-nitro-qemu".into(),
        img_version: "0".into(),
        build_info: EifBuildInfo {
            build_time: "1970-01-01T00:00:00Z".into(),
            build_tool: "bidding-pcr-crosscheck".into(),
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
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(|e| format!("creating {}: {e}", out.display()))?;
    let built = builder.write_to(&mut file);
    drop(file);
    let mut reader = EifReader::from_eif(out.to_string_lossy().into_owned())
        .map_err(|e| format!("reading back {}: {e}", out.display()))?;
    if !reader.check_crc() {
        return Err(format!("{}: the EIF's CRC does not check", out.display()));
    }
    let described = reader
        .get_measurements()
        .map_err(|e| format!("measuring {}: {e}", out.display()))?;
    if described != built {
        return Err(format!(
            "EifReader's measurements {described:?} differ from EifBuilder's {built:?}"
        ));
    }
    Ok(built)
}
