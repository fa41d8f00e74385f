//! The parent↔enclave wire: framing and messages.

pub mod bulk;
pub mod frame;
pub mod message;

pub use frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame};
pub use message::*;
