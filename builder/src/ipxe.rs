//! The iPXE scripts `mkhost serve` renders per request, and the machine table
//! that gives each MAC address its identity.
//!
//! A DHCP boot file of plain `http://server:port/boot.ipxe` gets a two-line
//! script that asks again with the booting NIC's MAC address
//! (`chain .../boot.ipxe?mac=${netX/mac}`; `netX` is iPXE's name for the most
//! recently opened network device, the one that booted). With `?mac=` the answer
//! boots the kernel and initramfs with the profile's command line plus
//! `mkhost.hostname=` and the machine's own arguments. The kernel and initramfs
//! URLs carry the MAC too, so the server's log names the machine on every fetch;
//! `--name` keeps iPXE's image names plain (`initrd=initramfs.img` must match it
//! for the kernel's EFI stub).
//!
//! Everything here is pure: the server passes in the base URL and the MAC.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::clip;
use crate::profile::{netboot_cmdline, normalize_mac, Machine, Origin, UnknownMachines};

/// What every machine gets unless its entry says otherwise (from the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub profile: String,
    pub hostname: String,
    pub cmdline: String,
}

/// A MAC listed twice: in the profile and again in a `--machines` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub mac: String,
    pub replaced: Origin,
    pub by: Origin,
}

/// Machines by normalized MAC address, and the policy for the others.
#[derive(Debug, Clone)]
pub struct MachineTable {
    machines: BTreeMap<String, Machine>,
    pub unknown: UnknownMachines,
}

impl MachineTable {
    /// The profile's machines; entries of `extra` (a `--machines` file) replace
    /// those of the profile with the same MAC, and each replacement is reported.
    pub fn new(
        profile: &[Machine],
        extra: &[Machine],
        unknown: UnknownMachines,
    ) -> (MachineTable, Vec<Override>) {
        let mut machines: BTreeMap<String, Machine> =
            profile.iter().map(|m| (m.mac.clone(), m.clone())).collect();
        let mut overrides = Vec::new();
        for machine in extra {
            if let Some(previous) = machines.insert(machine.mac.clone(), machine.clone()) {
                overrides.push(Override {
                    mac: machine.mac.clone(),
                    replaced: previous.origin,
                    by: machine.origin.clone(),
                });
            }
        }
        (MachineTable { machines, unknown }, overrides)
    }

    pub fn get(&self, mac: &str) -> Option<&Machine> {
        self.machines.get(mac)
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }
}

