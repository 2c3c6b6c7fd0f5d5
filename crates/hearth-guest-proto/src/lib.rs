//! The guest protocol: how the host talks to `hearth-guest` inside every VM.
//!
//! One byte stream (a QEMU virtio-serial port, a Firecracker or Cloud Hypervisor hybrid-vsock
//! connection, or TCP) carries frames:
//!
//! ```text
//! +----------------+----------------+--------+-------------------+
//! | len: u32 BE    | stream: u32 BE | kind:u8| payload (len - 5) |
//! +----------------+----------------+--------+-------------------+
//! ```
//!
//! `len` counts stream, kind and payload, and is bounded by [`MAX_FRAME`] on both sides, so a
//! peer can never make the other allocate more than that for one frame. Streams multiplex:
//! every request opens a stream with an id the host picks, and everything about that request
//! (its output, its stdin, its final response) travels on that id, so many execs, a PTY and
//! function calls share one connection.
//!
//! Stream 0 is the connection itself: the host sends [`Kind::Hello`] with the versions it
//! speaks, the guest answers with the one chosen. See `docs/guest-protocol.md`.

pub mod frame;
pub mod msg;

#[cfg(feature = "client")]
pub mod client;

pub use frame::{Frame, FrameError, Kind, MAX_FRAME, MAX_PAYLOAD};
pub use msg::{Hello, Request, Response};

/// The protocol versions this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The virtio-serial port name `hearth-guest` looks for.
pub const PORT_NAME: &str = "org.hearth.guest.0";
