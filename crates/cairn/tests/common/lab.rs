//! A lab network of separate hosts for real-network tests: one network
//! namespace per host on a private /24, joined by `scripts/netlab.py`, a
//! userspace link with delay, jitter and loss (the kernel has no netem).
//! Needs root; without it, [`Lab::start`] says SKIPPED and the test returns.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

/// What every link between two hosts does to a packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Link {
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub seed: u64,
}

/// A running lab; dropping it removes every namespace.
pub struct Lab {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    prefix: String,
    subnet: String,
    hosts: usize,
}

static LABS: AtomicU8 = AtomicU8::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Lab {
    /// Starts a lab of `hosts` hosts. `None`, after printing SKIPPED and
    /// why, when this process is not root; a root process that cannot
    /// build one fails the test.
    pub fn start(hosts: usize, link: Link) -> Option<Lab> {
        if !is_root() {
            eprintln!(
                "SKIPPED: the real-network tests need root, to create network namespaces (CI runs as root)"
            );
            return None;
        }
        let pid = std::process::id();
        let k = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("cl{}{k}", pid % 100_000);
        let subnet = format!("10.{}.{k}", 200 + pid % 50);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/netlab.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--prefix", &prefix, "--subnet", &subnet])
            .args(["--hosts", &hosts.to_string()])
            .args(["--delay-ms", &link.delay_ms.to_string()])
            .args(["--jitter-ms", &link.jitter_ms.to_string()])
            .args(["--loss", &link.loss.to_string()])
            .args(["--seed", &link.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs scripts/netlab.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(
            first.trim(),
            "ready",
            "the lab network did not start (as root): {first}"
        );
        Some(Lab {
            child,
            stdin,
            stdout,
            prefix,
            subnet,
            hosts,
        })
    }

    /// How many hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// Host `h`'s address (hosts count from 1).
    pub fn addr(&self, h: usize) -> String {
        format!("{}.{h}", self.subnet)
    }

    /// Host `h`'s network namespace.
    pub fn netns(&self, h: usize) -> String {
        format!("{}-{h}", self.prefix)
    }

    /// Every host's (peer, admin) addresses, for [`super::write_config_at`].
    pub fn node_addresses(&self) -> Vec<(String, String)> {
        (1..=self.hosts)
            .map(|h| {
                (
                    format!("{}:7000", self.addr(h)),
                    format!("{}:7100", self.addr(h)),
                )
            })
            .collect()
    }

    /// Sends one command to the lab and returns its answer.
    pub fn command(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        let answer = answer.trim().to_string();
        assert!(!answer.starts_with("error"), "lab: {line}: {answer}");
        answer
    }

    /// Takes host `h`'s link down: it is cut off from every other host.
    pub fn down(&mut self, h: usize) {
        self.command(&format!("down {h}"));
    }

    /// Brings host `h`'s link back up.
    pub fn up(&mut self, h: usize) {
        self.command(&format!("up {h}"));
    }

    /// Drops every packet from host `a` to host `b` (only that way).
    pub fn drop_packets(&mut self, a: usize, b: usize) {
        self.command(&format!("drop {a} {b}"));
    }

    /// Lets packets from `a` to `b` through again.
    pub fn pass_packets(&mut self, a: usize, b: usize) {
        self.command(&format!("pass {a} {b}"));
    }

    /// What the links did: packets forwarded, lost, dropped.
    pub fn stats(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.command("stats")).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
