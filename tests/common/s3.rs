//! Real S3-compatible servers for tests, started on a free 127.0.0.1 port and killed when
//! dropped: moto (`pip install 'moto[server]'`), over HTTP or HTTPS with a certificate of the
//! test's own CA, and s3s-fs (`cargo install s3s-fs`), which checks request signatures.
//! `.ci/run` installs both.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "cairn-test";
pub const SECRET_KEY: &str = "cairn-test-secret";

pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out)
}

fn wait_listening(port: u16, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start within 30 s").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A port nothing listens on, and never one this process handed out before: the kernel may
/// give a just-released port again, and two servers started by tests running in parallel
/// would then race for it; the loser exits while the winner answers its readiness check.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// Fail when the server exited (another process took its port) instead of trusting
/// whoever answers on the port.
fn still_running(server: &mut Moto, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    match server.child.try_wait()? {
        Some(status) => Err(format!(
            "{what} exited at start ({status}); its port {} was taken",
            server.port
        )
        .into()),
        None => Ok(()),
    }
}

pub fn start_moto() -> Result<Moto, Box<dyn std::error::Error>> {
    start_moto_with(&[], "http")
}

/// moto over HTTPS with `cert` and `key` (PEM files).
pub fn start_moto_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Moto, Box<dyn std::error::Error>> {
    let (c, k) = (
        cert.to_str().ok_or("cert path")?,
        key.to_str().ok_or("key path")?,
    );
    start_moto_with(&["-c", c, "-k", k], "https")
}

fn start_moto_with(
    extra: &[&str],
    scheme: &'static str,
) -> Result<Moto, Box<dyn std::error::Error>> {
    let port = free_port()?;
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start moto_server (pip install 'moto[server]'): {e}"))?;
    let mut moto = Moto {
        child,
        port,
        scheme,
    };
    wait_listening(port, "moto_server")?;
    still_running(&mut moto, "moto_server")?;
    Ok(moto)
}

/// s3s-fs serving `root` (each bucket a directory), accepting only `access`/`secret`.
pub fn start_s3s_fs(
    root: &std::path::Path,
    access: &str,
    secret: &str,
) -> Result<Moto, Box<dyn std::error::Error>> {
    let port = free_port()?;
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", access, "--secret-key", secret])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked): {e}"
            )
        })?;
    let mut server = Moto {
        child,
        port,
        scheme: "http",
    };
    wait_listening(port, "s3s-fs")?;
    still_running(&mut server, "s3s-fs")?;
    Ok(server)
}

/// Create `bucket` on the server at `port` (unsigned: moto accepts any request).
///
/// A server that listens may not answer yet: moto, loaded on a busy machine, has closed the
/// first connection without a word (CI of 2026-11-24). An empty answer or a refused
/// connection is tried again for up to 30 s; any real answer other than 200 fails at once.
pub fn create_bucket(port: u16, bucket: &str) -> Result<(), Box<dyn std::error::Error>> {
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match http(port, &request) {
            Ok(resp) if resp.starts_with("HTTP/1.1 200") => return Ok(()),
            Ok(resp) if !resp.is_empty() => {
                return Err(format!("creating bucket {bucket} failed: {resp}").into());
            }
            Ok(_) => "an empty answer".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!("creating bucket {bucket} failed within 30 s: {last}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The environment a cairn process needs to reach the server: credentials by the standard
/// AWS variables, no instance-metadata lookups.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// cairn's options for `s3://bucket/prefix` on this server.
    pub fn repo_args(&self, bucket: &str, prefix: &str) -> Vec<String> {
        vec![
            "--repo".into(),
            format!("s3://{bucket}/{prefix}"),
            "--s3-endpoint".into(),
            self.endpoint(),
            "--s3-region".into(),
            "us-east-1".into(),
            "--s3-path-style".into(),
        ]
    }
}
