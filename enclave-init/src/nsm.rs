//! The Nitro Secure Module: attestation documents and hardware randomness.
//!
//! Everything talks to it through [`Nsm`], the request/response API of
//! `aws-nitro-enclaves-nsm-api`, so the software NSM of dev builds slots in unchanged.

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use std::io;

pub use aws_nitro_enclaves_nsm_api::api::{
    ErrorCode as NsmErrorCode, Request as NsmRequest, Response as NsmResponse,
};

pub trait Nsm: Send + Sync {
    fn process(&self, request: Request) -> Response;
}

/// `/dev/nsm` through AWS's driver.
pub struct HardwareNsm {
    fd: i32,
}

impl HardwareNsm {
    pub fn open() -> io::Result<Self> {
        let fd = aws_nitro_enclaves_nsm_api::driver::nsm_init();
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "cannot open /dev/nsm (not in a Nitro enclave, or nsm.ko not loaded)",
            ));
        }
        Ok(HardwareNsm { fd })
    }
}

impl Nsm for HardwareNsm {
    fn process(&self, request: Request) -> Response {
        aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, request)
    }
}

impl Drop for HardwareNsm {
    fn drop(&mut self) {
        aws_nitro_enclaves_nsm_api::driver::nsm_exit(self.fd);
    }
}

/// An attestation document with the given fields.
pub fn attest(
    nsm: &dyn Nsm,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    use serde_bytes::ByteBuf;
    match nsm.process(Request::Attestation {
        user_data: user_data.map(ByteBuf::from),
        nonce: nonce.map(ByteBuf::from),
        public_key: public_key.map(ByteBuf::from),
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
        use std::os::fd::AsRawFd;
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
