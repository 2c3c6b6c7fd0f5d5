//! The frame codec: encoding, and decoding from a buffer or a blocking reader.

use std::io::Read;

/// The largest frame (stream id + kind + payload), in bytes.
pub const MAX_FRAME: usize = 1 << 20;
/// The largest payload of one frame.
pub const MAX_PAYLOAD: usize = MAX_FRAME - 5;
/// Output is sent in chunks of at most this many bytes, so one busy stream can't starve
/// the others.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Stream 0: version handshake (JSON [`crate::Hello`]).
    Hello = 1,
    /// Opens a stream (JSON [`crate::Request`]).
    Request = 2,
    /// Ends a stream (JSON [`crate::Response`]).
    Response = 3,
    /// Host → guest bytes for a process's stdin or a PTY.
    Stdin = 4,
    /// Guest → host bytes of a process's stdout or a PTY.
    Stdout = 5,
    /// Guest → host bytes of a process's stderr.
    Stderr = 6,
    /// Host → guest: no more stdin.
    StdinEof = 7,
    /// Host → guest: a PTY's new size (JSON `{"rows","cols"}`).
    Resize = 8,
    /// Host → guest: give up on this stream (kill its process).
    Cancel = 9,
    /// Guest → host on stream 0: something the host should know (JSON [`crate::msg::Notice`]).
    Notice = 10,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Hello,
            2 => Request,
            3 => Response,
            4 => Stdin,
            5 => Stdout,
            6 => Stderr,
            7 => StdinEof,
            8 => Resize,
            9 => Cancel,
            10 => Notice,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: u32,
    pub kind: Kind,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("invalid message: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Frame {
    pub fn new(stream: u32, kind: Kind, payload: Vec<u8>) -> Frame {
        Frame {
            stream,
            kind,
            payload,
        }
    }

    /// A frame whose payload is `msg` as JSON.
    pub fn json<T: serde::Serialize>(
        stream: u32,
        kind: Kind,
        msg: &T,
    ) -> Result<Frame, FrameError> {
        let payload = serde_json::to_vec(msg)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(payload.len() + 5));
        }
        Ok(Frame::new(stream, kind, payload))
    }

    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len() + 5;
        debug_assert!(len <= MAX_FRAME);
        let mut out = Vec::with_capacity(len + 4);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Takes one whole frame off the front of `buf`, if it holds one. An oversized or
    /// malformed header is an error at once, before any payload is buffered.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        check_len(len)?;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::from_body(&buf[4..4 + len])?;
        buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Reads one frame from a blocking reader. `Ok(None)` on a clean end of stream.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Option<Frame>, FrameError> {
        let mut len_buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut len_buf[got..])? {
                0 if got == 0 => return Ok(None),
                0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                n => got += n,
            }
        }
        let len = u32::from_be_bytes(len_buf) as usize;
        check_len(len)?;
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Frame::from_body(&body).map(Some)
    }

    /// A frame from its body (everything after the length: at least 5 bytes, as
    /// `check_len` ensures).
    fn from_body(body: &[u8]) -> Result<Frame, FrameError> {
        let kind = Kind::from_u8(body[4]).ok_or(FrameError::UnknownKind(body[4]))?;
        let stream = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        Ok(Frame::new(stream, kind, body[5..].to_vec()))
    }
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < 5 {
        return Err(FrameError::TooShort(len));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_buffer_and_reader() {
        let f = Frame::new(7, Kind::Stdout, b"hello".to_vec());
        let mut buf = f.encode();
        buf.extend(Frame::new(8, Kind::StdinEof, vec![]).encode());
        let mut reader = std::io::Cursor::new(buf.clone());
        assert_eq!(Frame::read_from(&mut reader).unwrap().unwrap(), f);
        assert_eq!(
            Frame::read_from(&mut reader).unwrap().unwrap().kind,
            Kind::StdinEof
        );
        assert!(Frame::read_from(&mut reader).unwrap().is_none());

        assert_eq!(Frame::decode(&mut buf).unwrap().unwrap(), f);
        assert_eq!(Frame::decode(&mut buf).unwrap().unwrap().stream, 8);
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let full = Frame::new(1, Kind::Stdin, vec![1, 2, 3]).encode();
        let mut buf = full[..6].to_vec();
        assert!(Frame::decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&full[6..]);
        assert!(Frame::decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn oversized_and_malformed_headers_are_refused_before_buffering() {
        let mut buf = (u32::MAX).to_be_bytes().to_vec();
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
        let mut r = std::io::Cursor::new(((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(matches!(
            Frame::read_from(&mut r),
            Err(FrameError::TooLarge(_))
        ));
        let mut buf = 2u32.to_be_bytes().to_vec();
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::TooShort(2))
        ));
        let mut buf = vec![0, 0, 0, 5, 0, 0, 0, 1, 200];
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::UnknownKind(200))
        ));
    }

    #[test]
    fn json_payloads_over_the_limit_are_refused() {
        let big = "x".repeat(MAX_PAYLOAD + 1);
        assert!(matches!(
            Frame::json(1, Kind::Request, &big),
            Err(FrameError::TooLarge(_))
        ));
    }
}
