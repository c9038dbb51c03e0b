//! A network of Linux network namespaces for the network-cut tests: every
//! node of a cluster in a namespace of its own, on two networks, so that
//! the peer traffic (Raft) of a node can be cut while clients still reach
//! it.
//!
//! ```text
//!   test process (root namespace)                       node namespaces
//!   host link 10.231.X.254 ──┐                   ┌── client0 10.231.X.<id>
//!                            │  switch namespace │
//!                            └── bridge client ──┤
//!                                bridge peer ────┼── peer0   10.232.X.<id>
//!                                bridge peer-cut ┘   (a cut moves a node's
//!                                                    port here)
//! ```
//!
//! The bridges live in a namespace of their own, not the root one, so the
//! machine's firewall (a FORWARD policy of DROP, as Docker sets, applies to
//! bridged traffic when `br_netfilter` is loaded) never sees the traffic.
//! The root namespace holds one link of its own and one route, to the
//! client network: its `/24` is chosen among those no route of the machine
//! uses yet. The peer network exists in the switch and node namespaces
//! only.
//!
//! A cut moves the peer ports of one side to a second bridge: the two
//! sides cannot reach each other, the nodes of one side still reach each
//! other, and no packet is refused (connections hang as they do behind a
//! failed switch or a firewall that drops). Healing moves them back.
//!
//! Names carry the test process's pid and a counter, and subnets are
//! chosen under a lock file, so tests running at once (threads of one
//! binary, or several binaries) never collide; namespaces left by a test
//! process that was killed are deleted by the next one. Dropping the
//! [`Network`] deletes every namespace and link it made, also when the
//! test panics. Setting up needs root and iproute2's `ip`; without them
//! the test fails and says so.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, ensure};

/// Prefix of every namespace these tests make: `spool-test-PID-N-...`.
const PREFIX: &str = "spool-test-";

/// The client network is 10.231.X.0/24, the peer network 10.232.X.0/24.
const CLIENT_NET: [u8; 2] = [10, 231];
const PEER_NET: [u8; 2] = [10, 232];

/// Port of every node's client listener and of every node's peer
/// listener: each node has addresses of its own.
pub const CLIENT_PORT: u16 = 7070;
pub const PEER_PORT: u16 = 7080;

/// Networks made by this test process, for unique names.
static MADE: AtomicU32 = AtomicU32::new(0);

/// The namespaces and links of one test cluster.
pub struct Network {
    /// `PID-N`, in every name.
    tag: String,
    /// The third byte of both networks' addresses.
    subnet: u8,
    nodes: Vec<u64>,
    /// Nodes whose peer port is on the cut bridge.
    cut: std::sync::Mutex<Vec<u64>>,
}

impl Network {
    /// Namespaces for nodes `1..=count` and the switch between them.
    /// Panics, saying what is needed, when the machine does not allow it.
    pub fn create(count: u64) -> Network {
        // Choosing a free subnet and taking it is one step for every test
        // process and thread: a lock file held until the route exists.
        let lock = setup_lock();
        delete_stale();
        let pid = std::process::id();
        let tag = format!("{pid}-{}", MADE.fetch_add(1, Ordering::Relaxed));
        let network = Network {
            subnet: free_subnet(pid),
            tag,
            nodes: (1..=count).collect(),
            cut: std::sync::Mutex::default(),
        };
        if let Err(error) = network.build() {
            panic!(
                "cannot set up the network namespaces of the network-cut tests: {error:#}\n\
                 these tests need root (CI runs them as root) and iproute2's `ip` \
                 (`apt-get install iproute2`; .ci/run installs it when CI=true)"
            );
        }
        drop(lock);
        network
    }

    /// The command prefix that runs a program in node `id`'s namespace.
    /// `ip netns exec` execs the program, so its pid is the program's.
    pub fn launcher(&self, id: u64) -> Vec<String> {
        [ip_program(), "netns", "exec", &self.namespace(id)]
            .map(str::to_owned)
            .to_vec()
    }

    /// Node `id`'s client address, reachable from the test process.
    pub fn client_address(&self, id: u64) -> Ipv4Addr {
        address(CLIENT_NET, self.subnet, id)
    }

    /// Node `id`'s peer address, reachable from the other nodes only.
    pub fn peer_address(&self, id: u64) -> Ipv4Addr {
        address(PEER_NET, self.subnet, id)
    }

    /// Cuts the peer links between the nodes of `side` and the others; the
    /// nodes of `side` still reach each other, and clients reach every
    /// node. Replaces any earlier cut.
    pub fn cut(&self, side: &[u64]) {
        self.heal();
        for &id in side {
            self.switch(&["link", "set", &format!("p{id}"), "master", "peer-cut"])
                .unwrap_or_else(|error| panic!("cutting node {id} off: {error:#}"));
        }
        *self.cut.lock().expect("cut lock") = side.to_vec();
    }

    /// Undoes [`cut`](Self::cut): every peer port back on one bridge.
    pub fn heal(&self) {
        let mut cut = self.cut.lock().expect("cut lock");
        for id in cut.drain(..) {
            self.switch(&["link", "set", &format!("p{id}"), "master", "peer"])
                .unwrap_or_else(|error| panic!("healing node {id}'s link: {error:#}"));
        }
    }

