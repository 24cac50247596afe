//! S3 under faults, with real servers on 127.0.0.1: a connection cut in the middle of a backup
//! (a loopback proxy that dies), a link that stops answering (a proxy that freezes),
//! throttling and server errors injected by the proxy, a wrong secret key (s3s-fs checks
//! signatures), and TLS to an endpoint whose certificate is signed by a private CA.

mod common;

use common::proxy::{Fault, Proxy, Trip};
use common::s3::{Moto, aws_env, create_bucket, start_moto, start_moto_tls, start_s3s_fs};
use common::{bytes, tree_diff};
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Run cairn with `repo` (its S3 options) and `args`; any exit status.
fn run(repo: &[String], env: &[(&str, &str)], args: &[&str]) -> Res<Output> {
    run_logging(repo, env, "warn", args)
}

fn run_logging(repo: &[String], env: &[(&str, &str)], level: &str, args: &[&str]) -> Res<Output> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    Ok(c.envs(env.iter().copied())
        .args(repo)
        .args(["--stanza", "main", "--log-level", level])
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

fn ok(repo: &[String], args: &[&str]) -> Res<Output> {
    ok_with(repo, &aws_env(), args)
}

/// `run` that must succeed.
fn ok_with(repo: &[String], env: &[(&str, &str)], args: &[&str]) -> Res<Output> {
    let out = run(repo, env, args)?;
    if !out.status.success() {
        return Err(format!(
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

fn labels(repo: &[String]) -> Res<Vec<String>> {
    let info: serde_json::Value =
        serde_json::from_slice(&ok(repo, &["info", "--output", "json"])?.stdout)?;
    Ok(common::backup_labels(&info))
}

/// A tree of incompressible files, `mib` MiB in all, so a backup uploads several packs.
fn big_tree(root: &Path, seed: u64, mib: usize) -> Res<()> {
    fs::create_dir_all(root)?;
    for i in 0..mib / 4 {
        fs::write(
            root.join(format!("part-{i:03}")),
            bytes(seed + i as u64, 4 << 20),
        )?;
    }
    fs::write(root.join("small"), b"a small file")?;
    Ok(())
}

fn backup_through(
    proxy: &Proxy,
    src: &Path,
    kind: &str,
    trip_after: u64,
    how: Trip,
) -> Res<(Output, Duration)> {
    proxy.trip_after(trip_after, how);
    let started = Instant::now();
    let out = run(
        &proxy.repo_args("cut", "repo"),
        &aws_env(),
        &[
            "--io-timeout",
            "2",
            "backup",
            "--type",
            kind,
            "--source",
            src.to_str().ok_or("path")?,
        ],
    )?;
    Ok((out, started.elapsed()))
}

#[test]
fn a_cut_or_frozen_connection_fails_the_backup_and_leaves_a_good_repository() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "cut")?;
    let direct = moto.repo_args("cut", "repo");
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    big_tree(&src, 1, 96)?;
    ok(&direct, &["stanza-create", "--engine", "files"])?;

    // The link dies after 40 MB of a ~96 MiB backup: exit non-zero, promptly, and say why.
    let proxy = Proxy::start(moto.port)?;
    let (out, took) = backup_through(&proxy, &src, "full", 40_000_000, Trip::Die)?;
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("cut link: failed after {took:?}: {err}");
    assert!(proxy.tripped(), "the proxy never cut the connection");
    assert!(!out.status.success(), "a backup over a cut link succeeded");
    assert!(took < Duration::from_secs(60), "took {took:?} to give up");
    assert!(
        err.contains("S3 endpoint") || err.contains("cut"),
        "the error does not say the store was unreachable: {err}"
    );
    assert_eq!(
        labels(&direct)?,
        Vec::<String>::new(),
        "a half backup is listed"
    );
    ok(&direct, &["verify"])?;

    // The next backup succeeds and restores byte for byte.
    let s = src.to_str().ok_or("path")?;
    ok(&direct, &["backup", "--type", "full", "--source", s])?;
    assert_eq!(labels(&direct)?.len(), 1);

    // The link freezes during an incremental backup (connections open, nothing answered):
    // timeouts, not a hang.
    let mtime = |p: &Path| -> Res<(i64, i64)> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p)?;
        Ok((m.mtime(), m.mtime_nsec()))
    };
    let (root_t, part_t) = (mtime(&src)?, mtime(&src.join("part-000"))?);
    fs::write(src.join("part-000"), bytes(99, 4 << 20))?;
    fs::write(src.join("new-file"), bytes(98, 30 << 20))?;
    let frozen = Proxy::start(moto.port)?;
    let (out, took) = backup_through(&frozen, &src, "incr", 20_000_000, Trip::Freeze)?;
    eprintln!(
        "frozen link: failed after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(frozen.tripped(), "the proxy never froze");
    assert!(
        !out.status.success(),
        "a backup over a frozen link succeeded"
    );
    assert!(took < Duration::from_secs(90), "took {took:?} to give up");
    drop(frozen);
    assert_eq!(labels(&direct)?.len(), 1, "a half incremental is listed");
    ok(&direct, &["verify"])?;

    let out_dir = dir.path().join("restored");
    fs::remove_file(src.join("new-file"))?;
    fs::write(src.join("part-000"), bytes(1, 4 << 20))?;
    common::set_mtime(&src.join("part-000"), part_t.0, part_t.1);
    common::set_mtime(&src, root_t.0, root_t.1);
    ok(
        &direct,
        &[
            "--process-max",
            "4",
            "restore",
            "--dest",
            out_dir.to_str().ok_or("path")?,
        ],
    )?;
    assert_eq!(tree_diff(&src, &out_dir), Vec::<String>::new());
    Ok(())
}

#[test]
fn throttling_and_server_errors_are_retried_until_they_pass() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "flaky")?;
    let proxy = Proxy::start(moto.port)?;
    let repo = proxy.repo_args("flaky", "repo");
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    common::make_tree(&src, 5)?;
    let faults = [
        Fault::SlowDown,
        Fault::Internal,
        Fault::TooMany,
        Fault::SlowDown,
        Fault::Internal,
    ];
    proxy.inject(&faults);
    ok(&repo, &["stanza-create", "--engine", "files"])?;
    let s = src.to_str().ok_or("path")?;
    proxy.inject(&faults);
    // Also in the middle of the work, on connections already in use: pack uploads and the
    // manifest of the backup, pack range reads of the restore.
    proxy.inject_on(&["PUT ", "/pack/"], &[Fault::SlowDown, Fault::Internal]);
    proxy.inject_on(&["PUT ", "/manifest"], &[Fault::TooMany]);
    ok(&repo, &["backup", "--type", "full", "--source", s])?;
    let out_dir = dir.path().join("restored");
    proxy.inject(&faults);
    proxy.inject_on(&["GET ", "/pack/"], &[Fault::Internal, Fault::SlowDown]);
    ok(
        &repo,
        &["restore", "--dest", out_dir.to_str().ok_or("path")?],
    )?;
    assert_eq!(
        proxy.injected(),
        20,
        "every injected failure was met and retried"
    );
    assert_eq!(tree_diff(&src, &out_dir), Vec::<String>::new());
    ok(&repo, &["verify"])?;
    Ok(())
}

