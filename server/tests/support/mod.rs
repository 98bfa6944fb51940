//! Helpers of the serving tests: start the real `inferscope serve` binary on a free loopback port,
//! find the models and foolbox's labelled photos (tests that need them skip with a message when they
//! are missing, as the rest of the suite does), build test inputs.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `models/` when the baseline is built, else `None` after saying so.
pub fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("INFERSCOPE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models"));
    if dir.join("resnet50-baseline.onnx").is_file() && dir.join("labels.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} has no baseline model (run `./x setup`)",
            dir.display()
        );
        None
    }
}

/// A models directory with only the baseline and the class names of `models` (links to them), so
/// that the other variants are "not built" there whatever `models` holds.
pub fn baseline_only_dir(models: &std::path::Path) -> PathBuf {
    // One folder per call: tests of one binary run in parallel threads and would race on the links.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "inferscope-serving-test-baseline-only-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating a models directory");
    for file in ["resnet50-baseline.onnx", "labels.json"] {
        let link = dir.join(file);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(models.join(file), &link).expect("linking a model file");
    }
    dir
}

/// A models directory without models (every variant "not built").
pub fn empty_models_dir() -> PathBuf {
    std::env::temp_dir().join("inferscope-serving-test-no-models")
}

/// One of foolbox's labelled photos: (path, bytes, class index from the file name
/// `imagenet_NN_CLASS.jpg`).
pub fn foolbox(name: &str) -> Option<(PathBuf, Vec<u8>, usize)> {
    let dir = std::env::var_os("INFERSCOPE_FOOLBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/inferscope/foolbox-images")
        });
    let path = dir.join(name);
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("SKIP: {} not found (run `./x setup`)", path.display());
        return None;
    };
    let class = name
        .trim_end_matches(".jpg")
        .rsplit('_')
        .next()
        .and_then(|c| c.parse().ok())
        .expect("foolbox names end in _CLASS.jpg");
    Some((path, bytes, class))
}

/// Photos the baseline classifies correctly (checked against foolbox's labels by the golden test).
pub const PHOTOS: [&str; 2] = ["imagenet_00_243.jpg", "imagenet_01_559.jpg"];

/// A POST to one of the page's server functions (`/api/variants`, …) as the page sends it: from the
/// server's own origin, with a form body.
pub fn page_request(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
) -> reqwest::RequestBuilder {
    client
        .post(server.url(path))
        .header("Origin", server.base.clone())
        .header("Content-Type", "application/x-www-form-urlencoded")
}

/// A running `inferscope serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the binary on `127.0.0.1:0` with `args` (after `serve`) and extra environment; waits
    /// until it listens (at most 60 s).
    pub fn start(models: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferscope"));
        cmd.current_dir(workspace_root())
            .arg("serve")
            .args(["--addr", "127.0.0.1:0", "--models-dir"])
            .arg(models)
            .args(["--threads", "2"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("AIP_HTTP_PORT")
            .env_remove("INFERSCOPE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting inferscope serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("listening on http://") {
                        let _ =
                            tx.send(line[i + "listening on http://".len()..].trim().to_string());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("inferscope serve did not start:\n{}", log.lock().unwrap());
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("host:port");
        Server {
            child,
            base: format!("http://{addr}"),
            port,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/<pid>/status` in bytes (`VmRSS`: resident now, `VmHWM`: peak resident).
    pub fn proc_status_bytes(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"));
        kb * 1024
    }

    /// Resets the peak resident size (`VmHWM`) to the current one (`/proc/<pid>/clear_refs`, "5").
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("writing /proc/<pid>/clear_refs");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to end.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "the server did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gRPC port the server logged.
pub fn grpc_port(server: &Server) -> u16 {
    let start = Instant::now();
    loop {
        let log = server.log();
        if let Some(i) = log.find("gRPC listening on ") {
            let rest = &log[i + "gRPC listening on ".len()..];
            let addr = rest.lines().next().unwrap().trim();
            return addr.rsplit(':').next().unwrap().parse().expect("a port");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no gRPC address in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A KServe v2 binary request body for FP32 `tensor` of `images` images: (body, JSON header length).
pub fn kserve_binary(tensor: &[f32], images: usize, binary_out: bool) -> (Vec<u8>, usize) {
    let head = serde_json::json!({
        "inputs": [{"name": "input", "shape": [images, 3, 224, 224], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len() * 4}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": binary_out}}],
    });
    let mut body = serde_json::to_vec(&head).unwrap();
    let n = body.len();
    body.extend(tensor.iter().flat_map(|v| v.to_le_bytes()));
    (body, n)
}

/// The logits of a JSON (non-binary) KServe v2 answer.
pub fn json_logits(v: &serde_json::Value) -> Vec<f32> {
    v["outputs"][0]["data"]
        .as_array()
        .expect("outputs[0].data")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    engine::classify::argmax(row)
}

/// A real 40000×40000 PNG (1-bit grayscale, all black): ~200 KB on disk, 1.6 G pixels once decoded.
pub fn png_bomb() -> Vec<u8> {
    use std::io::Write;
    let (w, h) = (40_000u32, 40_000u32);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // bit depth 1, grayscale, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    let row = vec![0u8; 1 + (w as usize).div_ceil(8)]; // filter byte + packed pixels
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
