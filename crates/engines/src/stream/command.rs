//! Producers and consumers of a stream backup, run by cairn itself (`cairn backup -- pg_dump
//! ...`, `cairn restore -- pg_restore ...`), without a shell, so that their exit status decides
//! the outcome: with `pg_dump | cairn backup` a dump killed halfway, or a `pg_dump` that was
//! never found, looks to cairn like a short but complete stream, and would be listed as good.
//!
//! A producer's stdout is the stream; its stderr is passed through line by line and its last
//! lines are kept to quote when it fails. The stream fails at its end when the producer exited
//! non-zero or by a signal, or when it was empty (unless empty streams are allowed). On SIGINT
//! or SIGTERM, the binary's handler stops the command (`stop_running`: SIGTERM) and ends with
//! the signal's status (130/143): lock released, nothing listed.

use cairn_repo::{Error, Result};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines of a failed command's stderr quoted in the error.
const TAIL_LINES: usize = 5;
/// Bytes of each quoted line kept.
const TAIL_LINE_MAX: usize = 500;

/// The running producer or consumer, for `stop_running` (0: none).
static CHILD_PID: AtomicI32 = AtomicI32::new(0);
/// The signal cairn received while a command ran (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// Stop the running producer or consumer (SIGTERM), because cairn received `sig`. The binary
/// calls this from its own SIGINT/SIGTERM handling, which then ends the command with the
/// signal's exit status (130/143) and releases the stanza lock; replacing those handlers here
/// made an interrupted stream backup exit 3 instead.
pub fn stop_running(sig: i32) {
    SIGNALLED.store(sig, Ordering::SeqCst);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill only sends a signal; pid is the child this process started and has not
        // yet reaped (CHILD_PID is cleared before it is waited for).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// A child process whose stderr is passed through and remembered.
#[derive(Debug)]
pub struct Running {
    name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Arc<AtomicBool>,
    _stderr: Option<JoinHandle<()>>,
}

/// Start `argv` with stdin or stdout piped to cairn.
fn start(argv: &[String], role: &str, stdin: Stdio, stdout: Stdio) -> Result<Running> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::Usage(format!("give the {role} command after `--`")))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it makes the
    // kernel send SIGTERM to the command if cairn dies (SIGKILL included) before it exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            "; check the command's name and PATH"
        } else {
            ""
        };
        Error::io(format!("cannot start the {role} '{prog}'{hint}"), e)
    })?;
    CHILD_PID.store(child.id() as i32, Ordering::SeqCst);
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr_done = Arc::new(AtomicBool::new(false));
    let stderr = child.stderr.take().map(|err| {
        let (tail, done) = (tail.clone(), stderr_done.clone());
        std::thread::spawn(move || {
            pass_stderr(err, &tail);
            done.store(true, Ordering::SeqCst);
        })
    });
    Ok(Running {
        name: prog.clone(),
        child,
        tail,
        stderr_done,
        _stderr: stderr,
    })
}

/// Copy a command's stderr to cairn's as it comes (a closed stderr is ignored), keeping its
/// last `TAIL_LINES` lines, each cut to `TAIL_LINE_MAX` bytes: a command that writes 100 MB
/// without a newline (or a progress bar redrawn with `\r`) must not be held in memory.
fn pass_stderr(mut err: impl Read, tail: &Mutex<VecDeque<String>>) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let push = |line: &mut Vec<u8>| {
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text);
        }
    };
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let _ = io::stderr().write_all(&buf[..n]);
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                push(&mut line);
            } else if line.len() < TAIL_LINE_MAX {
                line.push(b);
            }
        }
    }
    push(&mut line);
}

impl Running {
    /// Wait for the command, then describe how it ended: None when it succeeded.
    fn finish(&mut self) -> io::Result<Option<String>> {
        let status = self.child.wait()?;
        CHILD_PID.store(0, Ordering::SeqCst);
        Ok(self.concluded(status))
    }

    /// How a command that has exited with `status` ended, once its stderr has been read.
    fn concluded(&self, status: ExitStatus) -> Option<String> {
        // Its stderr ends when it exits (unless something it started keeps it open).
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stderr_done.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.failure(status)
    }

    fn failure(&self, status: ExitStatus) -> Option<String> {
        let how = match (status.code(), status.signal()) {
            (Some(0), _) => return None,
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => format!("ended abnormally ({status})"),
        };
        let sig = SIGNALLED.load(Ordering::SeqCst);
        let why = if sig != 0 {
            format!(" (cairn received signal {sig} and stopped it)")
        } else {
            String::new()
        };
        let tail: Vec<String> = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let quoted = if tail.is_empty() {
            " and wrote nothing to stderr".to_string()
        } else {
            format!("; its last stderr lines: {}", tail.join(" | "))
        };
        Some(format!("'{}' {how}{why}{quoted}", self.name))
    }
}