/// A store that refuses `If-None-Match` (501, as S3-compatible stores without conditional
/// writes answer): each process meets the refusal once, on its first create-only put, sends
/// that put again without the header and relies on HEAD from then on.
#[test]
fn a_store_without_conditional_writes_is_used_without_them() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "plain")?;
    let proxy = Proxy::start(moto.port)?;
    proxy.refuse_conditional_writes();
    let repo = proxy.repo_args("plain", "repo");
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    common::make_tree(&src, 5)?;
    let s = src.to_str().ok_or("path")?;
    ok(&repo, &["stanza-create", "--engine", "files"])?;
    let out = ok(&repo, &["backup", "--type", "full", "--source", s])?;
    // The lock is only as good as the store's create-only writes: the operator is told.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot keep two hosts apart"), "{err}");
    fs::write(src.join("changed"), b"new file for the incremental")?;
    ok(&repo, &["backup", "--type", "incr", "--source", s])?;
    assert_eq!(
        proxy.refused(),
        3,
        "one refused conditional put per process (stanza-create, backup, backup), then none"
    );
    assert_eq!(labels(&repo)?.len(), 2);
    let out_dir = dir.path().join("restored");
    ok(
        &repo,
        &["restore", "--dest", out_dir.to_str().ok_or("path")?],
    )?;
    assert_eq!(tree_diff(&src, &out_dir), Vec::<String>::new());
    ok(&repo, &["verify"])?;
    Ok(())
}

