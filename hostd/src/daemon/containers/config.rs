//! Pure first pass of `run`: the image config merged with the request, the
//! user resolved against the image's `/etc/passwd`, and the generated
//! `/etc` files. Nothing here touches the system except reading
//! `/etc/passwd` and `/etc/group` from the image's layers.

use std::path::{Path, PathBuf};

use mkhost_shared::container::RunRequest;
use mkhost_store::ImageConfig;

/// `PATH` when neither the image nor the request sets one (Docker's).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a request cannot be merged with its image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither the image nor the request gives a command.
    #[error("no command: the image has no Entrypoint or Cmd and the request gives none")]
    NoCommand,
    /// An env entry without `=`.
    #[error("invalid environment entry {0:?} (expected NAME=value)")]
    BadEnv(String),
    /// The user is not in the image's `/etc/passwd`.
    #[error("unable to find user {user:?}: no matching entry in the image's /etc/passwd")]
    UnknownUser {
        /// The name.
        user: String,
    },
    /// The group is not in the image's `/etc/group`.
    #[error("unable to find group {group:?}: no matching entry in the image's /etc/group")]
    UnknownGroup {
        /// The name.
        group: String,
    },
}

/// The process part of a container: image config merged with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// `argv`.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// The user.
    pub user: User,
}

