//! A network namespace joined to the host by a veth pair, for tests that cut the link.

use std::process::Command;

use anyhow::Result;

use crate::host::run;

/// A network namespace joined to the host by a veth pair: the host end has `HOST/30`, the
/// namespace end `NS/30`. Removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    /// The host end's address.
    pub host_ip: String,
    /// The namespace end's address.
    pub ns_ip: String,
}

impl NetNs {
    /// Creates it; an error (not root, no `ip`, no namespaces here) means the machine
    /// does not allow it.
    pub fn create() -> Result<NetNs> {
        let id = std::process::id() % 60_000;
        let name = format!("chr{id}");
        let host_if = format!("vchr{id}a");
        let ns_if = format!("vchr{id}b");
        let (a, b) = ((id / 64) % 250, (id % 64) * 4);
        let host_ip = format!("10.{}.{a}.{}", 200 + (id % 50), b + 1);
        let ns_ip = format!("10.{}.{a}.{}", 200 + (id % 50), b + 2);
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &name, "ip"])
                .args(args))
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts (`false`) or restores (`true`) the link.
    pub fn link(&self, up: bool) -> Result<()> {
        run(Command::new("ip").args(["link", "set", &self.host_if, if up { "up" } else { "down" }]))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
