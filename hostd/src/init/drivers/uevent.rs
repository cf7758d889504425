//! Kernel uevents: what the kernel says about devices as they come and go.
//!
//! Every device the kernel adds, removes or binds is announced on the
//! `NETLINK_KOBJECT_UEVENT` socket ([`crate::os::uevent_socket`]) as one
//! datagram: a header `ACTION@DEVPATH`, then `KEY=VALUE` fields, each ended
//! by a NUL byte:
//!
//! ```text
//! add@/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0\0ACTION=add\0
//! DEVPATH=/devices/pci0000:00/...\0SUBSYSTEM=usb\0DEVTYPE=usb_interface\0
//! MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00\0SEQNUM=1234\0
//! ```
//!
//! [`parse`] reads one datagram without allocating (the fields borrow the
//! buffer) and refuses anything that is not plainly a kernel event: a udev
//! monitor packet (`libudev` magic), a header without `@`, an unknown
//! action, a header that disagrees with its `ACTION=`/`DEVPATH=` fields, a
//! device path that is not absolute or climbs with `..`, text that is not
//! UTF-8 in the fields init uses, oversized values. [`classify`] then says
//! what init does with an event; everything else (queues, virtual network
//! devices such as veths, bridges) is ignored without a system call.

/// Largest datagram read (the kernel's own limit is 2 KiB of fields plus
/// the header).
pub const MAX_PACKET: usize = 8192;
/// Longest modalias accepted (the kernel's are well under 256 bytes).
pub const MAX_MODALIAS: usize = 512;

/// What happened to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A device was added.
    Add,
    /// A device was removed.
    Remove,
    /// A device changed (media, size, ...).
    Change,
    /// A device was renamed or moved.
    Move,
    /// A CPU or memory block went online.
    Online,
    /// ... or offline.
    Offline,
    /// A driver was bound to the device.
    Bind,
    /// A driver was unbound from the device.
    Unbind,
}

impl Action {
    /// The kernel's word for it.
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "change" => Action::Change,
            "move" => Action::Move,
            "online" => Action::Online,
            "offline" => Action::Offline,
            "bind" => Action::Bind,
            "unbind" => Action::Unbind,
            _ => return None,
        })
    }
}

/// One kernel uevent, borrowing the received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent<'a> {
    /// What happened.
    pub action: Action,
    /// The device's path below `/sys` (`/devices/...`).
    pub devpath: &'a str,
    /// `SUBSYSTEM=`: `pci`, `usb`, `block`, `net`, `scsi`, ...
    pub subsystem: Option<&'a str>,
    /// `DEVTYPE=`: `disk`, `partition`, `usb_interface`, ...
    pub devtype: Option<&'a str>,
    /// `MODALIAS=`: what the device asks a driver for.
    pub modalias: Option<&'a str>,
    /// `DEVNAME=`: the node below `/dev` (`sda1`).
    pub devname: Option<&'a str>,
    /// `INTERFACE=`: a network interface's name.
    pub interface: Option<&'a str>,
    /// `SEQNUM=`: the kernel's event counter.
    pub seqnum: Option<u64>,
}

/// Why a datagram was not taken as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Empty, or only NUL bytes.
    Empty,
    /// A udev monitor packet (`libudev\0` magic), not the kernel's.
    Udev,
    /// No `ACTION@DEVPATH` header.
    Header,
    /// An action word the kernel does not send.
    Action,
    /// The device path is not absolute or has `..` or empty components.
    Devpath,
    /// `ACTION=` or `DEVPATH=` disagree with the header.
    Mismatch,
    /// A field init uses is not UTF-8 or too long.
    Field,
}

