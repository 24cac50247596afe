//! A loopback TCP proxy between cairn and an S3 server, for fault tests. It can
//! - answer the first requests it sees with injected errors (503 SlowDown, 500, 429), as a
//!   throttling or failing store does, then forward everything;
//! - die after forwarding N bytes upstream: every connection is cut and the port refuses new
//!   ones, as when a network link or a load balancer goes away mid-transfer;
//! - freeze after N bytes: connections stay open but nothing more is forwarded, the case that
//!   only timeouts catch;
//! - refuse conditional writes: read each request and answer 501 NotImplemented to any that
//!   carries `If-None-Match`, as S3-compatible stores without conditional writes do.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Internal,
    TooMany,
    NotImplemented,
    /// Forward the request, then drop the server's answer and cut the connection: the request
    /// took effect but the client never hears so (a response lost to a network failure).
    LoseResponse,
}

impl Fault {
    fn status(self) -> (u16, &'static str, &'static str) {
        match self {
            Fault::SlowDown => (503, "Slow Down", "SlowDown"),
            Fault::Internal => (500, "Internal Server Error", "InternalError"),
            Fault::TooMany => (429, "Too Many Requests", "SlowDown"),
            Fault::NotImplemented | Fault::LoseResponse => {
                (501, "Not Implemented", "NotImplemented")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trip {
    /// Cut every connection and refuse new ones.
    Die,
    /// Keep connections open, forward nothing.
    Freeze,
}

#[derive(Default)]
struct State {
    faults: Mutex<VecDeque<Fault>>,
    injected: AtomicU64,
    upstream_bytes: AtomicU64,
    /// Trip once this many bytes went upstream (0: never).
    trip_after: AtomicU64,
    trip: Mutex<Option<Trip>>,
    tripped: AtomicBool,
    frozen: AtomicBool,
    dead: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    refuse_if_none_match: AtomicBool,
    refused: AtomicU64,
    /// Faults for requests whose request line contains every one of some substrings, one
    /// fault per matching request.
    rules: Mutex<Vec<(Vec<String>, VecDeque<Fault>)>>,
}

impl State {
    /// Read requests one by one (instead of copying bytes) once a rule needs to see them.
    fn parses_requests(&self) -> bool {
        self.refuse_if_none_match.load(Ordering::SeqCst)
            || self.rules.lock().map(|r| !r.is_empty()).unwrap_or(false)
    }

    /// The fault for this request, if a rule matches it and has one left.
    fn fault_for(&self, request_line: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().ok()?;
        let (_, q) = rules.iter_mut().find(|(parts, q)| {
            !q.is_empty() && parts.iter().all(|p| request_line.contains(p.as_str()))
        })?;
        q.pop_front()
    }

    fn count_up(&self, n: usize, how: Trip) {
        let total = self.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let limit = self.trip_after.load(Ordering::SeqCst);
        if limit > 0 && total >= limit && !self.tripped.swap(true, Ordering::SeqCst) {
            match how {
                Trip::Die => self.kill(),
                Trip::Freeze => self.frozen.store(true, Ordering::SeqCst),
            }
        }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Ok(conns) = self.conns.lock() {
            for c in conns.iter() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.kill();
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let state = Arc::new(State::default());
        let st = state.clone();
        thread::spawn(move || {
            // Polling accept, so that a dead proxy closes its port (new connections refused).
            while !st.dead.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let st = st.clone();
                        thread::spawn(move || {
                            let _ = serve(client, upstream, &st);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Proxy { port, state })
    }

    /// Answer the next requests with these errors, one each, in order.
    pub fn inject(&self, faults: &[Fault]) {
        if let Ok(mut q) = self.state.faults.lock() {
            q.extend(faults.iter().copied());
        }
    }

    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    pub fn upstream_bytes(&self) -> u64 {
        self.state.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Die or freeze once `bytes` more have gone upstream.
    pub fn trip_after(&self, bytes: u64, how: Trip) {
        if let Ok(mut t) = self.state.trip.lock() {
            *t = Some(how);
        }
        let now = self.upstream_bytes();
        self.state.trip_after.store(now + bytes, Ordering::SeqCst);
    }

    /// From now on, answer 501 to every request that carries `If-None-Match`.
    pub fn refuse_conditional_writes(&self) {
        self.state
            .refuse_if_none_match
            .store(true, Ordering::SeqCst);
    }

    /// Meet the next requests whose request line (`PUT /bucket/key?partNumber=3&... HTTP/1.1`)
    /// contains every one of `patterns` with these faults, one each, wherever they fall in a
    /// connection.
    pub fn inject_on(&self, patterns: &[&str], faults: &[Fault]) {
        if let Ok(mut r) = self.state.rules.lock() {
            r.push((
                patterns.iter().map(|p| p.to_string()).collect(),
                faults.iter().copied().collect(),
            ));
        }
    }

    /// How many requests were refused for carrying `If-None-Match`.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    pub fn tripped(&self) -> bool {
        self.state.tripped.load(Ordering::SeqCst)
    }

    /// cairn's S3 options through this proxy.
    pub fn repo_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        vec![
            "--repo".into(),
            format!("s3://{bucket}/{prefix}"),
            "--s3-endpoint".into(),
            format!("http://127.0.0.1:{}", self.port),
            "--s3-region".into(),
            "us-east-1".into(),
            "--s3-path-style".into(),
        ]
    }
}

/// Read one request head (through the blank line) from `c`.
fn read_head(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn answer_fault(mut c: TcpStream, head: &[u8], fault: Fault) -> std::io::Result<()> {
    let head = String::from_utf8_lossy(head);
    let is_head = head.starts_with("HEAD ");
    // Drain the body so the client sees our answer rather than a reset.
    if !header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<u64>().ok())
    {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        std::io::copy(&mut (&c).take(len), &mut std::io::sink())?;
    }
    let (status, reason, code) = fault.status();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
    );
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if is_head { 0 } else { body.len() }
    );
    if !is_head {
        resp.push_str(&body);
    }
    c.write_all(resp.as_bytes())?;
    c.flush()?;
    let _ = c.shutdown(Shutdown::Write);
    Ok(())
}

fn serve(mut client: TcpStream, upstream: u16, st: &Arc<State>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut first = Vec::new();
    let pending_fault = st.faults.lock().map(|q| !q.is_empty()).unwrap_or(false);
    if pending_fault {
        let head = read_head(&mut client)?;
        let fault = st.faults.lock().ok().and_then(|mut q| q.pop_front());
        if let Some(f) = fault {
            st.injected.fetch_add(1, Ordering::SeqCst);
            return answer_fault(client, &head, f);
        }
        first = head;
    }
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    if let Ok(mut conns) = st.conns.lock() {
        conns.push(client.try_clone()?);
        conns.push(server.try_clone()?);
    }
    if st.dead.load(Ordering::SeqCst) {
        st.kill();
        return Ok(());
    }
    let how = st.trip.lock().ok().and_then(|t| *t).unwrap_or(Trip::Die);
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up_state = st.clone();
    let mut c_answer = client.try_clone()?;
    let swallow = Arc::new(AtomicBool::new(false));
    let up_swallow = swallow.clone();
    let up = thread::spawn(move || {
        if !first.is_empty() {
            if s_write.write_all(&first).is_err() {
                return;
            }
            up_state.count_up(first.len(), how);
        }
        if up_state.parses_requests() {
            pump_requests(
                &mut c_read,
                &mut s_write,
                &mut c_answer,
                &up_state,
                how,
                &up_swallow,
            );
        } else {
            pump(&mut c_read, &mut s_write, &up_state, Some(how), &up_swallow);
        }
    });
    let (mut s_read, mut c_write) = (server, client);
    pump(&mut s_read, &mut c_write, st, None, &swallow);
    let _ = up.join();
    Ok(())
}

/// The upstream direction, request by request: a request with `If-None-Match` is answered
/// 501 on `client` (and the connection closed); others are forwarded with their bodies. A
/// chunked body ends the parsing: the rest of the connection is copied as it comes.
fn pump_requests(
    from: &mut TcpStream,
    to: &mut TcpStream,
    client: &mut TcpStream,
    st: &State,
    how: Trip,
    swallow: &AtomicBool,
) {
    while let Ok(head) = read_head(from) {
        let text = String::from_utf8_lossy(&head).into_owned();
        let refuse = st.refuse_if_none_match.load(Ordering::SeqCst)
            && header(&text, "if-none-match").is_some();
        let fault = if refuse {
            st.refused.fetch_add(1, Ordering::SeqCst);
            Some(Fault::NotImplemented)
        } else {
            st.fault_for(text.lines().next().unwrap_or(""))
        };
        if let Some(f) = fault {
            if !refuse {
                st.injected.fetch_add(1, Ordering::SeqCst);
            }
            if f == Fault::LoseResponse {
                swallow.store(true, Ordering::SeqCst);
                let len = header(&text, "content-length")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if to.write_all(&head).is_ok() {
                    let _ = std::io::copy(&mut (&*from).take(len), to);
                }
                // Let the server act on it, then cut both sides.
                thread::sleep(Duration::from_millis(1500));
                let _ = client.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if let Ok(c) = client.try_clone() {
                let _ = answer_fault(c, &head, f);
            }
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&head).is_err() {
            break;
        }
        st.count_up(head.len(), how);
        if header(&text, "transfer-encoding").is_some() {
            pump(from, to, st, Some(how), swallow);
            return;
        }
        let len = header(&text, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match std::io::copy(&mut (&*from).take(len), to) {
            Ok(n) if n == len => st.count_up(n as usize, how),
            _ => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Copy until EOF or error; `count` marks the upstream direction. Once `swallow` is set, what
/// arrives is dropped.
fn pump(
    from: &mut TcpStream,
    to: &mut TcpStream,
    st: &State,
    count: Option<Trip>,
    swallow: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Frozen: hold the connection open and drop what arrives.
        while st.frozen.load(Ordering::SeqCst) && !st.dead.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(50));
        }
        if swallow.load(Ordering::SeqCst) {
            continue;
        }
        if st.dead.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(how) = count {
            st.count_up(n, how);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
