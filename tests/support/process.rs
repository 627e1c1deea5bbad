//! Long-lived child processes (servers, the operator) that die with the test binary.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, i32, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it receives `death_signal` when the test binary exits for any reason.
///
/// Linux sends the parent-death signal when the *thread* that forked the child ends, and each test
/// runs on a thread of its own; so every such child is forked by one thread that lives as long as
/// the process.
pub fn spawn_tied(cmd: Command, death_signal: i32) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                let parent = std::process::id() as libc::pid_t;
                for (mut cmd, signal, reply) in rx {
                    // SAFETY: runs between fork and exec and only makes async-signal-safe
                    // calls (prctl, getppid); it allocates nothing.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            // The parent may have died before prctl: no signal would come then.
                            if libc::getppid() != parent {
                                return Err(io::Error::other(
                                    "the test process exited during spawn",
                                ));
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the child-spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner lock")
        .send((cmd, death_signal, reply_tx))
        .expect("child-spawner thread is running");
    reply_rx.recv().expect("child-spawner replies")
}

/// A free TCP port on 127.0.0.1 for a server a test starts later, below the kernel's ephemeral
/// range: a port from that range (what binding port 0 gives) can be taken meanwhile as the
/// source port of any outgoing connection, and a test that opens thousands of them (the
/// crowds of tests/tenancy.rs) made a daprd of another module fail with "could not listen on
/// any endpoint". Random, so that parallel modules seldom pick the same one.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_low / 2);
    for _ in 0..1000 {
        let port = rand::random_range(low..ephemeral_low);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we own.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// The last `n` lines of a file, for failure messages.
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
