//! A real S3-compatible server for tests: moto, started on a free 127.0.0.1 port and killed
//! when dropped (`pip install 'moto[server]'`; `.ci/run` installs it).
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

pub fn start_moto() -> Result<Moto, Box<dyn std::error::Error>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start moto_server (pip install 'moto[server]'): {e}"))?;
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("moto_server did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(moto)
}

pub fn create_bucket(port: u16, bucket: &str) -> Result<(), Box<dyn std::error::Error>> {
    let resp = http(
        port,
        &format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )?;
    if !resp.starts_with("HTTP/1.1 200") {
        return Err(format!("creating bucket {bucket} failed: {resp}").into());
    }
    Ok(())
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
    /// cairn's options for `s3://bucket/prefix` on this server.
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