#[test]
fn a_wrong_secret_key_fails_at_once_and_says_what_to_fix() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("s3");
    fs::create_dir_all(root.join("keys"))?;
    let server = start_s3s_fs(&root, "cairn-access", "cairn-right-secret")?;
    let repo = server.repo_args("keys", "repo");
    let creds = |secret: &'static str| {
        vec![
            ("AWS_ACCESS_KEY_ID", "cairn-access"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    };
    ok_with(
        &repo,
        &creds("cairn-right-secret"),
        &["stanza-create", "--engine", "stream"],
    )?;

    let started = Instant::now();
    let bad = run(&repo, &creds("cairn-wrong-secret"), &["info"])?;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(3), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    assert!(
        err.contains("access denied") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    Ok(())
}

/// Credentials from the standard chain's shared files: a named profile (`AWS_PROFILE`) with
/// the right secret works, one with a wrong secret fails with exit 3, against a server that
/// checks signatures.
#[test]
fn credentials_come_from_a_named_profile_in_the_shared_files() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("s3");
    fs::create_dir_all(root.join("profiles"))?;
    let server = start_s3s_fs(&root, "cairn-profile-key", "cairn-profile-secret")?;
    let repo = server.repo_args("profiles", "repo");
    let credentials = dir.path().join("credentials");
    fs::write(
        &credentials,
        "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n\
         [backup]\naws_access_key_id = cairn-profile-key\naws_secret_access_key = cairn-profile-secret\n\n\
         [stale]\naws_access_key_id = cairn-profile-key\naws_secret_access_key = rotated-away\n",
    )?;
    let config = dir.path().join("config");
    fs::write(&config, "[default]\nregion = us-east-1\n")?;
    let files = [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.to_str().ok_or("path")?,
        ),
        ("AWS_CONFIG_FILE", config.to_str().ok_or("path")?),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let with_profile = |p: &'static str| {
        let mut env = files.to_vec();
        env.push(("AWS_PROFILE", p));
        env
    };
    ok_with(
        &repo,
        &with_profile("backup"),
        &["stanza-create", "--engine", "stream"],
    )?;
    ok_with(&repo, &with_profile("backup"), &["info"])?;
    for wrong in ["stale", "default"] {
        let bad = run(&repo, &with_profile(wrong), &["info"])?;
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(3), "profile {wrong}: {err}");
    }
    Ok(())
}

/// Web identity (EKS and other OIDC setups): with only a token file and a role in the
/// environment, the chain exchanges the token at STS (moto's, on 127.0.0.1) for credentials.
#[test]
fn credentials_come_from_web_identity() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "oidc")?;
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYWlybiJ9.c2lnbmF0dXJl",
    )?;
    let sts = format!("http://127.0.0.1:{}", moto.port);
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().ok_or("path")?),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/cairn-backup",
        ),
        ("AWS_ROLE_SESSION_NAME", "cairn-test"),
        ("AWS_ENDPOINT_URL_STS", sts.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let repo = moto.repo_args("oidc", "repo");
    ok_with(&repo, &env, &["stanza-create", "--engine", "stream"])?;
    // With no credentials anywhere the command fails at once (no retry can find them) and
    // says where credentials can come from.
    let started = Instant::now();
    let none = run(&repo, &[("AWS_EC2_METADATA_DISABLED", "true")], &["info"])?;
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(3), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "retried: {err}"
    );
    assert!(
        err.contains("no usable S3 credentials") && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> Res<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// A private CA and a certificate it signs for 127.0.0.1.
fn private_ca(dir: &Path) -> Res<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cairn test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    )
}

