//! `resnet weights fetch` and `--weights hub:ARCH` against a local server that imitates the
//! Hugging Face hub's `resolve` layout (range requests, `ETag`, `X-Repo-Commit`): no test needs
//! the internet.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::Device;
use serde_json::Value;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What the fake hub serves at one repository's `model.safetensors`.
#[derive(Clone)]
enum Serve {
    File(Arc<Vec<u8>>),
    /// Says the file is this large, then sends nothing of it.
    Claims(u64),
}

struct FakeHub {
    url: String,
    requests: Arc<AtomicUsize>,
}

/// A hub on 127.0.0.1 serving `files` (repo → content); any other path is a 404.
fn fake_hub(files: Vec<(&'static str, Serve)>) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (files, counter) = (files.clone(), counter.clone());
            std::thread::spawn(move || serve(stream, &files, &counter));
        }
    });
    FakeHub { url, requests }
}

/// Answers the requests of one connection (keep-alive) until the client closes it.
fn serve(stream: TcpStream, files: &[(&'static str, Serve)], counter: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                let (a, b) = v.trim().split_once('-').unwrap_or((v.trim(), ""));
                range = Some((a.parse::<u64>().unwrap_or(0), b.parse::<u64>().ok()));
            }
        }
        counter.fetch_add(1, Ordering::SeqCst);
        let found = files.iter().find(|(repo, _)| path == format!("/{repo}/resolve/main/model.safetensors"));
        let Some((_, content)) = found else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let total = match content {
            Serve::File(b) => b.len() as u64,
            Serve::Claims(n) => *n,
        };
        let (start, end) = match range {
            Some((a, b)) => (a, b.unwrap_or(total - 1).min(total - 1)),
            None => (0, total - 1),
        };
        let body: &[u8] = match content {
            Serve::File(b) => &b[start as usize..=end as usize],
            Serve::Claims(_) => &[],
        };
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{total}\r\n\
             ETag: \"e7a9f1b2c3d4\"\r\nX-Repo-Commit: {COMMIT}\r\nAccept-Ranges: bytes\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).and_then(|_| out.write_all(body)).is_err() {
            return;
        }
        if matches!(content, Serve::Claims(_)) {
            return;
        }
    }
}

/// ResNet-18 with deterministic random weights, as safetensors: what the hub's file holds
/// (torchvision's names and shapes).
fn resnet18_file() -> Arc<Vec<u8>> {
    let graph = resnet_core::find_arch("resnet18").unwrap().graph();
    let w = resnet_core::Weights::random(&graph, 18, &Device::Cpu).unwrap();
    Arc::new(w.to_safetensors(None).unwrap())
}

fn resnet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet"));
    c.args(args).env_remove("HF_ENDPOINT").env_remove("HF_HOME");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

fn json_ok(args: &[&str], env: &[(&str, &str)]) -> Value {
    let o = resnet(args, env);
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

fn error_of(args: &[&str]) -> String {
    let o = resnet(args, &[]);
    assert!(!o.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    err
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sample() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www/samples/cat-0.jpg").display().to_string()
}

#[test]
fn fetch_downloads_once_into_the_cache_and_hub_weights_load_by_name() {
    let file = resnet18_file();
    let hub = fake_hub(vec![("timm/resnet18.tv_in1k", Serve::File(file.clone()))]);
    let cache = temp_dir("cache");
    let cache_s = cache.display().to_string();
    let fetch = ["weights", "fetch", "resnet18", "--hub", &hub.url, "--cache-dir", &cache_s, "--json"];

    let first = json_ok(&fetch, &[]);
    assert_eq!(first["arch"], "resnet18");
    assert_eq!(first["repo"], "timm/resnet18.tv_in1k");
    assert_eq!(first["cached"], false);
    assert_eq!(first["bytes"].as_u64(), Some(file.len() as u64));
    let path = PathBuf::from(first["path"].as_str().unwrap());
    assert!(path.starts_with(&cache), "{path:?} is in the cache folder");
    assert_eq!(std::fs::read(&path).unwrap(), *file, "the file as the hub served it");
    let asked = hub.requests.load(Ordering::SeqCst);
    assert!(asked >= 2, "metadata, then the download: {asked} requests");

    // Fetched again: from the cache, without asking the hub.
    let second = json_ok(&fetch, &[]);
    assert_eq!(second["cached"], true);
    assert_eq!(second["path"], first["path"]);
    assert_eq!(hub.requests.load(Ordering::SeqCst), asked, "no request for a cached file");

    let list = json_ok(&["weights", "list", "--cache-dir", &cache_s, "--json"], &[]);
    let row = list.as_array().unwrap().iter().find(|r| r["arch"] == "resnet18").unwrap();
    assert_eq!(row["cached"], first["path"]);

    // `--weights hub:ARCH` uses the hub's own environment variables (HF_HOME: its cache is
    // HF_HOME/hub) and gives what the file itself gives.
    let home = temp_dir("home");
    let env = [("HF_HOME", home.to_str().unwrap()), ("HF_ENDPOINT", hub.url.as_str())];
    let by_name = json_ok(&["predict", "--weights", "hub:resnet18", "--json", &sample()], &env);
    let by_path = json_ok(&["predict", "--weights", path.to_str().unwrap(), "--json", &sample()], &[]);
    assert_eq!(by_name["arch"], "resnet18");
    assert_eq!(by_name["results"][0]["logits"], by_path["results"][0]["logits"]);
    assert!(home.join("hub/models--timm--resnet18.tv_in1k").is_dir(), "fetched into HF_HOME/hub");
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn what_the_hub_cannot_give_is_one_clear_error() {
    let mut not_weights = b"this is not a safetensors file".to_vec();
    not_weights.resize(4096, b' ');
    let hub = fake_hub(vec![
        ("timm/resnet50.tv_in1k", Serve::File(Arc::new(not_weights))),
        ("timm/resnet101.tv_in1k", Serve::Claims(50 << 30)),
    ]);
    let cache = temp_dir("errors");
    let cache_s = cache.display().to_string();
    let fetch = |arch: &str, hub_url: &str| {
        error_of(&["weights", "fetch", arch, "--hub", hub_url, "--cache-dir", &cache_s])
    };

    let e = fetch("vgg16", &hub.url);
    assert!(e.contains("no hub weights for 'vgg16'") && e.contains("resnet50"), "{e}");
    let e = fetch("resnet34", &hub.url);
    assert!(
        e.contains("cannot fetch")
            && e.contains("/timm/resnet34.tv_in1k/resolve/main/model.safetensors")
            && e.contains("404"),
        "{e}"
    );
    let e = fetch("resnet50", &hub.url);
    assert!(e.contains("does not fit resnet50"), "{e}");
    let e = fetch("resnet101", &hub.url);
    assert!(e.contains("far more than resnet101's weights"), "{e}");
    let e = fetch("resnet18", "ftp://example.org");
    assert!(e.contains("must start with https:// or http://"), "{e}");

    // Nobody listening: an error, not a hang.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = fetch("resnet18", &url);
    assert!(e.contains("cannot fetch"), "{e}");

    let e = error_of(&["predict", "--weights", "hub:alexnet", &sample()]);
    assert!(e.contains("no hub weights for 'alexnet'"), "{e}");
    let _ = std::fs::remove_dir_all(&cache);
}
