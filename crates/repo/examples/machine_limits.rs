//! The machine's own limits on a directory's data, for `bench/pg_vs_pgbackrest.sh`: how fast
//! it can read every file but pg_wal's (1 MiB reads, the second of two passes), compress it with zstd
//! level 3 on every core, and hash it with BLAKE3 on every core. Each figure is the time one
//! pass over the whole data takes, so a backup's time can be set beside the work it cannot
//! avoid.
//!
//! cargo run --release -p cairn-repo --example machine_limits -- DIR [THREADS]

use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            // What a backup copies: pg_wal is not part of it.
            if e.file_name() != "pg_wal" {
                files(&e.path(), out);
            }
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Every file in 1 MiB pieces (the pieces a pass works on).
fn pieces(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in paths {
        let Ok(mut f) = std::fs::File::open(p) else {
            continue;
        };
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < buf.len() {
                match f.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(_) => break,
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            out.push(buf);
        }
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: machine_limits DIR [THREADS]")?;
    let threads: usize = match args.get(2) {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let mut paths = Vec::new();
    files(Path::new(dir), &mut paths);
    // Read twice, the second pass timed: a backup of a live cluster reads what the page
    // cache mostly holds, as this second pass does.
    drop(pieces(&paths));
    let t = Instant::now();
    let data = pieces(&paths);
    let read = t.elapsed().as_secs_f64();
    let bytes: usize = data.iter().map(Vec::len).sum();
    let t = Instant::now();
    let compressed: usize = data
        .par_iter()
        .map(|p| zstd::bulk::compress(p, 3).map_or(0, |c| c.len()))
        .sum();
    let zstd = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let hashed = data
        .par_iter()
        .map(|p| blake3::hash(p).as_bytes()[0] as usize)
        .sum::<usize>();
    let hash = t.elapsed().as_secs_f64();
    println!(
        "bytes {bytes} read_s {read:.3} zstd3_s {zstd:.3} zstd3_bytes {compressed} blake3_s {hash:.3} threads {threads} (checksum {hashed})"
    );
    Ok(())
}
