//! Container networking in a QEMU guest booted from our own image, over
//! QEMU's user networking: a container fetches a page from an HTTP server
//! on the build machine (10.0.2.2) through NAT; a boot-time container's
//! published port answers the build machine through `hostfwd`, the guest's
//! localhost and another container (hairpin); a container on a `direct`
//! network gets its own DHCP lease on a second NIC and answers there; and
//! after 200 runs with a published port and a `kill -9` of hostd in the
//! middle of starting containers, the guest's links, addresses, routes,
//! namespaces, nftables rules and leases are back where they started.
//!
//! The same boot checks registries: a real registry (Debian's
//! `docker-registry`) on the build machine's loopback is 10.0.2.2 to the
//! guest. The profile names one image by reference (pulled by mkhost build
//! and embedded) and another with `pull = "boot"` (pulled by hostd at boot
//! through the profile's `[registries]`); both containers run, and
//! `hostd pull` from the guest's shell fetches and runs a third image.
//!
//! And the Docker API over mutual TLS (docker_guest.rs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mkhost_registry::testkit::{push, registry_tools, Registry};

use crate::containers::image_archive;
use crate::support::{self, build_custom, scratch, Guest};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A port on the build machine's loopback nobody listens on (yet).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server on the build machine's loopback answering `body` to
/// every request, for as long as the test runs.
fn serve(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// GET / from `127.0.0.1:port` on the build machine (a `hostfwd`), retried
/// until `want` appears or a minute passes.
pub(crate) fn fetch_until(port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            last.clear();
            let _ = s.read_to_string(&mut last);
            if last.contains(want) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no {want:?} from 127.0.0.1:{port}; last answer: {last:?}");
}

/// A shell command that GETs `/` from `host:port` with busybox `nc`.
fn get(host: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 5 {host} {port}")
}

fn one_line(guest: &mut Guest, command: &str) -> String {
    guest
        .run(command, COMMAND_TIMEOUT)
        .join("\n")
        .trim()
        .to_string()
}

/// What must come back after containers go: links, addresses, routes,
/// namespace files, and hostd's own counts (rules, leases, attachments).
fn counts(guest: &mut Guest) -> Vec<String> {
    // Routes: hostd's own (unreachable subnets, those through container
    // veths), IPv4; the host's DHCP may add or renew its routes meanwhile.
    let kernel = one_line(
        guest,
        "echo links $(ls /sys/class/net | wc -l) addrs $(busybox ip -o addr | wc -l) \
         routes $(busybox ip -4 route show table all | grep -c -e unreachable -e mkv) \
         netns $(ls /run/hostd/netns | wc -l)",
    );
    let status = one_line(guest, "hostd status");
    // From the network counts up to the limits, which move (tasks, memory).
    let network = status
        .find("\"network\":")
        .map(|i| {
            let rest = &status[i..];
            rest[..rest.find(",\"limits\":").unwrap_or(rest.len())].to_string()
        })
        .unwrap_or_else(|| panic!("no network counts in {status}"));
    vec![kernel, network]
}

/// The counts become `want` within two minutes: a removed container's
/// veth and route go when the kernel destroys its namespace, after `rm` has
/// answered. The kernel does that in one work queue, and after 200 quick
/// runs under TCG on a loaded machine it can lag by tens of seconds.
fn assert_counts(guest: &mut Guest, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = counts(guest);
        if now == want {
            return;
        }
        if Instant::now() >= deadline {
            let routes = guest.run("busybox ip route show table all", COMMAND_TIMEOUT);
            panic!(
                "counts {now:?}, want {want:?}; routes:\n{}",
                routes.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn nat_published_ports_direct_leases_registries_and_no_leaks_in_a_guest() {
    if !registry_tools() {
        return;
    }
    let work = scratch("network-guest");
    let archive = image_archive(&work, "bb", "bb", "sh");
    let registry = Registry::start(&work.join("registry"), "", None);
    let built_host = registry.host();
    let port = built_host.rsplit(':').next().unwrap().to_string();
    let guest_host = format!("10.0.2.2:{port}");
    push(&built_host, "bb", "test/bb:1");
    push(&built_host, "three", "test/three:1");
    let certs = crate::docker_guest::make_certs(&work);
    let body = format!(
        r#"hostname = "mkhost-net"

[docker]
tls_dir = "{}"

[boot]
min_ram_mib = 256                 # three boot-time images; the guest has 512

[registries]
insecure = ["{built_host}", "{guest_host}"]

[container_networks.rack]
driver = "direct"
parent = "eth1"

[[container]]
name = "web"
archive = "{}"
image = "bb"
command = ["sh", "-c", "mkdir -p /www; echo hello-web > /www/index.html; exec busybox httpd -f -p 80 -h /www"]
publish = ["8080:80"]
restart = "always"

[[container]]
name = "built"
image = "{built_host}/test/bb:1"
command = ["sh", "-c", "echo built-ran; exec busybox sleep 100000"]

[[container]]
name = "booted"
image = "{guest_host}/test/three:1"
pull = "boot"
command = ["sh", "-c", "busybox cat /etc/three; exec busybox sleep 100000"]
"#,
        certs.server.display(),
        archive.display()
    );
    let dir = build_custom(&work, "net", "qemu.toml", &body);
    let outside = serve("hello-from-the-build-machine");
    let (web_fwd, direct_fwd) = (free_port(), free_port());
    let (docker_fwd, docker_web_fwd) = (free_port(), free_port());
    let mut args = support::pxe_args(&dir, "512", "");
    args.extend([
        "-netdev".into(),
        format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{web_fwd}-:8080,\
             hostfwd=tcp:127.0.0.1:{docker_fwd}-:2376,hostfwd=tcp:127.0.0.1:{docker_web_fwd}-:8081"
        ),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
        "-netdev".into(),
        "user,id=n1,net=10.0.3.0/24".into(),
        "-device".into(),
        "virtio-net-pci,netdev=n1".into(),
    ]);
    let mut guest = Guest::start_interactive(&args, &work);
    guest.wait_for("mkhost: ready", BOOT_TIMEOUT);
    let started = guest.wait_for("boot-time containers:", BOOT_TIMEOUT);
    assert!(
        started.contains("started [web, built, booted]"),
        "{started}"
    );
    if !guest.log.iter().any(|l| l.contains("debug shell on")) {
        guest.wait_for("debug shell on", BOOT_TIMEOUT);
    }
    std::thread::sleep(Duration::from_millis(500));

    // Registries: the image mkhost build pulled and embedded, the one hostd
    // pulled at boot, and one pulled from the shell (its layer is the
    // embedded image's: only the manifest and config come).
    let built = one_line(&mut guest, "hostd logs built");
    // (hostd's own log lines reach the console too.)
    assert!(
        built.lines().any(|l| l.ends_with(" stdout built-ran")),
        "{built}"
    );
    let booted = one_line(&mut guest, "hostd logs booted");
    assert!(booted.lines().any(|l| l.ends_with(" stdout 3")), "{booted}");
    let mode = one_line(&mut guest, "busybox stat -c %a /run/mkhost/registries.json");
    assert!(mode.lines().any(|l| l == "600"), "{mode}");
    let pulled = guest
        .run(
            &format!("hostd pull {guest_host}/test/bb:1"),
            COMMAND_TIMEOUT,
        )
        .join("\n");
    assert!(
        pulled.contains(&format!("pulled {guest_host}/test/bb:1 (sha256:"))
            && pulled.contains("1 blobs already present"),
        "{pulled}"
    );
    let ran = one_line(
        &mut guest,
        &format!("hostd run --rm --network none {guest_host}/test/bb:1 sh -c 'echo pulled-ran'"),
    );
    assert!(ran.lines().any(|l| l == "pulled-ran"), "{ran}");
    drop(registry);

    // NAT: a container reaches the build machine.
    let fetched = one_line(
        &mut guest,
        &format!("hostd run --rm bb sh -c \"{}\"", get("10.0.2.2", outside)),
    );
    assert!(
        fetched.contains("hello-from-the-build-machine"),
        "{fetched}"
    );

    // The published port: from the build machine, the guest's localhost,
    // and another container through the guest's own address (hairpin).
    fetch_until(web_fwd, "hello-web");
    let local = one_line(&mut guest, &get("127.0.0.1", 8080));
    assert!(local.contains("hello-web"), "{local}");
    let hairpin = one_line(
        &mut guest,
        &format!("hostd run --rm bb sh -c \"{}\"", get("10.0.2.15", 8080)),
    );
    assert!(hairpin.contains("hello-web"), "{hairpin}");
    let ports = one_line(&mut guest, "hostd port web");
    assert_eq!(ports, "80/tcp -> 0.0.0.0:8080");

    // The image's init leaves `/` shared, so containers copy the spawner's
    // mount namespace, which holds none of the host's network namespace
    // files (the host has one per networked container, web's among them).
    let copied = one_line(
        &mut guest,
        "z=$(cat /run/hostd/zygote.pid); for d in /proc/[0-9]*; do \
           [ \"$(cut -d' ' -f4 $d/stat 2>/dev/null)\" = \"$z\" ] || continue; \
           for f in $d/fd/*; do l=$(readlink $f); case $l in mnt:*) \
             [ \"$l\" != \"$(readlink $d/ns/mnt)\" ] && echo \"copied \
               $(busybox nsenter --mount=$f cat /proc/self/mountinfo | grep -c nsfs) \
               host $(grep -c nsfs /proc/self/mountinfo)\";; esac; done; done",
    );
    let fields: Vec<&str> = copied.split_whitespace().collect();
    assert!(
        matches!(fields[..], ["copied", "0", "host", n] if n.parse::<u32>().is_ok_and(|n| n >= 1)),
        "{copied}"
    );

    // The Docker API over mutual TLS, from the build machine.
    crate::docker_guest::check(&mut guest, &certs, docker_fwd, docker_web_fwd, "bb");

    // direct: its own lease from the second NIC's DHCP server, reachable
    // at that address.
    let ran = guest.run(
        "hostd run -d --name d1 --network rack bb sh -c 'mkdir -p /www; echo hello-direct > /www/index.html; exec busybox httpd -f -p 80 -h /www'; echo rc=$?",
        COMMAND_TIMEOUT,
    );
    let networks = guest.run(
        "hostd network ls; cat /run/mkhost/networks.json",
        COMMAND_TIMEOUT,
    );
    assert!(
        ran.iter().any(|l| l == "rc=0"),
        "{ran:?}\n{}",
        networks.join("\n")
    );
    let ps = guest.run("hostd ps", COMMAND_TIMEOUT).join("\n");
    let address = ps
        .lines()
        .find(|l| l.starts_with("d1 "))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("rack:")))
        .and_then(|w| w.strip_prefix("rack:"))
        .unwrap_or_else(|| panic!("no address for d1 in\n{ps}"))
        .to_string();
    assert!(address.starts_with("10.0.3."), "{address}");
    let added = guest.monitor(&format!(
        "hostfwd_add n1 tcp:127.0.0.1:{direct_fwd}-{address}:80"
    ));
    assert!(!added.contains("rror"), "{added}");
    fetch_until(direct_fwd, "hello-direct");

    // No leaks: 200 runs with a published port, then containers started
    // while hostd is killed; everything removed again.
    // The baseline once only the boot-time containers' veths are left (web,
    // built, booted): the `--rm` runs' veths outlive them until the
    // kernel's namespace cleanup gets to them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !one_line(&mut guest, "echo veths=$(ls /sys/class/net | grep -c ^mkv)")
        .lines()
        .any(|l| l == "veths=3")
    {
        assert!(Instant::now() < deadline, "veths of --rm runs never went");
        std::thread::sleep(Duration::from_secs(1));
    }
    let baseline = counts(&mut guest);
    let churn = guest.run(
        "i=0; while [ $i -lt 200 ]; do hostd run --rm -p 9000:80 bb true || echo FAILED; i=$((i+1)); done",
        Duration::from_secs(900),
    );
    assert!(!churn.iter().any(|l| l.contains("FAILED")), "{churn:?}");
    assert_counts(&mut guest, &baseline);
    let status = one_line(&mut guest, "hostd status");
    // On a host booted from the image, hostd holds CAP_SYS_RESOURCE: the
    // daemon and the zygote raise their descriptor limits to fs.nr_open.
    for process in ["daemon", "zygote"] {
        let files = status
            .split(&format!("\"{process}_files\":{{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("no {process}_files in {status}"));
        assert!(files.ends_with("\"limit\":1048576"), "{process}: {status}");
    }
    assert!(status.contains("\"bound_by\":"), "{status}");
    let daemon = status
        .split("\"pid\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no pid in {status}"))
        .to_string();
    // The kill lands while the tenth or eleventh container is being made;
    // runs meanwhile fail until init has restarted hostd. The marker is
    // computed, so the console's echo of the typed line does not match it.
    guest.send_line(&format!(
        "(i=0; while [ $i -lt 30 ]; do [ $i -eq 10 ] && (sleep 0.2; kill -9 {daemon}) & \
         hostd run -d --name k$i -p $((9100+i)):80 bb sleep 600 >/dev/null 2>&1; i=$((i+1)); \
         done; wait; echo LOOP-$((6*7))-DONE) &"
    ));
    guest.wait_for("LOOP-42-DONE", Duration::from_secs(600));
    if !guest.log.iter().any(|l| l.contains("took over zygote")) {
        guest.wait_for("took over zygote", BOOT_TIMEOUT);
    }
    assert!(
        guest
            .log
            .iter()
            .any(|l| l.contains("hostd exited (signal: 9")),
        "hostd was not killed"
    );
    let survivors = guest.run(
        "for n in $(hostd ps | busybox awk '/^k[0-9]/{print $1}'); do hostd rm -f $n >/dev/null && echo removed $n; done",
        Duration::from_secs(300),
    );
    assert!(
        !survivors.is_empty(),
        "no container started around the kill"
    );
    assert_counts(&mut guest, &baseline);
    // The web container and the direct one kept working across it all.
    fetch_until(web_fwd, "hello-web");
    fetch_until(direct_fwd, "hello-direct");
}
