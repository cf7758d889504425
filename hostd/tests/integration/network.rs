//! Container networking against a real daemon, natively, inside a network
//! namespace of the test's own (never this machine's): routed veths on the
//! default and created bridge networks, published ports from the host's
//! localhost, its addresses and other containers (hairpin), names by the
//! networks' DNS, isolation between networks, `host` and `none`, bad input
//! refused with nothing left behind, and every link, address, route, rule,
//! namespace and lease freed exactly once across runs, a `kill -9` of the
//! daemon, an upgrade and stale leftovers. The real `ip` and `nft` count
//! what the kernel holds.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hostd::daemon::containers::Record;
use mkhost_shared::control::{self, Request, Response};

use crate::common::{
    hostd, in_test_netns, ok, overlay_mounts_under, require, run, text, wait_until, Daemon, HOSTD,
};

/// How long a wait for the network to settle may take.
const WAIT: Duration = Duration::from_secs(15);

/// Busybox with the applets these tests use, `Cmd` `sh`.
fn build_image(dir: &Path) {
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args).current_dir(dir));
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:bb"]);
    umoci(&["unpack", "--image", "L:bb", "B"]);
    let rootfs = dir.join("B/rootfs");
    for sub in ["bin", "etc", "www"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "true", "cat", "wget", "httpd", "nc", "nslookup", "ip", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    umoci(&["repack", "--image", "L:bb", "B"]);
    umoci(&["config", "--image", "L:bb", "--config.cmd", "sh"]);
    run(Command::new("tar")
        .args(["-C", "L", "-cf", "bb.tar", "."])
        .current_dir(dir));
}

/// `hostd run` (foreground unless `args` has `-d`), socket first.
fn hostd_run(socket: &Path, args: &[&str]) -> Output {
    Command::new(HOSTD)
        .args(["run", "--socket"])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn record(socket: &Path, name: &str) -> Record {
    match control::request(socket, &Request::Ps, Duration::from_secs(5)).unwrap() {
        Response::Ps(rows) => rows
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no container {name}")),
        other => panic!("{other:?}"),
    }
}

fn address(socket: &Path, name: &str) -> String {
    record(socket, name)
        .network
        .and_then(|n| n.address)
        .unwrap_or_else(|| panic!("{name} has no address"))
        .to_string()
}

/// The output of `program args` inside the test's network namespace.
fn in_ns(work: &Path, program: &str, args: &[&str]) -> Output {
    in_test_netns(work, program).args(args).output().unwrap()
}

/// A web server answering `body` on port 80.
fn web(body: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo {body} > /www/index.html; exec httpd -f -p 80 -h /www"),
    ]
}

/// Builds the image in `work`, starts a daemon there and imports it.
fn daemon_with_image(work: &Path) -> Daemon<'_> {
    build_image(work);
    let daemon = Daemon::start(work, Path::new(HOSTD), &[]);
    ok(&hostd(
        &daemon.socket(),
        &["import", work.join("bb.tar").to_str().unwrap()],
    ));
    daemon
}

/// `hostd run -d OPTIONS bb` of a web server answering `body` on port 80.
fn run_web(socket: &Path, options: &[&str], body: &str) {
    let mut args: Vec<String> = vec!["-d".into()];
    args.extend(options.iter().map(|o| o.to_string()));
    args.push("bb".into());
    args.extend(web(body));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&hostd_run(socket, &argv));
}

/// What the kernel holds in the test's namespace, and hostd's namespace
/// files: the numbers that must come back after containers go.
fn counts(work: &Path) -> BTreeMap<&'static str, usize> {
    let lines = |out: Output| ok(&out).lines().filter(|l| !l.trim().is_empty()).count();
    let mut map = BTreeMap::new();
    map.insert("links", lines(in_ns(work, "ip", &["-o", "link"])));
    map.insert("addresses", lines(in_ns(work, "ip", &["-o", "-4", "addr"])));
    map.insert(
        "routes",
        lines(in_ns(work, "ip", &["-4", "route", "show", "table", "all"])),
    );
    let nft = in_ns(work, "nft", &["list", "table", "ip", "mkhost"]);
    let rules = String::from_utf8_lossy(&nft.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table")
                && !l.starts_with("chain")
                && !l.starts_with("type")
                && *l != "}"
        })
        .count();
    map.insert("nft rules", rules);
    map.insert(
        "netns files",
        fs::read_dir(work.join("state/netns")).map_or(0, |d| d.count()),
    );
    map.insert("mounts", overlay_mounts_under(work).len());
    map
}

