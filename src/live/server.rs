//! The control socket's server: an accept thread, and per client a reader thread
//! (requests) and a writer thread (replies, then events). It only talks to the hub and
//! sends steering commands to the dispatcher; it never touches run state itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use serde_json::{Value, json};

use super::addr;
use super::hub::Hub;
use super::protocol::{self, Op};
use crate::runner::dispatcher::steer::{SteerCommand, SteerRequest};
use crate::runner::inbox::InboxTx;

/// Clients served at once; more are told so and closed.
const MAX_CLIENTS: usize = 64;
/// How long one write to a client may block before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a steering request may wait for the dispatcher.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    hub: Hub,
    /// The dispatcher's inbox, for steering commands.
    commands: InboxTx,
    done: AtomicBool,
    clients: AtomicUsize,
    next: AtomicU64,
    /// Every open connection, to close them when the run ends.
    conns: Mutex<HashMap<u64, UnixStream>>,
    /// Writers still sending (the run's end waits a moment for them).
    writing: AtomicUsize,
    /// Lines written to any client: the run's end waits only while this moves.
    written: AtomicU64,
}

/// The serving socket of a run; removes it when dropped.
pub struct Server {
    path: PathBuf,
    /// The listening socket, to wake the accept loop when the run ends.
    listener: Option<UnixListener>,
    addr_file: Option<PathBuf>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket for this state folder (the caller holds its lock, so any
    /// socket file there is a dead runner's) and starts serving.
    pub fn start(state_dir: &Path, hub: Hub, commands: InboxTx) -> std::io::Result<Server> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        let (path, recorded) = addr::choose(state_dir, runtime.as_deref())?;
        let addr_path = state_dir.join(addr::ADDR_FILE);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&addr_path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let addr_file = if recorded {
            std::fs::write(&addr_path, format!("{}\n", path.display()))?;
            Some(addr_path)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            hub,
            commands,
            done: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            writing: AtomicUsize::new(0),
            written: AtomicU64::new(0),
        });
        let s = shared.clone();
        let waker = listener.try_clone().ok();
        let accept = std::thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || accept_loop(&listener, &s))?;
        tracing::info!(socket = %path.display(), "serving the control socket");
        Ok(Server {
            path,
            listener: waker,
            addr_file,
            shared,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: subscribers get their last events (a moment's grace), then every
    /// connection is closed and the socket removed.
    pub fn close(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.done.store(true, Ordering::SeqCst);
        // Wake the accept loop: shutting a listening socket down makes `accept` fail
        // at once (Linux). Connecting works elsewhere, unless the file was removed.
        if let Some(l) = &self.listener {
            let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Both);
        }
        let _ = UnixStream::connect(&self.path);
        let _ = accept.join();
        let _ = std::fs::remove_file(&self.path);
        if let Some(a) = &self.addr_file {
            let _ = std::fs::remove_file(a);
        }
        self.shared.hub.close();
        for c in lock_conns(&self.shared).values() {
            let _ = c.shutdown(std::net::Shutdown::Read);
        }
        // Up to 2 s for writers still sending, but not for one whose client stopped
        // reading: the wait ends once no line went out for 200 ms.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut seen = self.shared.written.load(Ordering::SeqCst);
        let mut moved = Instant::now();
        while self.shared.writing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.shared.written.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                moved = Instant::now();
            } else if moved.elapsed() > Duration::from_millis(200) {
                break;
            }
        }
        for c in lock_conns(&self.shared).values() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock_conns(s: &Shared) -> std::sync::MutexGuard<'_, HashMap<u64, UnixStream>> {
    s.conns
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.done.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || serve(stream, &s));
        if let Err(e) = spawned {
            tracing::warn!("cannot serve a control client: {e}");
        }
    }
}

/// Whether the peer runs as our user (SO_PEERCRED). Elsewhere than Linux the 0700
/// folder (or private runtime folder) is the only guard.
fn peer_is_us(stream: &UnixStream) -> bool {
    #[cfg(target_os = "linux")]
    {
        match rustix::net::sockopt::socket_peercred(stream) {
            Ok(cred) => cred.uid == rustix::process::getuid(),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        true
    }
}

/// What the reader hands the writer.
enum Out {
    Line(String),
    /// A subscription's reply (with the snapshot), then its events.
    Subscribed(String, Receiver<Arc<str>>),
}

fn serve(stream: UnixStream, shared: &Arc<Shared>) {
    let mut first = &stream;
    if !peer_is_us(&stream) {
        let _ = first.write_all(
            protocol::reply(&Value::Null, Err("permission denied: another user's run")).as_bytes(),
        );
        return;
    }
    if shared.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        let _ = first.write_all(
            protocol::reply(
                &Value::Null,
                Err("too many control clients; try again later"),
            )
            .as_bytes(),
        );
        return;
    }
    let id = shared.next.fetch_add(1, Ordering::SeqCst);
    if let Ok(c) = stream.try_clone() {
        lock_conns(shared).insert(id, c);
    }
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (out_tx, out_rx) = crossbeam_channel::bounded::<Out>(64);
    let writer = stream.try_clone().ok().and_then(|w| {
        shared.writing.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("control-writer".into())
            .spawn(move || {
                write_loop(w, &out_rx, &s.written);
                s.writing.fetch_sub(1, Ordering::SeqCst);
            })
            .map_err(|_| shared.writing.fetch_sub(1, Ordering::SeqCst))
            .ok()
    });
    if writer.is_some() {
        read_loop(&stream, shared, &out_tx);
    }
    drop(out_tx);
    if let Some(w) = writer {
        let _ = w.join();
    }
    linger(&stream);
    lock_conns(shared).remove(&id);
    shared.clients.fetch_sub(1, Ordering::SeqCst);
}

