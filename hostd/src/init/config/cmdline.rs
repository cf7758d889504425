//! The `mkhost.*` parameters of the kernel command line (`/proc/cmdline`).
//!
//! ```text
//! mkhost.hostname=NAME                 hostname
//! mkhost.ip=IFACE:ADDR/PREFIX[:GW]     static IPv4 address (repeat per interface)
//! mkhost.dns=IP[,IP...]                DNS servers for /etc/resolv.conf
//! mkhost.dhcp=0|1                      DHCP on links without a static address
//! mkhost.dhcp_timeout=MS               how long boot waits for a lease
//! mkhost.debug_shell=0|1               busybox shell on the console
//! mkhost.console=DEV                   console device for the shell (e.g. ttyS1)
//! mkhost.reboot                        reboot instead of powering off at shutdown
//! mkhost.state=SELECTOR                the state disk (label:NAME, serial:S, ..., none)
//! mkhost.state.format=if-blank|never   may init format a blank state disk
//! ```
//!
//! These win over `host.toml` and `boot.json` ([`crate::init::config::host_config`]).
//! Parsing is pure: bad values and unknown `mkhost.*` keys become
//! [`KernelParams::problems`] for the console, never errors.

use std::collections::BTreeMap;

use mkhost_shared::state_disk::{DiskSelector, FormatPolicy};

use crate::init::config::host_config::{parse_bool, Overrides, StaticAddr};

/// The `mkhost.*` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelParams {
    /// Host settings (hostname, network, debug shell).
    pub overrides: Overrides,
    /// `mkhost.reboot`: reboot instead of power off.
    pub reboot: bool,
    /// `mkhost.console=`: device name below /dev for the debug shell.
    pub console: Option<String>,
    /// What was wrong (bad values, unknown keys), for warnings.
    pub problems: Vec<String>,
}

/// Splits a kernel command line into words; double quotes group spaces
/// (`a="b c"` is one word `a=b c`), as the kernel does.
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// The value of `key=value` on the kernel command line (the last one wins).
pub fn value(cmdline: &str, key: &str) -> Option<String> {
    words(cmdline)
        .into_iter()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// Parses `IFACE:ADDR/PREFIX[:GATEWAY]`.
pub fn parse_ip(value: &str) -> Result<(String, StaticAddr), String> {
    let mut parts = value.splitn(3, ':');
    let iface = parts.next().unwrap_or_default();
    let cidr = parts
        .next()
        .ok_or_else(|| "expected IFACE:ADDR/PREFIX[:GATEWAY]".to_string())?;
    let gateway = parts.next().filter(|g| !g.is_empty());
    if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
        return Err(format!("bad interface name {iface:?}"));
    }
    let addr = StaticAddr::parse(cidr, gateway)?;
    Ok((iface.to_string(), addr))
}

