//! Addresses by DHCP for containers on `direct` networks: the first lease
//! (within a deadline, inside the container's namespace), then a keeper
//! thread per container that renews it at T1, rebinds at T2, and gives it
//! back (DHCPRELEASE) when the container goes.

use std::net::Ipv4Addr;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log::log;
use crate::net::container_link::configure_address;
use crate::net::dhcp::{Client, Lease};
use crate::net::netns::NetNs;

use crate::net::container_link::CONTAINER_IFNAME as CONTAINER_LINK;

/// Gets a first lease for the container whose namespace is `ns` and whose
/// `eth0` has `mac`; configures it. Fails after `timeout` with a message
/// naming the NIC.
pub fn first_lease(
    ns: &NetNs,
    mac: [u8; 6],
    hostname: &str,
    parent: &str,
    timeout: Duration,
) -> Result<Lease, String> {
    let hostname = hostname.to_string();
    let lease = ns
        .run(move || -> Result<Option<Lease>, String> {
            let mut client =
                Client::new(CONTAINER_LINK, mac, &hostname).map_err(|e| e.to_string())?;
            client
                .acquire_until(None, Some(Instant::now() + timeout), &mut |_| {})
                .map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot enter the container's network namespace: {e}"))??;
    let lease = lease.ok_or_else(|| {
        format!(
            "no DHCP server answered on {parent} within {} s: check that the NIC is cabled \
             to a network with a DHCP server, or give the network a subnet for static addresses",
            timeout.as_secs()
        )
    })?;
    configure_address(ns, lease.address, lease.prefix, lease.gateway).map_err(|e| e.to_string())?;
    Ok(lease)
}

/// A lease kept alive by a thread; dropping it stops the thread and
/// releases the lease.
pub struct Keeper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Keeps `lease` for the container `id` (`eth0` with `mac` in `ns`).
    pub fn start(id: &str, ns: NetNs, mac: [u8; 6], lease: Lease) -> Keeper {
        let (stop, stopped) = mpsc::channel::<()>();
        let id = id.to_string();
        let thread = std::thread::Builder::new()
            .name("dhcp-keeper".into())
            .spawn(move || {
                let ns_ref = &ns;
                let who = id.clone();
                let result = ns.run(move || keep(&id, ns_ref, mac, lease, &stopped));
                if let Err(e) = result {
                    log(&format!("container {who}: DHCP keeper cannot run: {e}"));
                }
            })
            .ok();
        Keeper {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for `until` unless told to stop; true when stopped.
fn wait(stopped: &mpsc::Receiver<()>, until: Instant) -> bool {
    !matches!(
        stopped.recv_timeout(until.saturating_duration_since(Instant::now())),
        Err(RecvTimeoutError::Timeout)
    )
}

fn keep(id: &str, ns: &NetNs, mac: [u8; 6], mut lease: Lease, stopped: &mpsc::Receiver<()>) {
    let mut client = match Client::new(CONTAINER_LINK, mac, "") {
        Ok(c) => c,
        Err(e) => {
            log(&format!("container {id}: DHCP keeper: {e}"));
            return;
        }
    };
    let mut bound_at = Instant::now();
    loop {
        if wait(stopped, bound_at + lease.t1) {
            let _ = client.release(&lease);
            return;
        }
        let t2 = bound_at + lease.t2;
        let end = bound_at + lease.lease;
        let renewed = loop {
            let renewing = Instant::now() < t2;
            match client.extend(&lease, renewing) {
                Ok(Some(Some(new))) => break Some(new),
                Ok(Some(None)) => break None,
                Ok(None) | Err(_) => {}
            }
            let retry = Instant::now()
                + Duration::from_secs(60).min(end.saturating_duration_since(Instant::now()) / 2);
            if Instant::now() >= end || wait(stopped, retry) {
                if Instant::now() < end {
                    let _ = client.release(&lease);
                    return;
                }
                break None;
            }
        };
        match renewed {
            Some(new) => {
                if new.address != lease.address || new.prefix != lease.prefix {
                    log(&format!(
                        "container {id}: DHCP moved it from {} to {}",
                        lease.address, new.address
                    ));
                }
                if let Err(e) = configure_address(ns, new.address, new.prefix, new.gateway) {
                    log(&format!(
                        "container {id}: cannot apply its renewed lease: {e}"
                    ));
                }
                lease = new;
                bound_at = Instant::now();
            }
            None => {
                log(&format!(
                    "container {id}: lost its DHCP lease of {} (refused or expired); it keeps the \
                     address until it is removed",
                    lease.address
                ));
                return;
            }
        }
    }
}

/// A lease rebuilt from a record after a daemon restart: renewed at once.
pub fn adopted_lease(
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    server: Ipv4Addr,
) -> Lease {
    Lease {
        address,
        prefix,
        gateway,
        dns: Vec::new(),
        domain: None,
        server,
        lease: Duration::from_secs(120),
        t1: Duration::ZERO,
        t2: Duration::from_secs(60),
    }
}