/// Ends a connection without losing the last reply: closing a Unix socket with
/// unread input makes the kernel reset the client's side (ECONNRESET), which a client
/// may see before the error it was sent (a line over `MAX_LINE` leaves input unread).
/// So: no more writes, then read and discard what the client still sends, for a
/// second and a MiB at most, before the socket closes.
fn linger(stream: &UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = 1usize << 20;
    let mut sink = [0u8; 8192];
    let mut reader = stream;
    while left > 0 && Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn write_loop(mut stream: UnixStream, out: &Receiver<Out>, written: &AtomicU64) {
    let mut out = out.clone();
    let mut events = crossbeam_channel::never::<Arc<str>>();
    let mut subscribed = false;
    loop {
        let wrote = select! {
            recv(out) -> m => match m {
                Ok(Out::Line(l)) => stream.write_all(l.as_bytes()),
                Ok(Out::Subscribed(reply, rx)) => {
                    events = rx;
                    subscribed = true;
                    stream.write_all(reply.as_bytes())
                }
                // The client sent its last request; a subscriber still reads events.
                Err(_) if subscribed => {
                    out = crossbeam_channel::never();
                    Ok(())
                }
                Err(_) => return,
            },
            recv(events) -> e => match e {
                Ok(l) => stream.write_all(l.as_bytes()),
                // The run ended (or dropped this client): its stream ends here.
                Err(_) => {
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    return;
                }
            },
        };
        if wrote.is_err() {
            return;
        }
        written.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads requests, one per line, until the client closes (or breaks a rule that ends
/// the connection: a line longer than `MAX_LINE`).
fn read_loop(stream: &UnixStream, shared: &Shared, out: &Sender<Out>) {
    let mut reader = BufReader::new(stream);
    let mut subscribed = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = protocol::MAX_LINE as u64 + 1;
        match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() > protocol::MAX_LINE {
            let msg = format!(
                "request line longer than {} KiB; closing the connection",
                protocol::MAX_LINE / 1024
            );
            let _ = out.send(Out::Line(protocol::reply(&Value::Null, Err(&msg))));
            return;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, op) = protocol::parse(line);
        let reply = match op {
            Err(e) => protocol::reply(&id, Err(&e)),
            Ok(Op::Snapshot) => protocol::reply(&id, Ok(("snapshot", shared.hub.snapshot()))),
            Ok(Op::Subscribe) if subscribed => {
                protocol::reply(&id, Err("this connection is already subscribed"))
            }
            Ok(Op::Subscribe) => {
                let joined = stream
                    .try_clone()
                    .ok()
                    .and_then(|s| shared.hub.subscribe(s));
                match joined {
                    Some((snapshot, events)) => {
                        subscribed = true;
                        let reply = protocol::reply(&id, Ok(("snapshot", snapshot)));
                        if out.send(Out::Subscribed(reply, events)).is_err() {
                            return;
                        }
                        continue;
                    }
                    None => protocol::reply(&id, Err("the run has ended")),
                }
            }
            Ok(Op::Stop(specs)) => steer(shared, &id, SteerRequest::Stop(specs)),
            Ok(Op::Restart { specs, with_deps }) => {
                steer(shared, &id, SteerRequest::Restart { specs, with_deps })
            }
            Ok(Op::StopRun) => steer(shared, &id, SteerRequest::StopRun),
        };
        if out.send(Out::Line(reply)).is_err() {
            return;
        }
    }
}

fn steer(shared: &Shared, id: &Value, request: SteerRequest) -> String {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if !shared.commands.steer(SteerCommand { request, reply: tx }) {
        return protocol::reply(id, Err("the run has ended"));
    }
    match rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(Ok(msg)) => protocol::reply(id, Ok(("message", json!(msg)))),
        Ok(Err(e)) => protocol::reply(id, Err(&e)),
        Err(_) => protocol::reply(id, Err("the run has ended")),
    }
}