/// The counts once the host has exactly `veths` bridge veths: a `--rm`
/// container's veth outlives its `rm` by a moment (the kernel destroys it
/// with the namespace, in its own cleanup work), so a snapshot taken right
/// after one would count it.
fn settled_counts(work: &Path, veths: usize) -> BTreeMap<&'static str, usize> {
    wait_until(&format!("{veths} mkv veths"), WAIT, || {
        let links = in_ns(work, "ip", &["-o", "link"]);
        let names = String::from_utf8_lossy(&links.stdout).to_string();
        names.lines().filter(|l| l.contains(": mkv")).count() == veths
    });
    counts(work)
}

/// The counts become `want` within a few seconds: a removed container's
/// veth and route go when the kernel destroys its namespace, in its own
/// cleanup work, a moment after `rm` has answered.
fn assert_counts(work: &Path, want: &BTreeMap<&'static str, usize>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = counts(work);
        if &now == want {
            return;
        }
        assert!(Instant::now() < deadline, "counts {now:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP GET from inside the test's namespace (the host's side), with
/// curl (Debian's static busybox `wget` crashes in glibc's resolver).
fn fetch_from_host(work: &Path, url: &str) -> String {
    let out = in_ns(work, "curl", &["-s", "-m", "5", url]);
    text(&out)
}

/// `hostd run --rm` of an HTTP GET of `host:port` with busybox `nc` on
/// `network`: the response, or the error.
fn fetch_in_container(socket: &Path, network: &str, host: &str, port: u16) -> Output {
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    hostd_run(
        socket,
        &["--rm", "--network", network, "bb", "sh", "-c", &get],
    )
}

#[test]
fn bridge_networks_ports_names_isolation_and_no_leaks() {
    if !require(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft (Debian's nftables) to count the kernel's rules",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let daemon = daemon_with_image(work);
    let socket = daemon.socket();
    let empty = settled_counts(work, 0);

    // The default network: an address, /etc/hosts naming it, a published
    // port reachable from the host's localhost, its own addresses and
    // another container (hairpin through the host's address).
    run_web(&socket, &["--name", "web", "-p", "8080:80"], "hello-web");
    let web_ip = address(&socket, "web");
    assert!(web_ip.starts_with("172.17."), "{web_ip}");
    let hosts = ok(&hostd_run(
        &socket,
        &["--rm", "--hostname", "probe", "bb", "cat", "/etc/hosts"],
    ));
    assert!(
        hosts
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("172.17.") && l.ends_with("\tprobe")),
        "{hosts}"
    );
    wait_until("web to answer", WAIT, || {
        fetch_from_host(work, "http://127.0.0.1:8080/").contains("hello-web")
    });
    assert!(fetch_from_host(work, "http://172.17.0.1:8080/").contains("hello-web"));
    assert!(fetch_from_host(work, &format!("http://{web_ip}:80/")).contains("hello-web"));
    let hairpin = fetch_in_container(&socket, "bridge", "172.17.0.1", 8080);
    assert!(text(&hairpin).contains("hello-web"), "{}", text(&hairpin));
    let ports = ok(&hostd(&socket, &["port", "web"]));
    assert_eq!(ports.trim(), "80/tcp -> 0.0.0.0:8080");
    let ps = ok(&hostd(&socket, &["ps"]));
    assert!(
        ps.contains(&format!("bridge:{web_ip}")) && ps.contains("0.0.0.0:8080->80/tcp"),
        "{ps}"
    );
    // The same host port again: refused, nothing added.
    let with_web = settled_counts(work, 1);
    let clash = hostd_run(&socket, &["-d", "-p", "8080:81", "bb", "sleep", "100"]);
    assert_eq!(clash.status.code(), Some(125), "{}", text(&clash));
    assert!(
        text(&clash).contains("host port 8080/tcp is already published by container web"),
        "{}",
        text(&clash)
    );
    assert_counts(work, &with_web);

    // Created networks: names and aliases by DNS, isolation between them,
    // published ports across them.
    ok(&hostd(&socket, &["network", "create", "front"]));
    ok(&hostd(
        &socket,
        &["network", "create", "--subnet", "10.99.0.0/24", "back"],
    ));
    let ls = ok(&hostd(&socket, &["network", "ls"]));
    assert!(
        ls.contains("front") && ls.contains("172.18.0.0/16") && ls.contains("10.99.0.0/24"),
        "{ls}"
    );
    run_web(
        &socket,
        &[
            "--name",
            "a",
            "--network",
            "front",
            "--network-alias",
            "api",
        ],
        "hello-a",
    );
    let a_ip = address(&socket, "a");
    assert!(a_ip.starts_with("172.18."), "{a_ip}");
    for name in ["a", "api"] {
        let looked = hostd_run(
            &socket,
            &["--rm", "--network", "front", "bb", "nslookup", name],
        );
        assert!(text(&looked).contains(&a_ip), "{name}: {}", text(&looked));
    }
    let resolv = ok(&hostd_run(
        &socket,
        &[
            "--rm",
            "--network",
            "front",
            "bb",
            "cat",
            "/etc/resolv.conf",
        ],
    ));
    assert!(resolv.starts_with("nameserver 172.18.0.1\n"), "{resolv}");
    wait_until("a to answer by name", WAIT, || {
        text(&fetch_in_container(&socket, "front", "api", 80)).contains("hello-a")
    });
    let blocked = fetch_in_container(&socket, "back", &a_ip, 80);
    assert!(
        !blocked.status.success() && !text(&blocked).contains("hello-a"),
        "{}",
        text(&blocked)
    );
    let published = fetch_in_container(&socket, "back", "172.17.0.1", 8080);
    assert!(
        text(&published).contains("hello-web"),
        "{}",
        text(&published)
    );
    let in_use = hostd(&socket, &["network", "rm", "front"]);
    assert!(
        text(&in_use).contains("in use by 1 container(s): a"),
        "{}",
        text(&in_use)
    );

    // host and none.
    let none = ok(&hostd_run(
        &socket,
        &["--rm", "--network", "none", "bb", "ip", "-o", "link"],
    ));
    assert_eq!(none.lines().count(), 1, "{none}");
    let host = ok(&hostd_run(
        &socket,
        &["--rm", "--network", "host", "bb", "ip", "-o", "link"],
    ));
    assert!(host.contains("mkv"), "{host}");

    // Bad input: clear errors, nothing half-made.
    let before = settled_counts(work, 2);
    for (args, want) in [
        (
            vec!["--network", "nope", "bb", "true"],
            "no network named \"nope\"",
        ),
        (vec!["-p", "70000:80", "bb", "true"], "outside 1-65535"),
        (vec!["-p", "8080", "bb", "true"], "no host port"),
        (
            vec!["--network", "front", "--ip", "10.0.0.9", "bb", "true"],
            "not a usable host address",
        ),
        (
            vec!["--network", "none", "-p", "1:1", "bb", "true"],
            "need a network",
        ),
    ] {
        let out = hostd_run(&socket, &args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
    for (args, want) in [
        (
            vec!["network", "create", "--subnet", "172.18.5.0/24", "x"],
            "overlaps network \"front\"",
        ),
        (
            vec!["network", "create", "--subnet", "10.99.0.1/24", "x"],
            "host bits are set",
        ),
        (
            vec![
                "network", "create", "--driver", "direct", "--parent", "eth9", "x",
            ],
            "does not exist",
        ),
        (vec!["network", "create", "front"], "already exists"),
        (vec!["network", "rm", "bridge"], "default network"),
    ] {
        let out = hostd(&socket, &args);
        assert!(
            !out.status.success() && text(&out).contains(want),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_counts(work, &before);

    // Churn: runs with a published port come and go; nothing accumulates.
    for _ in 0..20 {
        ok(&hostd_run(
            &socket,
            &["--rm", "-p", "9000:80", "--network", "front", "bb", "true"],
        ));
    }
    assert_counts(work, &before);

    // kill -9 with containers on every network; the new daemon re-adopts
    // addresses, ports and names, and removes a stale veth and namespace.
    ok(&hostd_run(
        &socket,
        &[
            "-d",
            "--name",
            "b",
            "--network",
            "back",
            "-p",
            "9001:80",
            "bb",
            "sleep",
            "1000",
        ],
    ));
    let b_ip = address(&socket, "b");
    let with_all = settled_counts(work, 3);
    daemon.kill9();
    run(in_test_netns(work, "ip").args([
        "link",
        "add",
        "mkvdeadbeef0000",
        "type",
        "veth",
        "peer",
        "name",
        "stale0",
    ]));
    fs::write(work.join("state/netns/stale"), b"").unwrap();
    let second = Daemon::start(work, Path::new(HOSTD), &[]);
    let log = second.output();
    assert!(
        log.contains("link mkvdeadbeef0000") && log.contains("state/netns/stale"),
        "{log}"
    );
    assert_eq!(address(&socket, "b"), b_ip);
    assert_counts(work, &with_all);
    assert!(fetch_from_host(work, "http://127.0.0.1:8080/").contains("hello-web"));
    let looked = hostd_run(
        &socket,
        &["--rm", "--network", "front", "bb", "nslookup", "api"],
    );
    assert!(text(&looked).contains(&a_ip), "{}", text(&looked));

    // An upgrade (another binary): the same again.
    let copy = work.join("hostd-new");
    fs::copy(HOSTD, &copy).unwrap();
    second.kill9();
    let third = Daemon::start(work, &copy, &[]);
    assert_counts(work, &with_all);
    assert!(fetch_from_host(work, "http://127.0.0.1:8080/").contains("hello-web"));

    // Everything removed: back to an empty host.
    for name in ["web", "a", "b"] {
        ok(&hostd(&socket, &["rm", "-f", name]));
    }
    for name in ["front", "back"] {
        ok(&hostd(&socket, &["network", "rm", name]));
    }
    assert_counts(work, &empty);
    third.terminate();
}

/// `direct` networks, natively: a veth pair stands for the rack's cable
/// (`lan0` is the host's NIC, `lan1` the rest of the network, in the
/// test's namespace). A container gets a static address from the network's
/// subnet, or a DHCP lease from busybox's `udhcpd` on the other end, and
/// answers there; with no DHCP server the run fails after the timeout with
/// the NIC named, and nothing is left.
#[test]
fn direct_networks_static_and_by_dhcp() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let daemon = daemon_with_image(work);
    let socket = daemon.socket();
    let ip = |args: &[&str]| run(in_test_netns(work, "ip").args(args));
    ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ip(&["link", "set", "lan0", "up"]);
    ip(&["link", "set", "lan1", "up"]);
    ip(&["addr", "add", "192.168.77.1/24", "dev", "lan1"]);
    ip(&["addr", "add", "192.168.78.1/24", "dev", "lan1"]);
    let empty = settled_counts(work, 0);
    // A bridge subnet over the host's own network is refused.
    let clash = hostd(
        &socket,
        &["network", "create", "--subnet", "192.168.77.0/24", "clash"],
    );
    assert!(
        text(&clash).contains("overlaps the host's own network 192.168.77.0/24"),
        "{}",
        text(&clash)
    );

    // Static: an address of the network's subnet.
    ok(&hostd(
        &socket,
        &[
            "network",
            "create",
            "--driver",
            "direct",
            "--parent",
            "lan0",
            "--subnet",
            "192.168.77.0/24",
            "--gateway",
            "192.168.77.1",
            "rack",
        ],
    ));
    run_web(
        &socket,
        &["--name", "s1", "--network", "rack", "--ip", "192.168.77.50"],
        "hello-static",
    );
    assert_eq!(address(&socket, "s1"), "192.168.77.50");
    wait_until("s1 to answer on the rack network", WAIT, || {
        fetch_from_host(work, "http://192.168.77.50/").contains("hello-static")
    });
    let refused = hostd_run(
        &socket,
        &["-d", "--network", "rack", "-p", "80:80", "bb", "true"],
    );
    assert!(
        text(&refused).contains("-p applies to bridge networks"),
        "{}",
        text(&refused)
    );

    // DHCP: a lease from the network's server.
    let config = work.join("udhcpd.conf");
    fs::write(
        &config,
        format!(
            "start 192.168.78.100\nend 192.168.78.110\ninterface lan1\nlease_file {}\n\
             option subnet 255.255.255.0\noption router 192.168.78.1\noption lease 600\n",
            work.join("leases").display()
        ),
    )
    .unwrap();
    let mut server = in_test_netns(work, "busybox")
        .args(["udhcpd", "-f"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ok(&hostd(
        &socket,
        &[
            "network", "create", "--driver", "direct", "--parent", "lan0", "lab",
        ],
    ));
    run_web(&socket, &["--name", "d1", "--network", "lab"], "hello-dhcp");
    let leased = address(&socket, "d1");
    assert!(leased.starts_with("192.168.78.1"), "{leased}");
    wait_until("d1 to answer at its lease", WAIT, || {
        fetch_from_host(work, &format!("http://{leased}/")).contains("hello-dhcp")
    });
    let inspect = ok(&hostd(&socket, &["network", "inspect", "lab"]));
    assert!(
        inspect.contains(&leased) && inspect.contains("\"d1\""),
        "{inspect}"
    );

    // No server: a clear error after the timeout, nothing left behind.
    let _ = server.kill();
    let _ = server.wait();
    let before = settled_counts(work, 0);
    let started = Instant::now();
    let silent = hostd_run(&socket, &["-d", "--network", "lab", "bb", "true"]);
    assert_eq!(silent.status.code(), Some(125), "{}", text(&silent));
    assert!(
        text(&silent).contains("no DHCP server answered on lan0 within 10 s"),
        "{}",
        text(&silent)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_counts(work, &before);

    for name in ["s1", "d1"] {
        ok(&hostd(&socket, &["rm", "-f", name]));
    }
    for name in ["rack", "lab"] {
        ok(&hostd(&socket, &["network", "rm", name]));
    }
    assert_counts(work, &empty);
    daemon.terminate();
}
