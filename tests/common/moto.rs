//! The local AWS-compatible server (moto) the AWS-backed suites talk to.
//!
//! `./scripts/test.sh` installs moto into `./.venv`, starts it on 127.0.0.1 and exports
//! `WPFLEET_TEST_AWS_ENDPOINT`. Running a suite directly with `cargo test` works too when
//! `./.venv/bin/moto_server` exists: the first test that needs it starts one for the test
//! process, and it ends with the test process. Nothing here ever reaches real AWS.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Moto {
    endpoint: String,
    _child: Option<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The endpoint URL of a running moto server; panics with instructions if there is none.
pub fn endpoint() -> String {
    MOTO.get_or_init(start).endpoint.clone()
}

fn start() -> Moto {
    // SAFETY of set_var: done once, before any AWS client reads the environment.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "eu-west-1"),
    ] {
        if std::env::var_os(k).is_none() {
            unsafe { std::env::set_var(k, v) };
        }
    }
    if let Ok(endpoint) = std::env::var("WPFLEET_TEST_AWS_ENDPOINT") {
        return Moto {
            endpoint,
            _child: None,
        };
    }
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    // moto_server with DynamoDB requests serialized: see the script for why.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto_server.py");
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server");
    assert!(
        std::path::Path::new(server).exists(),
        "these tests need a local AWS-compatible server: run ./scripts/test.sh (it installs \
         moto into ./.venv), or set WPFLEET_TEST_AWS_ENDPOINT"
    );
    let port = free_port();
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ECS_SERVICE_RUNNING", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tied_to_this_process(command);
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_ready(port);
    Moto {
        endpoint,
        _child: Some(child),
    }
}

/// Spawns `command` so that it is killed when this process ends (a static is never
/// dropped, and test processes end without cleanup). Linux delivers the parent-death
/// signal when the spawning *thread* ends, so the spawn happens on a thread that parks
/// for the life of the process rather than on a test's runtime thread.
fn spawn_tied_to_this_process(mut command: Command) -> Child {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .expect("spawner thread")
        .expect("start moto_server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("moto did not start on port {port}");
}