fn create_bucket_tls(moto: &Moto, bucket: &str, ca: &Path) -> Res<()> {
    let out = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "--cacert"])
        .arg(ca)
        .arg(format!("{}/{bucket}", moto.endpoint()))
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "creating bucket {bucket}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

#[test]
fn tls_endpoints_with_a_private_ca_need_and_accept_the_ca_file() -> Res<()> {
    let dir = tempfile::tempdir()?;
    private_ca(dir.path())?;
    let moto = start_moto_tls(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    )?;
    let ca = dir.path().join("ca.pem");
    create_bucket_tls(&moto, "tls", &ca)?;
    let repo = moto.repo_args("tls", "repo");

    // Without the CA the certificate is not trusted: a prompt, permanent error that names
    // the option to use.
    let started = Instant::now();
    let out = run(&repo, &aws_env(), &["stanza-create", "--engine", "stream"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
    assert!(err.contains("--s3-ca-file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");

    // With it, everything works.
    let mut with_ca = repo.clone();
    with_ca.extend(["--s3-ca-file".to_string(), ca.display().to_string()]);
    ok(&with_ca, &["stanza-create", "--engine", "stream"])?;
    let dump = common::text(3, 3_000_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .envs(aws_env())
        .args(&with_ca)
        .args(["--stanza", "main", "--log-level", "warn", "backup"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().ok_or("stdin")?, &dump)?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = ok(&with_ca, &["restore", "--dest", "-"])?;
    assert!(restored.stdout == dump, "stream restored over TLS differs");

    // A file that is not a certificate is refused by name before any request.
    let junk = dir.path().join("junk.pem");
    fs::write(&junk, "hello")?;
    let mut bad = repo.clone();
    bad.extend(["--s3-ca-file".to_string(), junk.display().to_string()]);
    let out = run(&bad, &aws_env(), &["info"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("junk.pem") && err.contains("no certificate"),
        "{err}"
    );
    Ok(())
}

#[test]
fn item14_once_one_request_gives_up_the_whole_backup_stops() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "cut")?;
    let direct = moto.repo_args("cut", "repo");
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    big_tree(&src, 7, 96)?;
    ok(&direct, &["stanza-create", "--engine", "files"])?;
    let proxy = Proxy::start(moto.port)?;
    proxy.trip_after(20_000_000, Trip::Die);
    let started = Instant::now();
    let out = run_logging(
        &proxy.repo_args("cut", "repo"),
        &aws_env(),
        "debug",
        &[
            "--process-max",
            "4",
            "--io-timeout",
            "2",
            "backup",
            "--type",
            "full",
            "--source",
            src.to_str().ok_or("path")?,
        ],
    )?;
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(proxy.tripped(), "the proxy never cut the connection");
    assert!(!out.status.success(), "a backup over a cut link succeeded");
    // Before: every object spent its own retry budget in turn, so retries went on after the
    // first request had given up. Now nothing is retried after that.
    let lines: Vec<&str> = err.lines().collect();
    let first_give_up = lines
        .iter()
        .position(|l| l.contains("gave up:"))
        .ok_or_else(|| format!("no request gave up: {err}"))?;
    let later_retries = lines[first_give_up..]
        .iter()
        .filter(|l| l.contains("retrying in"))
        .count();
    assert_eq!(later_retries, 0, "requests kept retrying after one gave up");
    // The release of the stanza lock used to start a retry budget of its own.
    let lock_retries = lines
        .iter()
        .filter(|l| l.contains("/lock") && l.contains("retrying in"))
        .count();
    assert_eq!(
        lock_retries, 0,
        "the lock release spent its own retry budget"
    );
    // Budget 2 x 2 s, one attempt of at most 5 x 2 s, and slack for a loaded machine.
    assert!(took < Duration::from_secs(40), "took {took:?} to give up");
    assert_eq!(labels(&direct)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn item14_an_empty_access_key_fails_at_once() -> Res<()> {
    let moto = start_moto()?;
    create_bucket(moto.port, "empty-key")?;
    let repo = moto.repo_args("empty-key", "repo");
    let started = Instant::now();
    let out = run(
        &repo,
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "x")],
        &["info"],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID is set but empty"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "retried: {err}"
    );
    Ok(())
}