fn clean_devpath(path: &str) -> bool {
    path.starts_with('/')
        && path.len() < 1024
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Parses one datagram (see the module documentation for what is refused).
/// Unknown fields are skipped; a field without `=` is skipped; the last
/// field may lack its NUL.
pub fn parse(packet: &[u8]) -> Result<Uevent<'_>, Refused> {
    let packet = &packet[..packet.len().min(MAX_PACKET)];
    if packet.starts_with(b"libudev\0") {
        return Err(Refused::Udev);
    }
    let mut fields = packet.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = fields.next().ok_or(Refused::Empty)?;
    let header = std::str::from_utf8(header).map_err(|_| Refused::Header)?;
    let (action_word, devpath) = header.split_once('@').ok_or(Refused::Header)?;
    let action = Action::parse(action_word).ok_or(Refused::Action)?;
    if !clean_devpath(devpath) {
        return Err(Refused::Devpath);
    }
    let mut event = Uevent {
        action,
        devpath,
        subsystem: None,
        devtype: None,
        modalias: None,
        devname: None,
        interface: None,
        seqnum: None,
    };
    for field in fields {
        let Some(eq) = field.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&field[..eq], &field[eq + 1..]);
        let wanted = matches!(
            key,
            b"ACTION"
                | b"DEVPATH"
                | b"SUBSYSTEM"
                | b"DEVTYPE"
                | b"MODALIAS"
                | b"DEVNAME"
                | b"INTERFACE"
                | b"SEQNUM"
        );
        if !wanted {
            continue;
        }
        let value = std::str::from_utf8(value).map_err(|_| Refused::Field)?;
        if value.len() > MAX_MODALIAS || value.chars().any(char::is_control) {
            return Err(Refused::Field);
        }
        match key {
            b"ACTION" if value != action_word => return Err(Refused::Mismatch),
            b"DEVPATH" if value != devpath => return Err(Refused::Mismatch),
            b"SUBSYSTEM" => event.subsystem = Some(value),
            b"DEVTYPE" => event.devtype = Some(value),
            b"MODALIAS" => event.modalias = Some(value).filter(|v| !v.is_empty()),
            b"DEVNAME" => event.devname = Some(value).filter(|v| safe_name(v)),
            b"INTERFACE" => event.interface = Some(value).filter(|v| safe_name(v)),
            b"SEQNUM" => event.seqnum = value.parse().ok(),
            _ => {}
        }
    }
    Ok(event)
}

/// A device or interface name init may put into a path: one component,
/// no `..`, at most 255 bytes (`DEVNAME` may name a subdirectory such as
/// `bus/usb/001/002`, which init never needs).
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name != "." && name != ".." && !name.contains('/')
}

/// What init does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work<'a> {
    /// A new device asks for a driver: look its modalias up.
    Driver {
        /// The modalias.
        modalias: &'a str,
    },
    /// A whole disk appeared or went away.
    Disk {
        /// `sda`, `nvme0n1`, ...
        name: &'a str,
        /// Added (true) or removed.
        added: bool,
    },
    /// A partition appeared (the boot stick's ESP may be among them).
    Partition {
        /// `sda1`, ...
        name: &'a str,
    },
    /// A physical network interface appeared.
    Nic {
        /// Its name (`eth1`).
        name: &'a str,
    },
    /// Nothing to do.
    Ignore,
}

/// Disks that are never a boot stick or a data disk worth a line.
pub fn is_virtual_disk(name: &str) -> bool {
    ["loop", "ram", "zram", "nbd", "dm-", "md", "sr"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// What to do with `event`. Devices under `/devices/virtual/` (veths,
/// bridges, tun/tap, loop devices, ...) are created by software on this
/// host and need nothing from init.
pub fn classify<'a>(event: &Uevent<'a>) -> Work<'a> {
    if event.devpath.starts_with("/devices/virtual/") {
        return Work::Ignore;
    }
    match (event.action, event.subsystem) {
        (Action::Add, Some("block")) | (Action::Remove, Some("block")) => {
            let Some(name) = event.devname else {
                return Work::Ignore;
            };
            if is_virtual_disk(name) {
                return Work::Ignore;
            }
            match (event.devtype, event.action) {
                (Some("disk"), action) => Work::Disk {
                    name,
                    added: action == Action::Add,
                },
                (Some("partition"), Action::Add) => Work::Partition { name },
                _ => Work::Ignore,
            }
        }
        (Action::Add, Some("net")) => match event.interface {
            Some(name) => Work::Nic { name },
            None => Work::Ignore,
        },
        (Action::Add, _) => match event.modalias {
            Some(modalias) => Work::Driver { modalias },
            None => Work::Ignore,
        },
        _ => Work::Ignore,
    }
}

