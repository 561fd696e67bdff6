//! A throwaway network namespace playing the host, for tests that run dockmaster with real
//! networking: everything dockmaster creates (bridges, veths, nft table, sysctls) lives in
//! it, never in the machine's own namespace. Dropping it removes the containers, stops the
//! root's netd and deletes the namespace, also when the test failed.

use std::io::Read;
use std::process::Command;

use super::containers::Host;

pub struct NetnsHost {
    pub host: Host,
    pub ns: String,
}

/// `ip ARGS`, expecting success.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)
}

impl NetnsHost {
    /// A namespace `dmt-<prefix>-<random>` with loopback up and a fresh root.
    pub fn new(prefix: &str) -> NetnsHost {
        let ns = format!("dmt-{prefix}-{}", random_suffix());
        ip(&["netns", "add", &ns]);
        let me = NetnsHost {
            host: Host::in_netns(&ns),
            ns,
        };
        ip(&["-n", &me.ns, "link", "set", "lo", "up"]);
        me
    }

    /// Runs `f` in a thread inside the namespace.
    pub fn in_ns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        dockmaster::network::netns::run_in(
            std::path::Path::new(&format!("/run/netns/{}", self.ns)),
            f,
        )
        .expect("enter the namespace")
    }
}

impl std::ops::Deref for NetnsHost {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        self.host.remove_all_containers();
        let root = self.host.root.root();
        if let Some(pid) = dockmaster::network::netd::running_pid(&root) {
            // SAFETY: signals the netd this test's root started (pid from its own pid file).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let netns_dir = root.join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for e in entries.flatten() {
                let _ = dockmaster::network::netns::remove(&e.path());
            }
        }
        let _ = dockmaster::network::netns::release_dir(&netns_dir);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
