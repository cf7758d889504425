//! Address management for one network: which addresses of its subnet are
//! taken, by whom. Pure bookkeeping; the truth it is rebuilt from after a
//! daemon restart is the containers' records ([`mkhost_shared::network::Attachment`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use mkhost_shared::network::Subnet;

/// The addresses handed out on one network.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    gateway: Ipv4Addr,
    taken: BTreeMap<Ipv4Addr, String>,
    /// Where the next search starts (addresses are not reused at once, so
    /// a name cached for a removed container does not reach a new one).
    next: u32,
}

impl Ipam {
    /// An empty pool for `subnet`; `gateway` is never handed out.
    pub fn new(subnet: Subnet, gateway: Ipv4Addr) -> Ipam {
        Ipam {
            subnet,
            gateway,
            taken: BTreeMap::new(),
            next: 2,
        }
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
            && ip != self.subnet.address
            && ip != self.subnet.broadcast()
            && ip != self.gateway
    }

    /// Takes `wanted` (an `--ip`) or the next free address for `owner`.
    pub fn allocate(&mut self, owner: &str, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
        if let Some(ip) = wanted {
            if !self.usable(ip) {
                return Err(format!(
                    "address {ip} is not a usable host address of {} (gateway {})",
                    self.subnet, self.gateway
                ));
            }
            if let Some(other) = self.taken.get(&ip) {
                return Err(format!("address {ip} is already used by container {other}"));
            }
            self.taken.insert(ip, owner.to_string());
            return Ok(ip);
        }
        let size = u32::try_from(self.subnet.size()).unwrap_or(u32::MAX);
        for step in 0..size {
            let n = 1 + (self.next - 1 + step) % (size - 1);
            let Some(ip) = self.subnet.nth(n) else {
                continue;
            };
            if self.usable(ip) && !self.taken.contains_key(&ip) {
                self.taken.insert(ip, owner.to_string());
                self.next = n + 1;
                return Ok(ip);
            }
        }
        Err(format!(
            "no free address left in {} ({} in use)",
            self.subnet,
            self.taken.len()
        ))
    }

    /// Records `ip` as `owner`'s (re-adoption); false if someone else has it.
    pub fn adopt(&mut self, owner: &str, ip: Ipv4Addr) -> bool {
        match self.taken.get(&ip) {
            Some(other) => other == owner,
            None => {
                self.taken.insert(ip, owner.to_string());
                true
            }
        }
    }

    /// Frees `ip` if `owner` holds it.
    pub fn free(&mut self, owner: &str, ip: Ipv4Addr) {
        if self.taken.get(&ip).is_some_and(|o| o == owner) {
            self.taken.remove(&ip);
        }
    }

    /// Addresses in use.
    pub fn in_use(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Ipam {
        let subnet: Subnet = s.parse().unwrap();
        Ipam::new(subnet, subnet.first_host())
    }

    #[test]
    fn hands_out_each_address_once_and_skips_the_gateway() {
        let mut ipam = pool("10.1.0.0/29");
        let got: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("c{i}"), None).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        let err = ipam.allocate("c5", None).unwrap_err();
        assert!(err.contains("no free address left in 10.1.0.0/29"), "{err}");
        ipam.free("c2", "10.1.0.4".parse().unwrap());
        assert_eq!(ipam.allocate("c6", None).unwrap().to_string(), "10.1.0.4");
        ipam.free("someone-else", "10.1.0.2".parse().unwrap());
        assert_eq!(ipam.in_use(), 5);
    }

    #[test]
    fn does_not_reuse_a_freed_address_at_once() {
        let mut ipam = pool("10.1.0.0/24");
        let a = ipam.allocate("a", None).unwrap();
        ipam.free("a", a);
        let b = ipam.allocate("b", None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn fixed_addresses_are_checked() {
        let mut ipam = pool("10.1.0.0/24");
        let ip = "10.1.0.9".parse().unwrap();
        assert_eq!(ipam.allocate("a", Some(ip)).unwrap(), ip);
        assert!(ipam
            .allocate("b", Some(ip))
            .unwrap_err()
            .contains("already used by container a"));
        for bad in ["10.1.0.1", "10.1.0.0", "10.1.0.255", "10.2.0.5"] {
            let err = ipam.allocate("b", Some(bad.parse().unwrap())).unwrap_err();
            assert!(err.contains("not a usable host address"), "{err}");
        }
        assert!(ipam.adopt("a", ip));
        assert!(!ipam.adopt("b", ip));
        assert!(ipam.adopt("b", "10.1.0.10".parse().unwrap()));
    }
}
