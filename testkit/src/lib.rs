//! What pgops' tests share, core and end-to-end alike: the `s3s-fs` server process (the
//! real S3 server every S3 test talks to over HTTP, which a test can stop, restart and
//! freeze) and the fault-injecting HTTP proxy put in front of it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `ready` until it holds, or panics after `timeout` saying what was awaited.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An `s3s-fs` process serving the buckets under `root` (each directory a bucket) on a
/// loopback port, its output in `<root>.log`; killed on drop.
pub struct S3sFs {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    access_key: String,
    secret_key: String,
}

impl S3sFs {
    /// Starts the server with one empty bucket `bucket` in `<dir>/s3`.
    pub fn start(dir: &Path, bucket: &str, access_key: &str, secret_key: &str) -> S3sFs {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut server = S3sFs {
            child: None,
            port: free_port(),
            root,
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
        };
        server.resume();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the process (the data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and data.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.root.with_extension("log")).unwrap();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(&self.root)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("s3s-fs is not on PATH; run .ci/install");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("s3s-fs to listen", Duration::from_secs(20), || {
            // Another process may have taken the port between choosing and binding it.
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().unwrap()) {
                panic!("s3s-fs on port {} exited with {status} before listening", self.port);
            }
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    /// Freezes the server process (SIGSTOP): connections are still accepted by the kernel
    /// and never answered, as with a hung store.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is running");
        // SAFETY: kill(2) on the pid of a child this kit started and has not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        // A frozen process is killed too (SIGKILL needs no thaw).
        self.stop();
    }
}

/// What [`FaultProxy`] does to the requests it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward every request.
    Nothing,
    /// Of every `period` requests, fail the first `burst` in a row (more than the SDK's
    /// three attempts when `burst` > 3): a 503 SlowDown, a 500, and a connection closed
    /// without an answer, in turn.
    Flaky { period: u32, burst: u32 },
    /// Close every connection without an answer: the store is down.
    Down,
    /// Answer 500 InternalError to the requests whose request line starts with `matching`
    /// (`"PUT /backups/main/wals/"`: archiving fails), and forward the others.
    Refuse { matching: &'static str },
    /// Answer 404 NoSuchKey to every request (HEAD, GET) whose target starts with
    /// `matching` (`"/backups/main/wals/…"`), and forward the others: an object the
    /// listing shows that reads as missing (an eventually consistent store, or one deleted
    /// between the listing and the read).
    Missing { matching: &'static str },
}

/// An HTTP proxy in front of the S3 server that injects faults, request by request (it
/// asks the server to close each connection, so that every request comes on a new one),
/// and records the head of every request.
pub struct FaultProxy {
    pub port: u16,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicU32>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU32>,
    heads: RequestHeads,
}

/// The heads (request line and headers) of the requests a [`FaultProxy`] received.
type RequestHeads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        use std::sync::atomic::AtomicU32;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = FaultProxy {
            port: listener.local_addr().unwrap().port(),
            fault: Arc::new(Mutex::new(Fault::Nothing)),
            requests: Arc::new(AtomicU32::new(0)),
            failed: Arc::new(AtomicU32::new(0)),
            heads: RequestHeads::default(),
        };
        let (fault, requests, failed) = (proxy.fault.clone(), proxy.requests.clone(), proxy.failed.clone());
        let heads = proxy.heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (fault, requests, failed) = (*fault.lock().unwrap(), requests.clone(), failed.clone());
                let heads = heads.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, upstream_port, fault, &requests, &failed, &heads);
                });
            }
        });
        proxy
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// The heads of the requests received so far, in order of arrival.
    pub fn request_heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// How many requests were failed on purpose so far.
    pub fn failed(&self) -> u32 {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Passes one request from `client` to the server, or fails it as `fault` says.
fn relay(
    mut client: std::net::TcpStream,
    upstream_port: u16,
    fault: Fault,
    requests: &std::sync::atomic::AtomicU32,
    failed: &std::sync::atomic::AtomicU32,
    heads: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some(head) = read_head(&mut client)? else { return Ok(()) };
    heads.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
    let number = requests.fetch_add(1, Ordering::SeqCst);
    let matches = |prefix: &str| head.starts_with(prefix.as_bytes());
    let text = String::from_utf8_lossy(&head);
    let mut request_line = text.split_whitespace();
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let injected = match fault {
        Fault::Nothing => None,
        Fault::Down => Some(2),
        Fault::Flaky { period, burst } => (number % period < burst).then_some(number % 3),
        Fault::Refuse { matching } => matches(matching).then_some(1),
        Fault::Missing { matching } => target.starts_with(matching).then_some(3),
    };
    match injected {
        Some(kind) => {
            failed.fetch_add(1, Ordering::SeqCst);
            let error = |status: &str, code: &str| {
                let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>");
                // An answer to HEAD has the headers of one to GET, and no body.
                let sent = if method == "HEAD" { "" } else { body.as_str() };
                format!("HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sent}", body.len())
            };
            match kind {
                0 => client.write_all(error("503 Slow Down", "SlowDown").as_bytes())?,
                1 => client.write_all(error("500 Internal Server Error", "InternalError").as_bytes())?,
                3 => client.write_all(error("404 Not Found", "NoSuchKey").as_bytes())?,
                _ => {}
            }
            Ok(())
        }
        None => {
            // Both sides are told the connection ends with this exchange, so that the
            // client's next request comes on a new connection, and gets its own fate.
            let mut upstream = std::net::TcpStream::connect(("127.0.0.1", upstream_port))?;
            upstream.write_all(&closing(&head))?;
            let (mut from_client, mut to_upstream) = (client.try_clone()?, upstream.try_clone()?);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_upstream);
            });
            let Some(response_head) = read_head(&mut upstream)? else { return Ok(()) };
            client.write_all(&closing(&response_head))?;
            std::io::copy(&mut upstream, &mut client)?;
            client.shutdown(std::net::Shutdown::Both)
        }
    }
}

/// An HTTP message head, read byte by byte up to the blank line; `None` at end of stream.
fn read_head(stream: &mut std::net::TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(head))
}

/// `head` with its Connection header replaced by `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut lines: String =
        text.split_inclusive("\r\n").filter(|line| !line.to_ascii_lowercase().starts_with("connection:")).collect();
    lines.truncate(lines.len() - 2);
    lines.push_str("Connection: close\r\n\r\n");
    lines.into_bytes()
}