/// A user resolved against the image's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, as Docker sets them: the primary group, then
    /// those listing the user in `/etc/group` when no group was given.
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd`, else `/`.
    pub home: String,
}

/// Merges the image's config with the request as `docker run` does:
///
/// - `argv`: `Entrypoint` + (`command` if given, else `Cmd`); a request
///   entrypoint replaces the image's and drops its `Cmd`; an empty one
///   drops both, leaving the request's command alone (dockerd answers "No
///   command specified" to `--entrypoint ""` without one);
/// - environment: `PATH` (Docker's default) and `HOSTNAME`, each replaced
///   in place by the request's then the image's `Env` (the request wins on
///   the same name), then `HOME` from the user's passwd entry if unset;
/// - working directory: the request's, else `WorkingDir`, else `/`;
/// - user: the request's, else `User`, looked up with `lookup`.
pub fn merge(
    image: &ImageConfig,
    req: &RunRequest,
    hostname: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, ConfigError> {
    let mut args: Vec<String> = match &req.entrypoint {
        Some(entrypoint) if !entrypoint.is_empty() => entrypoint.clone(),
        Some(_) => Vec::new(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    if !req.command.is_empty() {
        args.extend(req.command.iter().cloned());
    } else if req.entrypoint.is_none() {
        args.extend(image.cmd.clone().unwrap_or_default());
    }
    if args.is_empty() {
        return Err(ConfigError::NoCommand);
    }
    let name_of = |entry: &str| -> Result<String, ConfigError> {
        entry
            .split_once('=')
            .map(|(name, _)| name.to_string())
            .ok_or_else(|| ConfigError::BadEnv(entry.to_string()))
    };
    // The container's Env: the request's, then the image's not overridden.
    let mut config_env: Vec<String> = req.env.clone();
    let request_names = req
        .env
        .iter()
        .map(|e| name_of(e))
        .collect::<Result<Vec<_>, _>>()?;
    for entry in &image.env {
        if !request_names.contains(&name_of(entry)?) {
            config_env.push(entry.clone());
        }
    }
    let mut env = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    for entry in config_env {
        let name = name_of(&entry)?;
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n) == Some(&name))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    let spec = req.user.as_deref().or(image.user.as_deref()).unwrap_or("");
    let user = resolve_user(spec, lookup)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = req
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(Process {
        args,
        env,
        cwd,
        user,
    })
}

/// One `/etc/passwd` entry.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: fields.first()?.to_string(),
            uid: fields.get(2)?.parse().ok()?,
            gid: fields.get(3)?.parse().ok()?,
            home: fields.get(5).map(|h| h.to_string()).unwrap_or_default(),
        })
    })
}

/// `(name, gid, members)` of each `/etc/group` entry.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let gid = fields.get(2)?.parse().ok()?;
        let members = fields
            .get(3)
            .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
            .unwrap_or_default();
        Some((*fields.first()?, gid, members))
    })
}

/// Resolves `user[:group]` (empty: root) as runc and Docker do: a user by
/// name must be in the image's `/etc/passwd`; a number is looked up there
/// too and taken as it is if absent (group 0, home `/`). Without a group
/// the passwd group is primary and every `/etc/group` entry listing the
/// user is a supplementary group; a group by name must be in `/etc/group`.
pub fn resolve_user(
    spec: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<User, ConfigError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = lookup("/etc/passwd").unwrap_or_default();
    let groups = lookup("/etc/group").unwrap_or_default();
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(&passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(&passwd)
                .find(|e| e.name == user)
                .ok_or_else(|| ConfigError::UnknownUser {
                    user: user.to_string(),
                })?,
        ),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| user.parse().unwrap_or(0), |e| e.uid);
    let home = entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    let (gid, additional_gids) = match group {
        Some(g) if !g.is_empty() => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(&groups)
                    .find(|(name, _, _)| *name == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| ConfigError::UnknownGroup {
                        group: g.to_string(),
                    })?,
            };
            (gid, Vec::new())
        }
        _ => {
            let gid = entry.as_ref().map_or(0, |e| e.gid);
            let supplementary = match &entry {
                Some(e) => group_entries(&groups)
                    .filter(|(_, _, members)| members.contains(&e.name.as_str()))
                    .map(|(_, gid, _)| gid)
                    .collect(),
                None => Vec::new(),
            };
            (gid, supplementary)
        }
    };
    let mut groups = vec![gid];
    groups.extend(additional_gids.into_iter().filter(|g| *g != gid));
    Ok(User {
        uid,
        gid,
        additional_gids: groups,
        home,
    })
}

/// Reads `file` (absolute, inside the image) from the topmost layer that has
/// it as a regular file, without following symlinks in the layers.
pub fn read_from_layers(lowerdirs: &[PathBuf], file: &str) -> Option<String> {
    let relative = Path::new(file.trim_start_matches('/'));
    for layer in lowerdirs {
        let mut path = layer.clone();
        let mut ok = true;
        let count = relative.components().count();
        for (i, part) in relative.components().enumerate() {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if i + 1 < count && m.is_dir() => {}
                Ok(m) if i + 1 == count && m.is_file() => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return std::fs::read_to_string(&path).ok();
        }
    }
    None
}

/// The `/etc/hosts` Docker writes for a container without a network
/// address (`--network none`): loopback and the IPv6 multicast names.
pub const HOSTS: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// Docker's name servers when the host has none a container can reach.
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// A container's `/etc/resolv.conf` from the host's, as Docker makes it:
/// the host's lines without the loopback name servers (127.0.0.0/8, ::1),
/// which are not reachable from the container's network namespace; with
/// none left, Google's public servers are added.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" || addr.is_empty() {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

/// The contents of each of [`ETC_FILES`](crate::backend::ETC_FILES) for a container named `hostname`:
/// `hosts` is Docker's standard lines then `hosts_extra` (the container's
/// own address line); `resolv_conf` is the network's (its DNS server), or
/// else derived from the host's `/etc/resolv.conf` (empty if it has none).
pub fn etc_files(
    hostname: &str,
    hosts_extra: &str,
    resolv_conf_text: Option<&str>,
    host_resolv_conf: &str,
) -> [(&'static str, String); 3] {
    [
        ("hostname", format!("{hostname}\n")),
        ("hosts", format!("{HOSTS}{hosts_extra}")),
        (
            "resolv.conf",
            resolv_conf_text
                .map(str::to_string)
                .unwrap_or_else(|| resolv_conf(host_resolv_conf)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: Option<&[&str]>, cmd: Option<&[&str]>, user: Option<&str>) -> ImageConfig {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ImageConfig {
            entrypoint: entry.map(v),
            cmd: cmd.map(v),
            env: vec!["A=1".into(), "B=2".into()],
            working_dir: Some("/srv".into()),
            user: user.map(str::to_string),
            ..ImageConfig::default()
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44::/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:www\nstaff:x:50:other,www\nwww:x:44:\n";

    fn files(file: &str) -> Option<String> {
        match file {
            "/etc/passwd" => Some(PASSWD.into()),
            "/etc/group" => Some(GROUP.into()),
            _ => None,
        }
    }

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn request(command: &[&str], env: &[&str]) -> RunRequest {
        RunRequest {
            image: "img".into(),
            command: s(command),
            env: s(env),
            ..RunRequest::default()
        }
    }

    #[test]
    fn command_env_and_cwd_merge_like_docker() {
        let img = image(Some(&["/init"]), Some(&["--serve"]), None);
        let p = merge(&img, &request(&[], &["B=3", "C=4"]), "h1", &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--serve"]));
        // Docker: PATH and HOSTNAME first, the request's env, then the
        // image's not overridden; HOME from passwd last.
        assert_eq!(
            p.env,
            s(&[
                DEFAULT_PATH,
                "HOSTNAME=h1",
                "B=3",
                "C=4",
                "A=1",
                "HOME=/root"
            ])
        );
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user.uid, 0);
        let p = merge(&img, &request(&["--once"], &[]), "h", &files).unwrap();
        assert_eq!(p.args, s(&["/init", "--once"]));
        let none = image(None, None, None);
        assert_eq!(
            merge(&none, &request(&[], &[]), "h", &files),
            Err(ConfigError::NoCommand)
        );
        assert!(matches!(
            merge(&img, &request(&[], &["novalue"]), "h", &files),
            Err(ConfigError::BadEnv(_))
        ));
        // The request's PATH, HOSTNAME and HOME replace the defaults in place.
        let p = merge(
            &img,
            &request(&[], &["HOSTNAME=x", "HOME=/h", "PATH=/bin"]),
            "h",
            &files,
        )
        .unwrap();
        assert_eq!(
            p.env,
            s(&["PATH=/bin", "HOSTNAME=x", "HOME=/h", "A=1", "B=2"])
        );
    }

    #[test]
    fn entrypoint_workdir_and_user_from_the_request() {
        let img = image(Some(&["/init"]), Some(&["--serve"]), Some("www"));
        let mut req = request(&[], &[]);
        req.entrypoint = Some(s(&["/bin/sh"]));
        // A new entrypoint drops the image's Cmd.
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["/bin/sh"])
        );
        req.command = s(&["-c", "true"]);
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["/bin/sh", "-c", "true"])
        );
        // An empty one clears it and drops Cmd too: the request's command
        // alone, or none (as dockerd).
        req.entrypoint = Some(vec![]);
        assert_eq!(
            merge(&img, &req, "h", &files).unwrap().args,
            s(&["-c", "true"])
        );
        req.command.clear();
        assert_eq!(merge(&img, &req, "h", &files), Err(ConfigError::NoCommand));
        req.command = s(&["sh"]);
        req.workdir = Some("/work".into());
        req.user = Some("1000".into());
        let p = merge(&img, &req, "h", &files).unwrap();
        assert_eq!(p.cwd, "/work");
        assert_eq!((p.user.uid, p.user.gid), (1000, 0));
        assert!(p.env.contains(&"HOME=/".to_string()), "{:?}", p.env);
        // The image's user when the request names none.
        req.user = None;
        let p = merge(&img, &req, "h", &files).unwrap();
        assert_eq!((p.user.uid, p.user.gid), (33, 44));
        assert!(p.env.contains(&"HOME=/var/www".to_string()));
    }

    #[test]
    fn users_resolve_like_runc() {
        let user = |spec: &str| {
            resolve_user(spec, &files).map(|u| (u.uid, u.gid, u.additional_gids, u.home))
        };
        assert_eq!(user(""), Ok((0, 0, vec![0], "/root".into())));
        assert_eq!(user("1000"), Ok((1000, 0, vec![0], "/".into())));
        assert_eq!(user("1000:7"), Ok((1000, 7, vec![7], "/".into())));
        // By name, or by a number found in passwd: its group, and the
        // groups listing it as supplementary ones.
        assert_eq!(
            user("www"),
            Ok((33, 44, vec![44, 4, 50], "/var/www".into()))
        );
        assert_eq!(user("33"), user("www"));
        // A group given: that group only.
        assert_eq!(user("www:staff"), Ok((33, 50, vec![50], "/var/www".into())));
        assert_eq!(user("www:7"), Ok((33, 7, vec![7], "/var/www".into())));
        assert_eq!(
            user("nobody"),
            Err(ConfigError::UnknownUser {
                user: "nobody".into()
            })
        );
        assert!(matches!(
            user("0:wheel"),
            Err(ConfigError::UnknownGroup { .. })
        ));
        assert!(matches!(
            resolve_user("www", &|_: &str| None),
            Err(ConfigError::UnknownUser { .. })
        ));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "search lan\nnameserver 10.0.0.1\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\nnameserver ::1\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        let files = etc_files("web", "", None, "nameserver 10.0.0.1\n");
        assert_eq!(files[0], ("hostname", "web\n".to_string()));
        assert!(files[1].1.starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(files[2].1, "nameserver 10.0.0.1\n");
        let files = etc_files(
            "web",
            "172.17.0.2\tweb\n",
            Some("nameserver 172.18.0.1\n"),
            "nameserver 10.0.0.1\n",
        );
        assert!(files[1]
            .1
            .ends_with("ff02::2\tip6-allrouters\n172.17.0.2\tweb\n"));
        assert_eq!(files[2].1, "nameserver 172.18.0.1\n");
    }

    #[test]
    fn passwd_is_read_from_the_top_layer_without_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let low = dir.path().join("low");
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::write(low.join("etc/passwd"), "low").unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("etc")).unwrap();
        let layers = [top, low];
        assert_eq!(
            read_from_layers(&layers, "/etc/passwd").as_deref(),
            Some("low")
        );
        assert_eq!(read_from_layers(&layers, "/etc/group"), None);
    }
}
