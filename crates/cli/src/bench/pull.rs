//! `vouch bench pull`: how fast a model comes from a peer over loopback, against what
//! loopback itself carries.
//!
//! A node (`vouch up --no-provider`, a child process) serves this home's SmolLM2 weights.
//! Measured, best of `--runs` each:
//! - the loopback limit: one TCP connection pumping 256 KiB buffers, nothing else;
//! - a plain HTTP download of the file from the node, bytes discarded, and the same
//!   written to a file and synced (what any unverified download costs);
//! - `model pull` into an empty home: manifest, outboard, every group checked, written,
//!   synced and renamed into place, for each worker count.

use anyhow::{Context, Result};
use clap::Args;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use vouch_inference::models;
use vouch_net::blob_store::BlobStore;
use vouch_net::pull::{self, PullOptions};

#[derive(Args, Debug)]
pub struct PullBenchArgs {
    /// Repetitions of each measurement (the best is reported, and the median).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Worker counts to measure `model pull` with (comma separated).
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    pub workers: Vec<usize>,
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| b.total_cmp(a));
    (v[0], v[v.len() / 2])
}

/// MB/s of one TCP connection on loopback carrying `bytes`.
fn tcp_loopback(bytes: u64) -> Result<f64> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        let buf = vec![7u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    let t = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    sender.join().expect("sender")?;
    Ok(got as f64 / secs / 1e6)
}

/// MB/s of a plain HTTP GET of `url`, discarded or written to `to` and synced.
fn http_get(url: &str, to: Option<&Path>) -> Result<f64> {
    let t = Instant::now();
    let mut r = ureq::get(url).call()?;
    let mut body = r.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = match to {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut got = 0u64;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(f) = out.as_mut() {
            f.write_all(&buf[..n])?;
        }
        got += n as u64;
    }
    if let Some(f) = out {
        f.sync_all()?;
    }
    Ok(got as f64 / t.elapsed().as_secs_f64() / 1e6)
}

pub fn run(home: &Path, a: PullBenchArgs) -> Result<()> {
    let spec = &models::SMOLLM2_135M;
    models::fetch(spec, home, &mut |_| {})?;
    let runs = a.runs.max(1);
    let dir = tempfile::tempdir()?;
    let serve = dir.path().join("serve");
    std::fs::create_dir_all(&serve)?;
    std::os::unix::fs::symlink(home.join("models"), serve.join("models"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--home", serve.to_str().context("temp path")?])
        .args(["up", "--no-provider", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the serving node")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("node stdout")?).read_line(&mut line)?;
    let _node = Child(child);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("node did not start: {line:?}"))?;
    let url = format!("http://{addr}");
    let id = spec.id();
    let bytes = spec.files[0].bytes;
    let blob = format!("{url}/v1/p2p/blobs/{}", spec.files[0].blake3);
    println!(
        "model pull over loopback: {} ({:.1} MB), best (median) of {runs}",
        spec.name,
        bytes as f64 / 1e6
    );
    // Warm the node's page cache and outboard.
    http_get(&blob, None)?;
    http_get(&format!("{blob}/outboard"), None)?;

    let tcp = stats(
        (0..runs)
            .map(|_| tcp_loopback(bytes))
            .collect::<Result<_>>()?,
    );
    println!(
        "  loopback TCP, one connection     {:>8.0} MB/s ({:.0})",
        tcp.0, tcp.1
    );
    let get = stats(
        (0..runs)
            .map(|_| http_get(&blob, None))
            .collect::<Result<_>>()?,
    );
    println!(
        "  HTTP GET, discarded              {:>8.0} MB/s ({:.0})",
        get.0, get.1
    );
    let disk_file = dir.path().join("plain.bin");
    let get_disk = stats(
        (0..runs)
            .map(|_| http_get(&blob, Some(&disk_file)))
            .collect::<Result<_>>()?,
    );
    let _ = std::fs::remove_file(&disk_file);
    println!(
        "  HTTP GET, to disk + sync         {:>8.0} MB/s ({:.0})",
        get_disk.0, get_disk.1
    );
    for &w in &a.workers {
        let mut rates = Vec::new();
        for r in 0..runs {
            let dest = dir.path().join(format!("pull-{w}-{r}"));
            let store = BlobStore::new(&dest);
            let rep = pull::pull(
                &store,
                &id,
                std::slice::from_ref(&url),
                &PullOptions {
                    workers: w,
                    max_rate: None,
                },
                &mut |_| {},
            )?;
            anyhow::ensure!(rep.fetched == bytes, "pull fetched {} bytes", rep.fetched);
            rates.push(bytes as f64 / rep.secs / 1e6);
            std::fs::remove_dir_all(&dest)?;
        }
        let (best, med) = stats(rates);
        println!(
            "  model pull, {w} worker{}          {:>8.0} MB/s ({med:.0})  = {:.0}% of loopback TCP, {:.0}% of plain GET to disk",
            if w == 1 { " " } else { "s" },
            best,
            100.0 * best / tcp.0,
            100.0 * best / get_disk.0
        );
    }
    Ok(())
}
