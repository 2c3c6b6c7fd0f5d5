//! Network namespaces a test makes and deletes, so that bridges, TAPs, NAT rules and the
//! traffic between them never touch the host's own interfaces or routes.

use std::process::Command;

/// A named network namespace, deleted (with every interface in it) when dropped.
pub struct Netns {
    pub name: String,
}

/// Runs `ip` with `args`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `ip args` succeeds.
pub fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Netns {
    /// A new namespace named `hth-<prefix>-<random>`, with loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = format!("hth-{prefix}-{}", hearth_types::short_suffix());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Links this namespace to `other` with a veth pair: `ours`/`theirs` are the two ends'
    /// addresses (with prefix), both ends up. Each end is named after the namespace at its
    /// other end (`v-<suffix>`), so one namespace can link to several.
    pub fn link(&self, other: &Netns, ours: &str, theirs: &str) {
        let end = |ns: &Netns| format!("v-{}", &ns.name[ns.name.len() - 6..]);
        let (a, b) = (&end(other), &end(self));
        ip(&[
            "-n",
            &self.name,
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            &other.name,
        ]);
        ip(&["-n", &self.name, "addr", "add", ours, "dev", a]);
        ip(&["-n", &other.name, "addr", "add", theirs, "dev", b]);
        ip(&["-n", &self.name, "link", "set", a, "up"]);
        ip(&["-n", &other.name, "link", "set", b, "up"]);
    }

    /// Whether this namespace has an interface named `ifname`.
    pub fn has_link(&self, ifname: &str) -> bool {
        ip_ok(&["-n", &self.name, "link", "show", "dev", ifname])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