/// The last component of a device path, for console lines (`2-1:1.0`).
pub fn short_devpath(devpath: &str) -> &str {
    devpath.rsplit('/').next().unwrap_or(devpath)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(header: &str, fields: &[&str]) -> Vec<u8> {
        let mut p = header.as_bytes().to_vec();
        p.push(0);
        for f in fields {
            p.extend_from_slice(f.as_bytes());
            p.push(0);
        }
        p
    }

    const USB: &str = "/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0";

    #[test]
    fn parses_a_kernel_event() {
        let p = packet(
            &format!("add@{USB}"),
            &[
                "ACTION=add",
                &format!("DEVPATH={USB}"),
                "SUBSYSTEM=usb",
                "DEVTYPE=usb_interface",
                "PRODUCT=46f4/1/0",
                "MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
                "SEQNUM=1234",
            ],
        );
        let e = parse(&p).unwrap();
        assert_eq!(e.action, Action::Add);
        assert_eq!(e.devpath, USB);
        assert_eq!(e.subsystem, Some("usb"));
        assert_eq!(e.seqnum, Some(1234));
        assert_eq!(
            classify(&e),
            Work::Driver {
                modalias: "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"
            }
        );
        assert_eq!(short_devpath(e.devpath), "2-1:1.0");
        // The last field without its NUL is still read.
        let mut p = p;
        p.pop();
        assert_eq!(parse(&p).unwrap().seqnum, Some(1234));
    }

    #[test]
    fn refuses_what_is_not_a_kernel_event() {
        assert_eq!(parse(b""), Err(Refused::Empty));
        assert_eq!(parse(b"\0\0\0"), Err(Refused::Empty));
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe rest"), Err(Refused::Udev));
        assert_eq!(parse(b"add /devices/x\0"), Err(Refused::Header));
        assert_eq!(parse(b"explode@/devices/x\0"), Err(Refused::Action));
        assert_eq!(parse(b"add@devices/x\0"), Err(Refused::Devpath));
        assert_eq!(parse(b"add@/devices/../etc\0"), Err(Refused::Devpath));
        assert_eq!(parse(b"add@/devices//x\0"), Err(Refused::Devpath));
        assert_eq!(parse(b"add@/\0"), Err(Refused::Devpath));
        assert_eq!(parse(b"\xff\xfe@/devices/x\0"), Err(Refused::Header));
        let p = packet("add@/devices/x", &["ACTION=remove"]);
        assert_eq!(parse(&p), Err(Refused::Mismatch));
        let p = packet("add@/devices/x", &["DEVPATH=/devices/y"]);
        assert_eq!(parse(&p), Err(Refused::Mismatch));
        let mut p = packet("add@/devices/x", &[]);
        p.extend_from_slice(b"MODALIAS=pci:\xff\0");
        assert_eq!(parse(&p), Err(Refused::Field));
        let long = format!("MODALIAS={}", "a".repeat(MAX_MODALIAS + 1));
        assert_eq!(
            parse(&packet("add@/devices/x", &[&long])),
            Err(Refused::Field)
        );
        let p = packet("add@/devices/x", &["MODALIAS=pci:\nx"]);
        assert_eq!(parse(&p), Err(Refused::Field));
    }

    #[test]
    fn truncated_and_odd_fields_are_survived() {
        let full = packet(
            "add@/devices/pci0000:00/0000:00:05.0",
            &[
                "ACTION=add",
                "SUBSYSTEM=pci",
                "MODALIAS=pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                "SEQNUM=77",
            ],
        );
        // Every prefix of a valid packet parses or is refused; none panics,
        // and what parses is a prefix of the truth (the socket reports a
        // datagram cut by the kernel as truncated, and init drops it).
        for n in 0..full.len() {
            if let Ok(e) = parse(&full[..n]) {
                assert!("/devices/pci0000:00/0000:00:05.0".starts_with(e.devpath));
                if let Some(m) = e.modalias {
                    assert!("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00".starts_with(m));
                }
            }
        }
        // Unknown fields, fields without '=', binary junk in fields init
        // does not read, a non-numeric SEQNUM: skipped.
        let mut p = packet(
            "add@/devices/x",
            &["NOEQUALS", "SEQNUM=12ab", "=", "SUBSYSTEM=pci"],
        );
        p.extend_from_slice(b"DRIVER=\xff\xfe\0");
        let e = parse(&p).unwrap();
        assert_eq!(e.seqnum, None);
        assert_eq!(e.subsystem, Some("pci"));
        assert_eq!(classify(&e), Work::Ignore);
        // An empty modalias asks for nothing.
        let p = packet("add@/devices/x", &["MODALIAS="]);
        assert_eq!(parse(&p).unwrap().modalias, None);
        // More than MAX_PACKET bytes: only the first MAX_PACKET are read.
        let mut big = packet("add@/devices/x", &["SUBSYSTEM=pci"]);
        big.resize(MAX_PACKET * 2, b'x');
        assert_eq!(parse(&big).unwrap().subsystem, Some("pci"));
    }

    #[test]
    fn classifies_disks_partitions_nics_and_ignores_virtual_devices() {
        let block = |action: &str, devtype: &str, name: &str| {
            packet(
                &format!("{action}@/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda"),
                &[
                    "SUBSYSTEM=block",
                    &format!("DEVTYPE={devtype}"),
                    &format!("DEVNAME={name}"),
                ],
            )
        };
        let p = block("add", "disk", "sda");
        assert_eq!(
            classify(&parse(&p).unwrap()),
            Work::Disk {
                name: "sda",
                added: true
            }
        );
        let p = block("remove", "disk", "sda");
        assert_eq!(
            classify(&parse(&p).unwrap()),
            Work::Disk {
                name: "sda",
                added: false
            }
        );
        let p = block("add", "partition", "sda1");
        assert_eq!(
            classify(&parse(&p).unwrap()),
            Work::Partition { name: "sda1" }
        );
        let p = block("add", "disk", "loop0");
        assert_eq!(classify(&parse(&p).unwrap()), Work::Ignore);
        // A DEVNAME with a path in it is not a name init uses.
        let p = block("add", "disk", "../sda");
        assert_eq!(classify(&parse(&p).unwrap()), Work::Ignore);
        let nic = packet(
            "add@/devices/pci0000:00/0000:00:03.0/virtio0/net/eth1",
            &["SUBSYSTEM=net", "INTERFACE=eth1", "IFINDEX=3"],
        );
        assert_eq!(classify(&parse(&nic).unwrap()), Work::Nic { name: "eth1" });
        // A veth (or bridge, tun...) lives under /devices/virtual: ignored,
        // as is everything else there, modalias or not.
        for p in [
            packet(
                "add@/devices/virtual/net/veth7",
                &["SUBSYSTEM=net", "INTERFACE=veth7"],
            ),
            packet(
                "add@/devices/virtual/net/veth7/queues/rx-0",
                &["SUBSYSTEM=queues"],
            ),
            packet("add@/devices/virtual/misc/x", &["MODALIAS=devname:x"]),
        ] {
            assert_eq!(classify(&parse(&p).unwrap()), Work::Ignore);
        }
        // Removals and binds ask for no driver.
        let p = packet("remove@/devices/x", &["MODALIAS=pci:v1"]);
        assert_eq!(classify(&parse(&p).unwrap()), Work::Ignore);
        let p = packet("bind@/devices/x", &["MODALIAS=pci:v1"]);
        assert_eq!(classify(&parse(&p).unwrap()), Work::Ignore);
    }
}
