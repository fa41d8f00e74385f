//! The Nitro Secure Module: attestation documents and hardware randomness.
//!
//! Everything talks to it through [`Nsm`], requests in and responses out as bidding-core's
//! `nsm` types, so the software NSM of dev builds slots in unchanged. [`HardwareNsm`] is the
//! one place that touches `/dev/nsm`: core encodes the request and decodes the response, and
//! the ioctl between them is here, as the kernel's driver defines it (`NSM_IOCTL_RAW`).

use bidding_core::nsm::{self as codec, ErrorCode, Request, Response};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub use bidding_core::nsm::{
    ErrorCode as NsmErrorCode, Request as NsmRequest, Response as NsmResponse,
};

pub trait Nsm: Send + Sync {
    fn process(&self, request: Request) -> Response;
}

/// `struct nsm_iovec` of the kernel's `include/uapi/linux/nsm.h`: a user buffer, address and
/// length as two u64s on every architecture.
#[repr(C)]
struct NsmIovec {
    addr: u64,
    len: u64,
}

/// `struct nsm_raw`: the request to send and the buffer for the response, whose `len` the
/// driver overwrites with the length it wrote.
#[repr(C)]
struct NsmRaw {
    request: NsmIovec,
    response: NsmIovec,
}

/// `NSM_IOCTL_RAW = _IOWR(NSM_MAGIC = 0x0A, 0, struct nsm_raw)`: direction read|write (3) in
/// bits 30-31, the argument's size in bits 16-29, the magic in 8-15, the number in 0-7, as
/// Linux's generic `_IOC` packs them on x86-64 (and as aws-nitro-enclaves-nsm-api's driver
/// computes it with nix's `request_code_readwrite!`).
const NSM_IOCTL_RAW: u32 = (3 << 30) | ((size_of::<NsmRaw>() as u32) << 16) | (0x0A << 8);

/// `/dev/nsm` through the kernel's NSM driver.
pub struct HardwareNsm {
    dev: File,
}

impl HardwareNsm {
    pub fn open() -> io::Result<Self> {
        let dev = File::options()
            .read(true)
            .write(true)
            .open("/dev/nsm")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open /dev/nsm (not in a Nitro enclave, or nsm.ko not loaded): {e}"
                    ),
                )
            })?;
        Ok(HardwareNsm { dev })
    }

    /// Another file as the device, for tests of what happens around the ioctl.
    #[cfg(test)]
    fn with_device(dev: File) -> Self {
        HardwareNsm { dev }
    }

    /// One request through the ioctl: the response's bytes, or the driver's errno.
    fn exchange(&self, request: &[u8]) -> io::Result<Vec<u8>> {
        let mut response = vec![0u8; codec::MAX_RESPONSE_LEN];
        let mut raw = NsmRaw {
            request: NsmIovec {
                addr: request.as_ptr() as u64,
                len: request.len() as u64,
            },
            response: NsmIovec {
                addr: response.as_mut_ptr() as u64,
                len: response.len() as u64,
            },
        };
        // SAFETY: `raw` describes two live buffers of the stated lengths; the driver reads the
        // request, writes at most `response.len()` bytes into the response buffer and its
        // length into `raw.response.len`, and keeps no pointer after returning.
        let r = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                NSM_IOCTL_RAW as _,
                &mut raw as *mut NsmRaw,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // The driver never reports more than the buffer; a length beyond it is not believed.
        response.truncate(usize::try_from(raw.response.len).unwrap_or(usize::MAX));
        Ok(response)
    }
}

impl Nsm for HardwareNsm {
    /// As aws-nitro-enclaves-nsm-api's driver answers: a request over the driver's limit or an
    /// EMSGSIZE is `InputTooLarge`; any other ioctl failure, and a response that does not
    /// decode, is `InternalError`, logged here with the reason since the caller sees only the
    /// code.
    fn process(&self, request: Request) -> Response {
        let request = codec::encode_request(&request);
        if request.len() > codec::MAX_REQUEST_LEN {
            return Response::Error(ErrorCode::InputTooLarge);
        }
        match self.exchange(&request) {
            Ok(bytes) => codec::decode_response(&bytes).unwrap_or_else(|e| {
                crate::log!("{e}");
                Response::Error(ErrorCode::InternalError)
            }),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                Response::Error(ErrorCode::InputTooLarge)
            }
            Err(e) => {
                crate::log!("NSM ioctl failed: {e}");
                Response::Error(ErrorCode::InternalError)
            }
        }
    }
}

/// An attestation document with the given fields.
pub fn attest(
    nsm: &dyn Nsm,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    match nsm.process(Request::Attestation {
        user_data,
        nonce,
        public_key,
    }) {
        Response::Attestation { document } => Ok(document),
        Response::Error(e) => Err(format!("NSM refused Attestation: {e:?}")),
        _ => Err("NSM answered Attestation with another response type".into()),
    }
}

pub fn get_random(nsm: &dyn Nsm) -> Result<Vec<u8>, String> {
    match nsm.process(Request::GetRandom) {
        Response::GetRandom { random } if !random.is_empty() => Ok(random),
        Response::GetRandom { .. } => Err("NSM GetRandom returned no bytes".into()),
        Response::Error(e) => Err(format!("NSM refused GetRandom: {e:?}")),
        _ => Err("NSM answered GetRandom with another response type".into()),
    }
}

/// True when the kernel's random pool is initialised (getrandom would not block).
pub fn entropy_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: writes at most 1 byte into a 1-byte buffer.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
    r == 1
}

/// Seeds the kernel pool from NSM GetRandom when it is not yet initialised, as AWS's kmstool
/// does: a freshly booted enclave has almost no entropy sources, and RSA key generation must
/// not wait on (or worse, run before) the pool. Returns how many bytes were credited.
pub fn seed_entropy(nsm: &dyn Nsm) -> io::Result<usize> {
    if entropy_ready() {
        return Ok(0);
    }
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203; // _IOW('R', 0x03, int[2])
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")?;
    let mut credited = 0;
    for _ in 0..16 {
        let bytes = get_random(nsm).map_err(io::Error::other)?;
        let n = bytes.len().min(256);
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
        let mut info = vec![0u8; 8 + n];
        info[0..4].copy_from_slice(&((n * 8) as i32).to_ne_bytes());
        info[4..8].copy_from_slice(&(n as i32).to_ne_bytes());
        info[8..].copy_from_slice(&bytes[..n]);
        // SAFETY: RNDADDENTROPY reads a rand_pool_info of the announced size from `info`.
        let r = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        credited += n;
        if entropy_ready() {
            break;
        }
    }
    Ok(credited)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No /dev/nsm here: a device that refuses the ioctl (ENOTTY) and a request too large to
    /// send both end in the crate's error codes, not a panic.
    #[test]
    fn failures_around_the_ioctl_are_nsm_errors() {
        let nsm = HardwareNsm::with_device(File::open("/dev/null").unwrap());
        assert_eq!(
            nsm.process(Request::GetRandom),
            Response::Error(ErrorCode::InternalError)
        );
        assert_eq!(
            nsm.process(Request::ExtendPCR {
                index: 16,
                data: vec![0; codec::MAX_REQUEST_LEN],
            }),
            Response::Error(ErrorCode::InputTooLarge)
        );
    }

    #[test]
    fn the_ioctl_is_the_drivers() {
        // The value of NSM_IOCTL_RAW for x86-64 Linux, where the enclave runs.
        assert_eq!(size_of::<NsmRaw>(), 32);
        assert_eq!(NSM_IOCTL_RAW, 0xC020_0A00);
    }
}
