//! Framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The decoder is incremental (bytes may arrive split anywhere, including inside the length
//! prefix) and checks the announced length against the limit before allocating anything for the
//! body, so a hostile peer cannot make us buffer more than one maximum-size frame.

pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
pub const PREFIX_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame {frame} announces {len} bytes, over the limit of {max}")]
    TooLarge { frame: u64, len: u64, max: usize },
    #[error("frame {frame} is empty")]
    Empty { frame: u64 },
    #[error("connection closed inside frame {frame} ({have} of {want} bytes received)")]
    Truncated {
        frame: u64,
        have: usize,
        want: usize,
    },
}

/// Appends one frame to `out`.
pub fn encode_frame(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty { frame: 0 });
    }
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            frame: 0,
            len: payload.len() as u64,
            max,
        });
    }
    out.reserve(PREFIX_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    body: Option<(usize, Vec<u8>)>,
    /// 1-based number of the frame being read, for error messages.
    frame: u64,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            body: None,
            frame: 1,
            failed: None,
        }
    }

    /// Number of the next frame to complete (1-based).
    pub fn frame_number(&self) -> u64 {
        self.frame
    }

    /// Consumes bytes from the front of `input` until one frame is complete, and returns it.
    /// Returns `Ok(None)` when `input` is exhausted first. After an error the stream is
    /// unusable (framing is lost) and every later call returns the same error kind.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.body.is_none() {
            let take = (PREFIX_LEN - self.prefix_len).min(input.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&input[..take]);
            self.prefix_len += take;
            *input = &input[take..];
            if self.prefix_len < PREFIX_LEN {
                return Ok(None);
            }
            let len = u32::from_be_bytes(self.prefix) as usize;
            let error = if len == 0 {
                Some(FrameError::Empty { frame: self.frame })
            } else if len > self.max {
                Some(FrameError::TooLarge {
                    frame: self.frame,
                    len: len as u64,
                    max: self.max,
                })
            } else {
                None
            };
            if let Some(e) = error {
                self.failed = Some(e.clone());
                return Err(e);
            }
            // Only now, with the length vetted, is memory committed.
            self.body = Some((len, Vec::with_capacity(len)));
        }
        let (want, body) = self.body.as_mut().expect("set above");
        let take = (*want - body.len()).min(input.len());
        body.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if body.len() < *want {
            return Ok(None);
        }
        let (_, body) = self.body.take().expect("set above");
        self.prefix_len = 0;
        self.frame += 1;
        Ok(Some(body))
    }

    /// Called when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.body {
            Some((want, body)) => Err(FrameError::Truncated {
                frame: self.frame,
                have: PREFIX_LEN + body.len(),
                want: PREFIX_LEN + want,
            }),
            None if self.prefix_len > 0 => Err(FrameError::Truncated {
                frame: self.frame,
                have: self.prefix_len,
                want: PREFIX_LEN,
            }),
            None => Ok(()),
        }
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        self.body.is_none() && self.prefix_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut FrameDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut input)? {
            out.push(f);
        }
        assert!(input.is_empty());
        Ok(out)
    }

    #[test]
    fn refuses_oversized_before_reading_the_body() {
        let mut dec = FrameDecoder::new(16);
        let mut input: &[u8] = &[0, 0, 0, 17, b'x'];
        assert_eq!(
            dec.decode(&mut input),
            Err(FrameError::TooLarge {
                frame: 1,
                len: 17,
                max: 16
            })
        );
        // The body byte was not consumed: nothing was buffered for it.
        assert_eq!(input, b"x");
        let mut big: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            FrameDecoder::new(DEFAULT_MAX_FRAME).decode(&mut big),
            Err(FrameError::TooLarge {
                len: 4294967295,
                ..
            })
        ));
    }

    #[test]
    fn truncation_and_empty_frames() {
        let mut dec = FrameDecoder::new(16);
        assert_eq!(decode_all(&mut dec, &[0, 0, 0, 3, b'a']).unwrap().len(), 0);
        assert_eq!(
            dec.finish().unwrap_err().to_string(),
            "connection closed inside frame 1 (5 of 7 bytes received)"
        );
        let mut dec = FrameDecoder::new(16);
        assert_eq!(
            dec.decode(&mut &[0u8, 0, 0, 0][..]),
            Err(FrameError::Empty { frame: 1 })
        );
        let mut out = Vec::new();
        assert!(encode_frame(b"", 16, &mut out).is_err());
        assert!(encode_frame(&[0; 17], 16, &mut out).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_under_any_chunking(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            cuts in proptest::collection::vec(any::<u16>(), 0..20),
        ) {
            let mut wire = Vec::new();
            for f in &frames { encode_frame(f, 1024, &mut wire).unwrap(); }
            let mut points: Vec<usize> = cuts.iter().map(|c| *c as usize % (wire.len() + 1)).collect();
            points.push(0); points.push(wire.len());
            points.sort_unstable();
            let mut dec = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for w in points.windows(2) {
                got.extend(decode_all(&mut dec, &wire[w[0]..w[1]]).unwrap());
            }
            prop_assert_eq!(got, frames);
            prop_assert!(dec.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), max in 1usize..600) {
            let mut dec = FrameDecoder::new(max);
            let mut input = &data[..];
            while let Ok(Some(f)) = dec.decode(&mut input) {
                prop_assert!(!f.is_empty() && f.len() <= max);
            }
            let _ = dec.finish();
        }
    }
}