/// Parses every `mkhost.*` word of `cmdline`.
pub fn parse(cmdline: &str) -> KernelParams {
    let mut params = KernelParams::default();
    let mut interfaces = BTreeMap::new();
    for word in words(cmdline) {
        let Some(rest) = word.strip_prefix("mkhost.") else {
            continue;
        };
        let (key, val) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        let mut bad = |why: String| params.problems.push(format!("mkhost.{key}: {why}"));
        match (key, val) {
            ("hostname", Some(v)) => match mkhost_shared::boot_config::check_hostname(v) {
                Ok(()) => params.overrides.hostname = Some(v.to_string()),
                Err(why) => bad(format!("{v:?} {why}")),
            },
            ("ip", Some(v)) => match parse_ip(v) {
                Ok((iface, addr)) => {
                    interfaces.insert(iface, addr);
                }
                Err(why) => bad(format!("{v:?}: {why}")),
            },
            ("dns", Some(v)) => {
                let mut list = Vec::new();
                for item in v.split(',').filter(|s| !s.is_empty()) {
                    match item.parse() {
                        Ok(ip) => list.push(ip),
                        Err(_) => bad(format!("{item:?} is not an IP address")),
                    }
                }
                params.overrides.dns = Some(list);
            }
            ("dhcp", Some(v)) => match parse_bool(v) {
                Some(b) => params.overrides.dhcp = Some(b),
                None => bad(format!("{v:?} is not 0 or 1")),
            },
            ("dhcp_timeout", Some(v)) => match v.parse::<u64>() {
                Ok(ms) => params.overrides.dhcp_timeout_ms = Some(ms),
                Err(_) => bad(format!("{v:?} is not a number of milliseconds")),
            },
            ("debug_shell", Some(v)) => match parse_bool(v) {
                Some(b) => params.overrides.debug_shell = Some(b),
                None => bad(format!("{v:?} is not 0 or 1")),
            },
            ("state", Some(v)) => match DiskSelector::parse(v) {
                Ok(_) => params.overrides.state_disk = Some(v.to_string()),
                Err(why) => bad(why),
            },
            ("state.format", Some(v)) => match v {
                "if-blank" => params.overrides.state_format = Some(FormatPolicy::IfBlank),
                "never" => params.overrides.state_format = Some(FormatPolicy::Never),
                _ => bad(format!("{v:?} is not if-blank or never")),
            },
            ("reboot", None) => params.reboot = true,
            ("reboot", Some(v)) => match parse_bool(v) {
                Some(b) => params.reboot = b,
                None => bad(format!("{v:?} is not 0 or 1")),
            },
            ("console", Some(v)) => {
                let dev = v.trim_start_matches("/dev/");
                if dev.is_empty() || dev.contains("..") {
                    bad(format!("bad device {v:?}"));
                } else {
                    params.console = Some(dev.to_string());
                }
            }
            (_, None) => bad("needs a value".to_string()),
            _ => bad("unknown parameter".to_string()),
        }
    }
    if !interfaces.is_empty() {
        params.overrides.interfaces = Some(interfaces);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn splits_words_with_quotes() {
        assert_eq!(words("a b=\"c d\" \"e\"  f\n"), ["a", "b=c d", "e", "f"]);
        assert!(words("  \n").is_empty());
    }

    #[test]
    fn value_takes_the_last() {
        let line = "console=ttyS0 mkhost.hostname=a quiet mkhost.hostname=lab-b\n";
        assert_eq!(value(line, "mkhost.hostname").as_deref(), Some("lab-b"));
        assert_eq!(value(line, "console").as_deref(), Some("ttyS0"));
        assert_eq!(value(line, "quiet"), None);
    }

    #[test]
    fn parses_every_parameter() {
        let p = parse(
            "quiet mkhost.hostname=edge-1 mkhost.ip=eth0:10.0.0.5/24:10.0.0.1 \
             mkhost.ip=eth1:192.168.1.2/16 mkhost.dns=1.1.1.1,2606:4700::1111 mkhost.dhcp=0 \
             mkhost.dhcp_timeout=2500 mkhost.debug_shell=yes mkhost.reboot mkhost.console=/dev/ttyS1",
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let o = &p.overrides;
        assert_eq!(o.hostname.as_deref(), Some("edge-1"));
        assert_eq!(o.dhcp, Some(false));
        assert_eq!(o.dhcp_timeout_ms, Some(2500));
        assert_eq!(o.debug_shell, Some(true));
        assert!(p.reboot);
        assert_eq!(p.console.as_deref(), Some("ttyS1"));
        let dns = o.dns.as_ref().unwrap();
        assert_eq!(dns[0], IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)));
        assert!(dns[1].is_ipv6());
        let ifs = o.interfaces.as_ref().unwrap();
        assert_eq!(
            ifs["eth0"],
            StaticAddr {
                address: Ipv4Addr::new(10, 0, 0, 5),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            }
        );
        assert_eq!(ifs["eth1"].gateway, None);
        assert_eq!(ifs["eth1"].prefix, 16);
    }

    #[test]
    fn state_parameters() {
        let p = parse("mkhost.state=serial:state1 mkhost.state.format=if-blank");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.overrides.state_disk.as_deref(), Some("serial:state1"));
        assert_eq!(p.overrides.state_format, Some(FormatPolicy::IfBlank));
        let p = parse("mkhost.state=vdb mkhost.state.format=always mkhost.state=path:/tmp/x");
        assert_eq!(p.overrides, Overrides::default());
        assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
        assert!(p.problems[0].starts_with("mkhost.state: disk \"vdb\" has no kind"));
        assert!(p.problems[1].contains("not if-blank or never"));
    }

    #[test]
    fn bad_values_are_problems_not_errors() {
        let p = parse(
            "mkhost.hostname=bad_name! mkhost.ip=eth0 mkhost.ip=eth0:10.0.0.300/24 \
             mkhost.dhcp=maybe mkhost.dhcp_timeout=soon mkhost.colour=red mkhost.hostname",
        );
        assert_eq!(p.overrides, Overrides::default());
        assert_eq!(p.problems.len(), 7, "{:?}", p.problems);
        assert!(p
            .problems
            .iter()
            .any(|m| m.contains("mkhost.colour: unknown")));
        assert!(!p.reboot);
    }

    #[test]
    fn ip_parsing() {
        assert!(parse_ip("eth0:10.0.0.1/33").is_err());
        assert!(parse_ip(":10.0.0.1/8").is_err());
        assert!(parse_ip("eth0:10.0.0.1").is_err(), "prefix is required");
        assert!(parse_ip("eth0:10.0.0.1/8:nope").is_err());
        let (i, a) = parse_ip("enp3s0:10.1.2.3/8:").unwrap();
        assert_eq!(i, "enp3s0");
        assert_eq!(a.gateway, None);
    }
}
