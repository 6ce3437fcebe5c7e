//! Hosts on one machine: each a network namespace (`ip netns`) with one interface, `eth0`, on a
//! private /24, all cabled by veth pairs to one bridge in a namespace of its own (the switch),
//! and the test itself on the same bridge (a veth in the namespace it runs in, `.254`). Faults
//! are made per host, on that host's side of its cable:
//!
//! - a partition: nftables rules in each host that drop (silently, as a cut cable does, so TCP
//!   retries and times out) what goes to or comes from the hosts on the other side;
//! - a lossy link: nftables `numgen random` drops a share of the host's packets both ways;
//! - a slow link: a `tbf` queue on the host's egress (packets wait behind a low rate).
//!
//! `tc netem` (fixed delay, reordering) would be the usual tool, but this machine's kernel is
//! built without it (`CONFIG_NET_SCH_NETEM` is not set; no modules to load): delay here is
//! queueing behind a slow link, which is what a congested path does anyway.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Everything made is removed on drop; names
//! carry the process id, so a run's leftovers never clash with another's.

use std::net::Ipv4Addr;
use std::process::Command;

/// One host of a [`Network`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in the test (`relay0`, `alice`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip netns exec NETNS`: prefix a command with these to run it on this host.
    pub fn exec_prefix(&self) -> [String; 4] {
        [
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
        ]
    }
}

/// Several hosts on one bridge; removed on drop.
pub struct Network {
    switch: String,
    /// The test's own end of its cable, in the namespace the test runs in.
    local_link: String,
    local_ip: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Whether this machine can make a [`Network`]: `Err` says what is missing.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces need root".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("`{tool}` is missing (Debian package {package})"));
        }
    }
    Ok(())
}

/// Runs a command; `Err` with its stderr when it fails.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {args:?}: {e}"))?;
    succeeded(&out, || format!("{args:?} failed"))
}

/// `Ok` for a zero exit status, else `Err` with `what` and the command's stderr.
fn succeeded(out: &std::process::Output, what: impl FnOnce() -> String) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            what(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `nft -f -` in `netns` with `script` on stdin.
fn nft(netns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft in {netns}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft in {netns}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {netns}: {e}"))?;
    succeeded(&out, || format!("nft in {netns} refused {script:?}"))
}

/// The table every fault rule of a host lives in: flushing it heals the host.
const TABLE: &str = "inet jasper_faults";

impl Network {
    /// Makes one host per name, `10.213.N.1`, `.2`, ... in order (N from the process id), and
    /// the test's own address `.254` on the same bridge.
    pub fn create(names: &[&str]) -> Result<Network, String> {
        available()?;
        assert!(names.len() < 250, "a /24 holds at most 249 hosts here");
        let pid = std::process::id();
        let tag = format!("jn{}", pid % 100_000);
        let subnet = (pid % 250) as u8;
        let ip = |i: u8| Ipv4Addr::new(10, 213, subnet, i);
        let mut net = Network {
            switch: format!("{tag}-switch"),
            local_link: format!("{tag}-local"),
            local_ip: ip(254),
            hosts: Vec::new(),
        };
        run(&["ip", "netns", "add", &net.switch])?;
        run(&[
            "ip",
            "-n",
            &net.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ])?;
        run(&["ip", "-n", &net.switch, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let host = Host {
                name: (*name).to_owned(),
                netns: format!("{tag}-{name}"),
                ip: ip(i as u8 + 1),
            };
            run(&["ip", "netns", "add", &host.netns])?;
            // Pushed before it is cabled, so that drop removes a half-made host too.
            net.hosts.push(host.clone());
            let port = format!("port{i}");
            let temp = format!("{tag}-h{i}");
            run(&[
                "ip",
                "link",
                "add",
                &temp,
                "netns",
                &host.netns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &net.switch,
            ])?;
            run(&[
                "ip",
                "-n",
                &host.netns,
                "link",
                "set",
                &temp,
                "name",
                "eth0",
            ])?;
            net.plug(&port)?;
            let cidr = format!("{}/24", host.ip);
            run(&["ip", "-n", &host.netns, "addr", "add", &cidr, "dev", "eth0"])?;
            run(&["ip", "-n", &host.netns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &host.netns, "link", "set", "lo", "up"])?;
            nft(
                &host.netns,
                &format!(
                    "table {TABLE} {{\n\
                       chain input {{ type filter hook input priority 0; }}\n\
                       chain output {{ type filter hook output priority 0; }}\n\
                     }}\n"
                ),
            )?;
        }
        run(&[
            "ip",
            "link",
            "add",
            &net.local_link,
            "type",
            "veth",
            "peer",
            "name",
            "local",
            "netns",
            &net.switch,
        ])?;
        net.plug("local")?;
        let cidr = format!("{}/24", net.local_ip);
        run(&["ip", "addr", "add", &cidr, "dev", &net.local_link])?;
        run(&["ip", "link", "set", &net.local_link, "up"])?;
        Ok(net)
    }

    /// Puts the switch's end of a cable, `port`, on the bridge and brings it up.
    fn plug(&self, port: &str) -> Result<(), String> {
        run(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            "master",
            "br0",
        ])?;
        run(&["ip", "-n", &self.switch, "link", "set", port, "up"])
    }

    /// The host named `name`; panics when there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The address the test itself has on the bridge.
    pub fn local_ip(&self) -> Ipv4Addr {
        self.local_ip
    }

    /// Cuts every host of each group off from the hosts of every other group (hosts in no
    /// group keep all their links, the test's own included).
    pub fn partition(&self, groups: &[Vec<String>]) -> Result<(), String> {
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|&(o, _)| o != g)
                .flat_map(|(_, other)| other.iter().map(|n| self.host(n).ip.to_string()))
                .collect();
            if others.is_empty() {
                continue;
            }
            let set = others.join(", ");
            for name in group {
                nft(
                    &self.host(name).netns,
                    &format!(
                        "add rule {TABLE} input ip saddr {{ {set} }} drop\n\
                         add rule {TABLE} output ip daddr {{ {set} }} drop\n"
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Drops `percent` % of what `name` sends and of what it receives, at random.
    pub fn lossy(&self, name: &str, percent: u8) -> Result<(), String> {
        assert!(percent <= 100);
        nft(
            &self.host(name).netns,
            &format!(
                "add rule {TABLE} input numgen random mod 100 < {percent} drop\n\
                 add rule {TABLE} output numgen random mod 100 < {percent} drop\n"
            ),
        )
    }

    /// Sends what `name` sends through a queue of `kbit` kbit/s (up to 500 ms of backlog,
    /// beyond which packets are dropped, as a congested link's would be).
    pub fn slow(&self, name: &str, kbit: u32) -> Result<(), String> {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.host(name).netns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            &format!("{kbit}kbit"),
            "burst",
            "16kb",
            "latency",
            "500ms",
        ])
    }

    /// Removes every fault from every host.
    pub fn heal(&self) -> Result<(), String> {
        for host in &self.hosts {
            nft(&host.netns, &format!("flush table {TABLE}\n"))?;
            // No qdisc of ours is not an error worth reporting: the host had no slow link.
            let _ = run(&[
                "ip",
                "netns",
                "exec",
                &host.netns,
                "tc",
                "qdisc",
                "del",
                "dev",
                "eth0",
                "root",
            ]);
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of each veth, and with it the other end.
        for host in &self.hosts {
            let _ = run(&["ip", "netns", "del", &host.netns]);
        }
        let _ = run(&["ip", "link", "del", &self.local_link]);
        let _ = run(&["ip", "netns", "del", &self.switch]);
    }
}