/// A producer: its stdout is the stream.
#[derive(Debug)]
pub struct Producer {
    running: Running,
    stdout: ChildStdout,
}

impl Producer {
    pub fn start(argv: &[String]) -> Result<Producer> {
        let mut running = start(argv, "producer", Stdio::null(), Stdio::piped())?;
        let stdout = running
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::Invalid("the producer has no stdout pipe".into()))?;
        Ok(Producer { running, stdout })
    }

    pub fn name(&self) -> &str {
        &self.running.name
    }
}

/// What the stream backup reads: stdin or a producer, checked at its end.
#[derive(Debug)]
pub struct Checked<R> {
    inner: R,
    producer: Option<Running>,
    allow_empty: bool,
    read: u64,
    what: String,
}

impl Checked<io::Stdin> {
    pub fn stdin(allow_empty: bool) -> Self {
        Checked {
            inner: io::stdin(),
            producer: None,
            allow_empty,
            read: 0,
            what: "standard input".into(),
        }
    }
}

impl Checked<ChildStdout> {
    pub fn producer(p: Producer, allow_empty: bool) -> Self {
        Checked {
            what: format!("the output of '{}'", p.running.name),
            inner: p.stdout,
            producer: Some(p.running),
            allow_empty,
            read: 0,
        }
    }
}

/// How often a read from a producer's stdout looks at whether the producer has exited.
const PRODUCER_POLL_MS: i32 = 200;

/// Wait until `fd` has data or end of file. Returns early with the producer's failure when
/// it exits non-zero while something it started still holds its stdout open (`sh -c 'sleep 30
/// & exit 1'`): the stream would otherwise end only when that grandchild does.
fn wait_readable(fd: RawFd, producer: &mut Running) -> io::Result<Option<String>> {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd for the duration of the call; nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, PRODUCER_POLL_MS) };
        if r > 0 {
            return Ok(None);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(status) = producer.child.try_wait()? {
            CHILD_PID.store(0, Ordering::SeqCst);
            if let Some(failure) = producer.concluded(status) {
                return Ok(Some(failure));
            }
            // Exited cleanly: whatever still holds the pipe may yet write to it.
            return Ok(None);
        }
    }
}

impl<R: Read + AsRawFd> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(p) = &mut self.producer
            && let Some(failure) = wait_readable(self.inner.as_raw_fd(), p)?
        {
            self.producer = None;
            return Err(io::Error::other(format!(
                "the producer failed, so the backup is not kept: {failure}"
            )));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        if let Some(p) = &mut self.producer
            && let Some(failure) = p.finish()?
        {
            self.producer = None;
            return Err(io::Error::other(format!(
                "the producer failed, so the backup is not kept: {failure}"
            )));
        }
        self.producer = None;
        if self.read == 0 && !self.allow_empty {
            return Err(io::Error::other(format!(
                "{} was empty, so the backup is not kept; give --allow-empty if an empty stream is what you mean",
                self.what
            )));
        }
        Ok(0)
    }
}

/// A consumer: the restored stream is written to its stdin.
#[derive(Debug)]
pub struct Consumer {
    running: Running,
    pub stdin: Option<ChildStdin>,
}

impl Consumer {
    pub fn start(argv: &[String]) -> Result<Consumer> {
        let mut running = start(argv, "consumer", Stdio::piped(), Stdio::inherit())?;
        let stdin = running.child.stdin.take();
        Ok(Consumer { running, stdin })
    }

    /// Close its stdin and wait: the restore fails when the consumer failed, or when it
    /// exited before reading the whole stream (`write` is the result of writing it).
    pub fn finish(mut self, write: Result<()>) -> Result<()> {
        drop(self.stdin.take());
        let failure = self
            .running
            .finish()
            .map_err(|e| Error::io(format!("cannot wait for '{}'", self.running.name), e))?;
        let name = &self.running.name;
        match (failure, write) {
            (Some(f), _) => Err(Error::io(
                "the consumer failed, so the restore is not complete",
                io::Error::other(f),
            )),
            (None, Err(e)) if is_broken_pipe(&e) => Err(Error::io(
                format!("'{name}' exited before reading the whole stream"),
                io::Error::other("the restore is not complete"),
            )),
            (None, r) => r,
        }
    }
}

fn is_broken_pipe(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cur = c.source();
    }
    false
}
