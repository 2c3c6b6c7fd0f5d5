//! Serving the guest protocol: on the virtio-serial port (QEMU), or on a vsock port when the
//! kernel command line says `hearth.channel=vsock:PORT` (Firecracker, Cloud Hypervisor),
//! one connection at a time per port or many at once over vsock. Per connection: the
//! handshake, and one thread per request stream. Frames for an open stream (stdin, resize,
//! cancel) are routed to it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hearth_guest_proto::msg::{Hello, Request, Response};
use hearth_guest_proto::{Frame, Kind, PORT_NAME, PROTOCOL_VERSION};

use crate::exec::{self, Ctl};

/// Writes whole frames; shared by every stream's thread of one connection.
#[derive(Clone)]
pub struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    pub fn new(w: impl Write + Send + 'static) -> Out {
        Out(Arc::new(Mutex::new(Box::new(w))))
    }

    pub fn send(&self, f: &Frame) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&f.encode()).is_ok()
    }

    pub fn reply(&self, stream: u32, r: &Response) {
        if let Ok(f) = Frame::json(stream, Kind::Response, r) {
            self.send(&f);
        }
    }
}

pub type Routes = Arc<Mutex<HashMap<u32, Sender<Ctl>>>>;

fn find_port() -> Option<PathBuf> {
    for entry in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == PORT_NAME {
            return Some(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    None
}

/// The port, read so that "no host connected" is idleness rather than an end: a virtio
/// console read returns 0 whenever the guest believes the host side is closed, which also
/// happens when the host connected before the guest's driver was ready. The port can be
/// opened only once, so it is kept open for the agent's whole life and polled with a short,
/// growing sleep while it reads 0.
struct PortReader(File);

impl std::io::Read for PortReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut idle = Duration::from_micros(500);
        loop {
            match self.0.read(buf) {
                Ok(0) => {
                    std::thread::sleep(idle);
                    idle = (idle * 2).min(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

/// The vsock port to serve on, when the kernel command line names one.
fn vsock_port() -> Option<u32> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("hearth.channel=vsock:"))
        .and_then(|p| p.parse().ok())
}

pub fn serve_forever(boot_id: &str) {
    let started = Instant::now();
    if let Some(port) = vsock_port() {
        return serve_vsock(port, boot_id, started);
    }
    let mut warned = false;
    let port = loop {
        match find_port() {
            Some(p) => break p,
            None if !warned => {
                crate::log(&format!("waiting for virtio port {PORT_NAME}"));
                warned = true;
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (reader, writer) = loop {
        match File::options()
            .read(true)
            .write(true)
            .open(&port)
            .and_then(|f| Ok((f.try_clone()?, f)))
        {
            Ok(pair) => break pair,
            Err(e) => {
                crate::log(&format!("opening {}: {e}", port.display()));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let out = Out::new(writer);
    let mut reader = PortReader(reader);
    loop {
        serve(&mut reader, out.clone(), boot_id, started);
        // A framing error: the peer is gone or broken. Serve whoever speaks next.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Accepts connections on vsock `port` for ever, serving each on a thread of its own.
fn serve_vsock(port: u32, boot_id: &str, started: Instant) {
    use nix::sys::socket::{
        accept, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
    };
    use std::os::fd::FromRawFd;
    let listener = loop {
        let made = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .and_then(|fd| {
            bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &VsockAddr::new(libc::VMADDR_CID_ANY, port),
            )?;
            listen(&fd, Backlog::new(16)?)?;
            Ok(fd)
        });
        match made {
            Ok(fd) => break fd,
            Err(e) => {
                crate::log(&format!("listening on vsock port {port}: {e}; retrying"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    crate::log(&format!("serving on vsock port {port}"));
    loop {
        let conn = match accept(std::os::fd::AsRawFd::as_raw_fd(&listener)) {
            // SAFETY: accept returned a new descriptor that nothing else owns.
            Ok(fd) => unsafe { File::from_raw_fd(fd) },
            Err(e) => {
                crate::log(&format!("vsock accept: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let boot_id = boot_id.to_string();
        std::thread::spawn(move || {
            let Ok(writer) = conn.try_clone() else { return };
            let mut reader = conn;
            serve(&mut reader, Out::new(writer), &boot_id, started);
        });
    }
}

/// Serves one connection until it ends or breaks framing.
fn serve<R: std::io::Read>(reader: &mut R, out: Out, boot_id: &str, started: Instant) {
    let routes: Routes = Arc::default();
    loop {
        let frame = match Frame::read_from(reader) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                crate::log(&format!("dropping the connection: {e}"));
                return;
            }
        };
        match frame.kind {
            Kind::Hello => {
                let offered: Hello = frame.parse().unwrap_or(Hello {
                    versions: vec![],
                    agent: String::new(),
                    boot_id: String::new(),
                });
                let versions = if offered.versions.contains(&PROTOCOL_VERSION) {
                    vec![PROTOCOL_VERSION]
                } else {
                    vec![]
                };
                let hello = Hello {
                    versions,
                    agent: format!("hearth-guest/{}", env!("CARGO_PKG_VERSION")),
                    boot_id: boot_id.to_string(),
                };
                if let Ok(f) = Frame::json(0, Kind::Hello, &hello) {
                    out.send(&f);
                }
            }
            Kind::Request => {
                let stream = frame.stream;
                let req: Request = match frame.parse() {
                    Ok(r) => r,
                    Err(e) => {
                        out.reply(
                            stream,
                            &Response::Error {
                                message: format!("invalid request: {e}"),
                            },
                        );
                        continue;
                    }
                };
                // Route the stream before its handler starts, so stdin that follows the
                // request at once is queued, not lost.
                let (tx, ctl) = std::sync::mpsc::channel();
                routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(stream, tx);
                let out = out.clone();
                let routes = routes.clone();
                std::thread::spawn(move || {
                    handle(stream, req, ctl, &out, started);
                    routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&stream);
                });
            }
            Kind::Stdin | Kind::StdinEof | Kind::Resize | Kind::Cancel => {
                let route = routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&frame.stream)
                    .cloned();
                if let Some(tx) = route {
                    let ctl = match frame.kind {
                        Kind::Stdin => Ctl::Stdin(frame.payload),
                        Kind::StdinEof => Ctl::Eof,
                        Kind::Resize => match frame.parse::<hearth_guest_proto::msg::PtySize>() {
                            Ok(s) => Ctl::Resize(s),
                            Err(_) => continue,
                        },
                        _ => Ctl::Cancel,
                    };
                    let _ = tx.send(ctl);
                }
            }
            _ => {}
        }
    }
}

fn handle(stream: u32, req: Request, ctl: Receiver<Ctl>, out: &Out, started: Instant) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let resp = match req {
        Request::Ping => Response::Pong {
            uptime_ms: started.elapsed().as_millis() as u64,
        },
        Request::Exec {
            argv,
            env,
            cwd,
            timeout_ms,
            pty,
        } => exec::run(
            stream,
            exec::Spec {
                argv,
                env,
                cwd,
                timeout_ms,
                pty,
            },
            out,
            ctl,
        ),
        Request::Call {
            argv,
            env,
            cwd,
            line,
            timeout_ms,
            start_only,
        } => crate::worker::call(crate::worker::CallSpec {
            argv,
            env,
            cwd,
            line,
            timeout_ms,
            start_only,
        }),
        Request::Metrics => Response::Metrics(crate::sysinfo::sample()),
        Request::ReadFile { path } => match std::fs::read(&path) {
            Ok(data) if data.len() * 4 / 3 + 64 < hearth_guest_proto::MAX_PAYLOAD => {
                Response::File {
                    data: b64.encode(data),
                }
            }
            Ok(_) => Response::Error {
                message: format!("{path} is too large to read in one request"),
            },
            Err(e) => Response::Error {
                message: format!("{path}: {e}"),
            },
        },
        Request::WriteFile {
            path,
            data,
            mode,
            append,
        } => match b64.decode(data.as_bytes()) {
            Ok(bytes) => match write_file(&path, &bytes, mode, append) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error {
                    message: format!("{path}: {e}"),
                },
            },
            Err(e) => Response::Error {
                message: format!("data is not base64: {e}"),
            },
        },
        Request::Restored {
            hostname,
            entropy,
            now_ms,
            net,
        } => match b64.decode(entropy.as_bytes()) {
            Ok(entropy) => match crate::init::restored(&hostname, &entropy, now_ms, net.as_ref()) {
                Ok(()) => Response::Ok,
                Err(message) => Response::Error { message },
            },
            Err(e) => Response::Error {
                message: format!("entropy is not base64: {e}"),
            },
        },
        Request::Shutdown { reboot } => {
            out.reply(stream, &Response::Ok);
            nix::unistd::sync();
            std::thread::sleep(Duration::from_millis(50));
            let how = if reboot {
                nix::sys::reboot::RebootMode::RB_AUTOBOOT
            } else {
                nix::sys::reboot::RebootMode::RB_POWER_OFF
            };
            if std::process::id() == 1 {
                let _ = nix::sys::reboot::reboot(how);
            } else {
                let _ = std::process::Command::new("/sbin/poweroff").status();
            }
            return;
        }
    };
    out.reply(stream, &resp);
}

fn write_file(path: &str, data: &[u8], mode: u32, append: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(!append)
        .append(append)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    // `mode` applies when the file is created; keep it right when it already existed.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// What a vsock connection gets, over a socket pair: the handshake, then answers on
    /// the request's stream.
    #[test]
    fn a_connection_gets_the_handshake_then_answers() {
        let (mut host, guest) = UnixStream::pair().unwrap();
        let writer = guest.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut reader = guest;
            serve(&mut reader, Out::new(writer), "boot-1", Instant::now());
        });
        let hello = Hello {
            versions: vec![PROTOCOL_VERSION],
            agent: "test".into(),
            boot_id: String::new(),
        };
        host.write_all(&Frame::json(0, Kind::Hello, &hello).unwrap().encode())
            .unwrap();
        let f = Frame::read_from(&mut host).unwrap().unwrap();
        assert_eq!(f.kind, Kind::Hello);
        let back: Hello = f.parse().unwrap();
        assert_eq!(back.versions, vec![PROTOCOL_VERSION]);
        assert_eq!(back.boot_id, "boot-1");
        host.write_all(
            &Frame::json(7, Kind::Request, &Request::Ping)
                .unwrap()
                .encode(),
        )
        .unwrap();
        let f = Frame::read_from(&mut host).unwrap().unwrap();
        assert_eq!((f.stream, f.kind), (7, Kind::Response));
        assert!(matches!(f.parse().unwrap(), Response::Pong { .. }));
    }
}