/// The answer to a `boot.ipxe` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No MAC given: a script that asks again with it.
    Chain { script: String },
    /// The boot script for this machine.
    Boot {
        script: String,
        mac: String,
        hostname: String,
        listed: bool,
    },
    /// Not listed, and the profile boots only listed machines.
    Refused { mac: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a MAC address (expected six hex pairs, like 52:54:00:12:34:56)", clip::quoted(.0))]
pub struct BadMac(pub String);

/// A Host header that is not `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad Host header {}: expected host[:port] with a DNS name, an IPv4 address or an [IPv6] address", clip::quoted(.0))]
pub struct BadHost(pub String);

/// Decides what `boot.ipxe?mac=...` (or plain `boot.ipxe`) gets.
pub fn answer(
    table: &MachineTable,
    defaults: &Defaults,
    base: &str,
    mac: Option<&str>,
) -> Result<Answer, BadMac> {
    let Some(mac) = mac else {
        return Ok(Answer::Chain {
            script: chain_script(base, &defaults.profile),
        });
    };
    let mac = normalize_mac(mac.trim()).ok_or_else(|| BadMac(mac.to_string()))?;
    match table.get(&mac) {
        Some(machine) => {
            let hostname = machine
                .hostname
                .clone()
                .unwrap_or_else(|| defaults.hostname.clone());
            Ok(Answer::Boot {
                script: boot_script(base, defaults, &mac, &hostname, &machine.cmdline, true),
                mac,
                hostname,
                listed: true,
            })
        }
        None if table.unknown == UnknownMachines::Refuse => Ok(Answer::Refused { mac }),
        None => {
            let hostname = defaults.hostname.clone();
            Ok(Answer::Boot {
                script: boot_script(base, defaults, &mac, &hostname, "", false),
                mac,
                hostname,
                listed: false,
            })
        }
    }
}

/// The script for a request without `?mac=`: ask again with the MAC.
pub fn chain_script(base: &str, profile: &str) -> String {
    format!(
        "#!ipxe\n# mkhost {profile}: ask again with this machine's MAC address\nchain {base}/boot.ipxe?mac=${{netX/mac}}\n"
    )
}

/// The script that boots one machine.
pub fn boot_script(
    base: &str,
    defaults: &Defaults,
    mac: &str,
    hostname: &str,
    machine_cmdline: &str,
    listed: bool,
) -> String {
    let cmdline = netboot_cmdline(&defaults.cmdline, hostname, machine_cmdline);
    let which = if listed {
        "listed machine"
    } else {
        "not listed: profile defaults"
    };
    format!(
        "#!ipxe\n# mkhost {profile} for {mac}: {hostname} ({which})\n\
         kernel --name vmlinuz {base}/vmlinuz?mac={mac} {cmdline}\n\
         initrd --name initramfs.img {base}/initramfs.img?mac={mac}\n\
         boot\n",
        profile = defaults.profile,
    )
}

/// `http://HOST` from the request's Host header, else (no header, or an empty
/// one) from the address the client connected to. A Host header that is not
/// a plain `host[:port]` ([`is_host`]) is refused: it goes into a script.
pub fn base_url(host: Option<&str>, local: SocketAddr) -> Result<String, BadHost> {
    match host.map(str::trim) {
        None | Some("") => Ok(format!("http://{local}")),
        Some(host) if is_host(host) => Ok(format!("http://{host}")),
        Some(host) => Err(BadHost(host.to_string())),
    }
}

/// `host[:port]`: a DNS name (letters, digits and `-` in dot-separated labels
/// of 1 to 63 characters, at most 253 in all, an optional final dot, the last
/// label not all digits), an IPv4 address or an IPv6 address in brackets;
/// the port 1 to 65535. Nothing that could end a line, start an iPXE `${...}`
/// expansion or change the URL's path.
pub fn is_host(host: &str) -> bool {
    let port_ok = |port: &str| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        return inside.parse::<Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.parse::<Ipv4Addr>().is_ok() || is_dns_name(name)
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    !name.is_empty()
        && name.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks `--public-url`: an http(s) URL without spaces, quotes or `$`; the
/// trailing `/` is dropped.
pub fn check_public_url(url: &str) -> Result<String, String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("--public-url {url:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("--public-url {url:?} has no host"));
    }
    if url
        .bytes()
        .any(|b| !(0x21..0x7f).contains(&b) || b"\"'$\\?#".contains(&b))
    {
        return Err(format!(
            "--public-url {url:?} may not contain spaces, quotes, '$', '\\', '?' or '#'"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn origin(file: &str, line: usize) -> Origin {
        Origin {
            file: PathBuf::from(file),
            line,
            column: 1,
        }
    }

    fn machine(mac: &str, hostname: Option<&str>, cmdline: &str, file: &str) -> Machine {
        Machine {
            mac: mac.into(),
            hostname: hostname.map(str::to_string),
            cmdline: cmdline.into(),
            origin: origin(file, 3),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            profile: "lab".into(),
            hostname: "mkhost-lab".into(),
            cmdline: "console=ttyS0,115200 quiet".into(),
        }
    }

    #[test]
    fn listed_machine_gets_its_identity() {
        let (table, overrides) = MachineTable::new(
            &[],
            &[machine(
                "52:54:00:12:34:56",
                Some("node-a"),
                "mkhost.ip=eth0:10.0.0.5/24",
                "m.toml",
            )],
            UnknownMachines::Default,
        );
        assert!(overrides.is_empty());
        let answer = answer(
            &table,
            &defaults(),
            "http://10.0.2.2:8080",
            Some("52-54-00-12-34-56"),
        )
        .unwrap();
        let Answer::Boot {
            script,
            mac,
            hostname,
            listed,
        } = answer
        else {
            panic!("{answer:?}")
        };
        assert_eq!(
            (mac.as_str(), hostname.as_str(), listed),
            ("52:54:00:12:34:56", "node-a", true)
        );
        assert_eq!(
            script,
            "#!ipxe\n\
             # mkhost lab for 52:54:00:12:34:56: node-a (listed machine)\n\
             kernel --name vmlinuz http://10.0.2.2:8080/vmlinuz?mac=52:54:00:12:34:56 initrd=initramfs.img console=ttyS0,115200 quiet mkhost.hostname=node-a mkhost.ip=eth0:10.0.0.5/24\n\
             initrd --name initramfs.img http://10.0.2.2:8080/initramfs.img?mac=52:54:00:12:34:56\n\
             boot\n"
        );
    }

    #[test]
    fn unknown_machines_get_defaults_or_are_refused() {
        let listed = [machine("52:54:00:00:00:01", None, "", "m.toml")];
        let (table, _) = MachineTable::new(&listed, &[], UnknownMachines::Default);
        let a = answer(&table, &defaults(), "http://s", Some("AA:BB:CC:DD:EE:FF")).unwrap();
        let Answer::Boot {
            script,
            hostname,
            listed: false,
            ..
        } = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(hostname, "mkhost-lab");
        assert!(
            script.contains(" quiet mkhost.hostname=mkhost-lab\n"),
            "{script}"
        );
        assert!(
            script.contains("vmlinuz?mac=aa:bb:cc:dd:ee:ff "),
            "{script}"
        );
        // A listed machine without a hostname gets the profile's.
        let a = answer(&table, &defaults(), "http://s", Some("52:54:00:00:00:01")).unwrap();
        assert!(
            matches!(a, Answer::Boot { ref hostname, listed: true, .. } if hostname == "mkhost-lab")
        );

        let (table, _) = MachineTable::new(&listed, &[], UnknownMachines::Refuse);
        assert_eq!(
            answer(&table, &defaults(), "http://s", Some("aa-bb-cc-dd-ee-ff")).unwrap(),
            Answer::Refused {
                mac: "aa:bb:cc:dd:ee:ff".into()
            }
        );
        assert!(matches!(
            answer(&table, &defaults(), "http://s", Some("52:54:00:00:00:01")).unwrap(),
            Answer::Boot { listed: true, .. }
        ));
    }

    #[test]
    fn without_mac_the_script_asks_again() {
        let (table, _) = MachineTable::new(&[], &[], UnknownMachines::Refuse);
        let a = answer(&table, &defaults(), "http://10.0.2.2:8080", None).unwrap();
        assert_eq!(
            a,
            Answer::Chain {
                script: "#!ipxe\n# mkhost lab: ask again with this machine's MAC address\nchain http://10.0.2.2:8080/boot.ipxe?mac=${netX/mac}\n".into()
            }
        );
        for bad in ["", "52:54:00:12:34", "52:54:00:12:34:5g", "${netX/mac}"] {
            assert_eq!(
                answer(&table, &defaults(), "http://s", Some(bad)),
                Err(BadMac(bad.into()))
            );
        }
    }

    #[test]
    fn machines_file_entries_replace_the_profiles() {
        let (table, overrides) = MachineTable::new(
            &[machine("52:54:00:00:00:01", Some("old"), "", "lab.toml")],
            &[
                machine("52:54:00:00:00:01", Some("new"), "", "m.toml"),
                machine("52:54:00:00:00:02", Some("two"), "", "m.toml"),
            ],
            UnknownMachines::Default,
        );
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.get("52:54:00:00:00:01").unwrap().hostname.as_deref(),
            Some("new")
        );
        assert_eq!(overrides.len(), 1);
        assert_eq!(overrides[0].replaced.file, PathBuf::from("lab.toml"));
    }

    #[test]
    fn base_urls() {
        let local: SocketAddr = "192.0.2.1:8080".parse().unwrap();
        for (host, url) in [
            ("10.0.2.2:8080", "http://10.0.2.2:8080"),
            ("[fe80::1]:80", "http://[fe80::1]:80"),
            ("[::1]", "http://[::1]"),
            ("boot.lab", "http://boot.lab"),
            ("Boot-1.lab.:65535", "http://Boot-1.lab.:65535"),
            ("localhost", "http://localhost"),
            ("", "http://192.0.2.1:8080"),
        ] {
            assert_eq!(base_url(Some(host), local).unwrap(), url, "{host:?}");
        }
        for evil in [
            "a b",
            "x/../y",
            "${net0/ip}",
            "h\r\nkernel",
            "a?b",
            "x:y:z",
            "x:y",
            "boot.lab:",
            "boot.lab:0",
            "boot.lab:65536",
            "boot.lab:+80",
            "[::1",
            "[zz::1]",
            "[::1]x",
            "[fe80::1%eth0]",
            "::1",
            "-a.lab",
            "a-.lab",
            "a..b",
            ".lab",
            "1.2.3.4.5",
            "300.1.1.1",
            "under_score.lab",
        ] {
            assert_eq!(
                base_url(Some(evil), local),
                Err(BadHost(evil.to_string())),
                "{evil:?}"
            );
        }
        assert!(!is_host(&format!("{}.lab", "a".repeat(64))));
        assert!(!is_host(&"a.".repeat(130)));
        assert_eq!(base_url(None, local).unwrap(), "http://192.0.2.1:8080");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(base_url(None, v6).unwrap(), "http://[::1]:80");
        let err = BadHost("x".repeat(20_000)).to_string();
        assert!(
            err.len() < 400 && err.contains("(20000 bytes)"),
            "{}",
            err.len()
        );
        let err = BadMac("A".repeat(15_000)).to_string();
        assert!(
            err.len() < 400 && err.contains("(15000 bytes)"),
            "{}",
            err.len()
        );
    }

    #[test]
    fn public_urls() {
        assert_eq!(
            check_public_url("http://boot.lab:8080/mkhost/").unwrap(),
            "http://boot.lab:8080/mkhost"
        );
        assert_eq!(check_public_url("HTTPS://b").unwrap(), "HTTPS://b");
        for bad in [
            "boot.lab",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
            "http://x/${y}",
            "http://x/?a",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }
}