    fn namespace(&self, id: u64) -> String {
        format!("{PREFIX}{}-n{id}", self.tag)
    }

    fn switch_namespace(&self) -> String {
        format!("{PREFIX}{}-switch", self.tag)
    }

    /// The root namespace's link to the client bridge; interface names
    /// have at most 15 bytes (`sp` + pid of at most 7 digits + `-` + N).
    fn host_link(&self) -> String {
        format!("sp{}", self.tag)
    }

    fn build(&self) -> Result<()> {
        let switch = self.switch_namespace();
        ip(&["netns", "add", &switch])?;
        for bridge in ["client", "peer", "peer-cut"] {
            self.switch(&["link", "add", bridge, "type", "bridge"])?;
            self.switch(&["link", "set", bridge, "up"])?;
        }
        for &id in &self.nodes {
            self.build_node(id)?;
        }
        let host = self.host_link();
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &switch,
        ])?;
        self.switch(&["link", "set", "host", "master", "client", "up"])?;
        let host_address = format!("{}/24", address(CLIENT_NET, self.subnet, 254));
        ip(&["address", "add", &host_address, "dev", &host])?;
        ip(&["link", "set", &host, "up"])
    }

    /// Node `id`'s namespace, with one link to each network.
    fn build_node(&self, id: u64) -> Result<()> {
        let namespace = self.namespace(id);
        let switch = self.switch_namespace();
        ip(&["netns", "add", &namespace])?;
        let inside = |args: &[&str]| ip(&[&["-n", namespace.as_str()], args].concat());
        inside(&["link", "set", "lo", "up"])?;
        for (link, port, bridge, net) in [
            ("client0", format!("c{id}"), "client", CLIENT_NET),
            ("peer0", format!("p{id}"), "peer", PEER_NET),
        ] {
            inside(&[
                "link", "add", link, "type", "veth", "peer", "name", &port, "netns", &switch,
            ])?;
            self.switch(&["link", "set", &port, "master", bridge, "up"])?;
            let own = format!("{}/24", address(net, self.subnet, id));
            inside(&["address", "add", &own, "dev", link])?;
            inside(&["link", "set", link, "up"])?;
        }
        Ok(())
    }

    fn switch(&self, args: &[&str]) -> Result<()> {
        ip(&[&["-n", self.switch_namespace().as_str()], args].concat())
    }
}

impl Drop for Network {
    /// Deletes the namespaces (and with them the links inside) and the
    /// root namespace's link, whose deletion with its namespace peer the
    /// kernel would otherwise do later, asynchronously. Run after the
    /// nodes' processes are gone: a namespace lives on while a process is
    /// in it.
    fn drop(&mut self) {
        let _ = ip(&["link", "delete", &self.host_link()]);
        let _ = ip(&["netns", "delete", &self.switch_namespace()]);
        for &id in &self.nodes {
            let _ = ip(&["netns", "delete", &self.namespace(id)]);
        }
    }
}

fn address(net: [u8; 2], subnet: u8, host: u64) -> Ipv4Addr {
    let host = u8::try_from(host).expect("a host number below 256");
    Ipv4Addr::new(net[0], net[1], subnet, host)
}

/// A client /24 that no route of the root namespace covers (called under
/// [`setup_lock`], so no other test takes it meanwhile).
fn free_subnet(pid: u32) -> u8 {
    let routes = output(&["-4", "route", "show"]).unwrap_or_default();
    let start = (pid % 250) as u8;
    (0..250u8)
        .map(|step| start.wrapping_add(step) % 250)
        .find(|x| !routes.contains(&format!("{}.{}.{x}.0/24", CLIENT_NET[0], CLIENT_NET[1])))
        .expect("a free 10.231.x.0/24")
}

/// An exclusive lock on a file of the temporary directory, shared by
/// every test process of the machine; released when dropped.
fn setup_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("spool-test-netns.lock");
    // Read-only is enough for a lock, and works on a file another user
    // made.
    let file = std::fs::File::open(&path)
        .or_else(|_| std::fs::File::create(&path))
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
    file
}

/// Deletes namespaces of test processes that no longer run (killed before
/// their guard ran), ending the servers those left running in them.
fn delete_stale() {
    let Ok(list) = output(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|line| line.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let orphans = output(&["netns", "pids", name]).unwrap_or_default();
            for orphan in orphans.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", orphan]).status();
            }
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// iproute2's `ip`: from `PATH`, or where Debian puts it, for a `PATH`
/// without the sbin directories.
fn ip_program() -> &'static str {
    let in_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ip").is_file()));
    match ["/usr/sbin/ip", "/sbin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    {
        Some(path) if !in_path => path,
        _ => "ip",
    }
}

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<()> {
    output(args).map(drop)
}

fn output(args: &[&str]) -> Result<String> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new(ip_program())
        .args(args)
        .output()
        .with_context(|| format!("`{command}` could not run"))?;
    ensure!(
        out.status.success(),
        "`{command}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
