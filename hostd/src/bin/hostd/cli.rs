//! `hostd`'s command line, parsed with `lexopt` before anything is touched.
//!
//! One rule for every command, `hostd oci` included: an option's value is
//! `--flag VALUE` or `--flag=VALUE` (short options: `-t 5`, `-t5` or `-t=5`),
//! and a lone `--` ends the options. The daemon and client commands take their
//! options before or after the command word (after `run`'s IMAGE everything is
//! the container's command, verbatim); an option given to a command it does
//! not belong to is a usage error naming it. `hostd oci` takes its global
//! options before the command and the command's own after it, as runc does.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

use lexopt::prelude::*;
use lexopt::{Error, Parser};

use hostd::daemon::DaemonOptions;
use hostd::runtime::{self, Console, CreateOptions, RunOptions};
use mkhost_shared::container::RunRequest;
use mkhost_shared::container::{parse_cpus, parse_size};
use mkhost_shared::control::Request;
use mkhost_shared::network::{Driver, NetworkError, NetworkSpec};
use mkhost_shared::paths;

/// `hostd --help`; the only list of the commands and their options.
pub const USAGE: &str = "\
usage: hostd [daemon] [--socket PATH] [--store DIR] [--state DIR] [--boot-manifest FILE]
             [--networks FILE] [--registries FILE] [--insecure-registry HOST[:PORT]]...
             [--registry-ca PEM] [--registry-auth CONFIG.JSON] [--registry-mirror REGISTRY=MIRROR]...
             [--volumes DIR] [--bind-root DIR]... [--containers DIR] [--docker-socket PATH|none]
             [--docker-tls DIR|none] [--docker-tls-listen ADDR:PORT] [--memory-cgroups each|limited]
                                        run the daemon (store: /var/lib/hostd, state: /run/hostd,
                                        containers: /var/lib/hostd-containers, boot manifest:
                                        /etc/hostd/containers.json, networks:
                                        /run/mkhost/networks.json, registries:
                                        /run/mkhost/registries.json, volumes:
                                        /var/lib/hostd-volumes, bind mounts only under /srv)
       hostd status                     print the daemon's status as JSON
       hostd images [--json]            list images
       hostd pull REF                   pull an image from its registry (nginx:1.27,
                                        host:5000/a/b@sha256:...), verified, into the store
       hostd import FILE [REF]          import an OCI layout (dir or tar), docker save archive,
                                        skopeo dir: copy, or a root file system tar (docker
                                        export) as one layer; REF names the (one) image
       hostd inspect IMAGE              print an image's config and layers as JSON
       hostd rmi IMAGE                  untag a name, or remove an image by id
       hostd gc                         free unused blobs and layers
       hostd run [OPTIONS] IMAGE [CMD...]  run a container: print its output and exit with
                                        its code, or with -d print its id (hostd run --help)
       hostd ps [--json]                list containers
       hostd logs [-f] NAME             print a container's log (-f: follow it)
       hostd stop [-t SECS] NAME        SIGTERM, then SIGKILL after SECS (default 10)
       hostd start NAME                 start an exited container again
       hostd rm [-f] NAME               remove a container (-f: kill it if running)
       hostd port NAME                  list a container's published ports
       hostd network ls [--json]        list container networks
       hostd network create [--driver bridge|direct] [--subnet CIDR] [--gateway IP]
                            [--parent NIC] [--internal] NAME
                                        create a network (bridge: routed, NAT out;
                                        direct: the container's own address on NIC)
       hostd network inspect NAME       print a network and its containers as JSON
       hostd network rm NAME            remove a network no container uses
       hostd volume ls [--json]         list named volumes
       hostd volume create [-l K=V]... NAME  create a named volume
       hostd volume inspect NAME        print a volume and the containers using it as JSON
       hostd volume rm NAME             remove a volume no container uses, with its data
       hostd oci [GLOBAL] COMMAND ...   runc-compatible OCI runtime (hostd oci --help)
       hostd --version | --help
Client commands take --socket PATH (default /run/hostd/hostd.sock). Options take
their value as --flag VALUE or --flag=VALUE. Exit status: 0 on success, 1 when
the daemon or the store says no, 2 on a usage error (hostd run: see its --help).";

/// `hostd run --help`: `docker run`'s options that hostd takes, with the
/// same meaning.
pub const RUN_USAGE: &str = "\
usage: hostd run [OPTIONS] IMAGE [CMD...]
Runs a container from a store image. Without -d, prints the container's
stdout and stderr as it runs and exits with its exit code; with -d, prints
its id and returns. As docker run, it exits 125 when hostd refuses the run,
127 when the command is not found and 126 when it cannot be executed.
  -d, --detach              run in the background, print the id
      --rm                  remove the container when it exits
      --name NAME           name (default: the first 12 digits of the id)
  -e, --env K=V | K         set a variable (K alone: take it from this shell)
      --env-file FILE       variables from FILE, one K=V (or K) per line, # comments
  -l, --label K=V           add a label (shown by hostd ps --json)
  -u, --user USER[:GROUP]   user and group, by name or number (image's User)
  -w, --workdir DIR         working directory, created if missing (image's WorkingDir)
      --entrypoint CMD      replace the image's Entrypoint (and drop its Cmd);
                            \"\" clears both, leaving CMD...
  -h, --hostname NAME       host name (default: the short id)
      --read-only           mount the root file system read-only
      --oom-score-adj N     the container's OOM killer bias, -1000 to 1000 (0;
                            the daemon's own is -500)
      --tmpfs PATH[:OPTS]   mount a tmpfs (nosuid,nodev,noexec plus OPTS like size=64m)
  -v, --volume NAME:PATH[:ro|rw]  mount named volume NAME (created on first use)
      --volume /DIR:PATH[:ro|rw]  bind host directory DIR (under the daemon's
                            --bind-root, /srv by default)
      --network NET         bridge (the default), a created network, host (the
                            host's namespace) or none (only lo)
  -p, --publish [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]
                            publish a port (ranges: 8000-8010:80-90); bridge only
      --network-alias NAME  another name the container answers to on its network
      --ip ADDRESS          a fixed address on its network
      --pull POLICY         missing (default: pull when the store lacks the image),
                            always or never
      --cap-add CAP         add a capability to Docker's default set (or ALL)
      --cap-drop CAP        drop one (or ALL)
      --restart POLICY      no, always, unless-stopped, on-failure or on-failure:N
  -m, --memory SIZE         memory limit (e.g. 64M; at least 6M)
      --cpus N              CPU limit (e.g. 0.5)
      --cpu-weight 1-10000  CPU weight (default 100)
      --pids-limit N        most processes
      --cpuset-cpus LIST    CPUs allowed (e.g. 0-1,3)
      --cpuset-mems LIST    memory nodes allowed
      --socket PATH         the daemon's socket
Everything after IMAGE is the container's command, verbatim. -i and -t need
an attached terminal, which hostd run does not offer yet (see README).";

/// Per-command usage for `hostd COMMAND --help`.
const COMMAND_USAGE: [(&str, &str); 16] = [
    ("status", "usage: hostd status [--socket PATH]\nPrints the daemon's version, pid, uptime and container count as JSON."),
    ("images", "usage: hostd images [--json] [--socket PATH]\nLists the store's images (one row per name)."),
    ("import", "usage: hostd import FILE [REF] [--socket PATH]\nImports every image of an OCI layout (directory or tar), docker save archive or skopeo dir: copy, or a root file system tar (docker export) as a one-layer image; REF names the (one) image (docs/images.md)."),
    ("inspect", "usage: hostd inspect IMAGE [--socket PATH]\nPrints an image's config and layers as JSON."),
    ("rmi", "usage: hostd rmi IMAGE [--socket PATH]\nUntags a name, or removes an image given by id."),
    ("gc", "usage: hostd gc [--socket PATH]\nFrees the blobs and layers no image uses."),
    ("ps", "usage: hostd ps [--json] [--socket PATH]\nLists containers, oldest first (--json: every field, labels included)."),
    ("logs", "usage: hostd logs [-f|--follow] NAME [--socket PATH]\nPrints a container's log; -f follows it until the container stops."),
    ("stop", "usage: hostd stop [-t|--time SECS] NAME [--socket PATH]\nSends SIGTERM, then SIGKILL after SECS (default 10); no more restarts."),
    ("start", "usage: hostd start NAME [--socket PATH]\nStarts an exited container again (same id, root and log)."),
    ("rm", "usage: hostd rm [-f|--force] NAME [--socket PATH]\nRemoves a container; -f kills it first if it runs."),
    ("pull", "usage: hostd pull REF [--socket PATH]\nPulls an image from its registry into the store (docs/registries.md)."),
    ("port", "usage: hostd port NAME [--socket PATH]\nLists a container's published ports, as docker port."),
    ("network", "usage: hostd network ls [--json] | create [--driver bridge|direct] [--subnet CIDR] [--gateway IP] [--parent NIC] [--internal] NAME | inspect NAME | rm NAME\nManages container networks (docs/networking.md)."),
    ("volume", "usage: hostd volume ls [--json] | create [-l|--label K=V]... NAME | inspect NAME | rm NAME\nManages named volumes (docs/state.md)."),
    ("daemon", "usage: hostd [daemon] [--socket PATH] [--store DIR] [--state DIR] [--boot-manifest FILE] [--volumes DIR] [--bind-root DIR]... [--containers DIR] [--memory-cgroups each|limited] [--docker-socket PATH|none] [--docker-tls DIR|none] [--docker-tls-listen ADDR:PORT]\nRuns the daemon; the Docker Engine API listens on --docker-socket (/run/hostd/docker.sock; none: off) and, with ca.pem, cert.pem and key.pem in --docker-tls (/run/mkhost/docker-tls), on --docker-tls-listen (0.0.0.0:2376) for clients with a certificate of that CA only. --memory-cgroups limited gives a memory cgroup of its own only to a container with a memory limit (the others share hostd/shared): for hosts of many thousands of containers."),
];

/// The usage of `command` (`hostd --help` for none).
pub fn usage_of(command: Option<&str>) -> &'static str {
    match command {
        Some("run") => RUN_USAGE,
        Some(c) => COMMAND_USAGE
            .iter()
            .find(|(name, _)| *name == c)
            .map_or(USAGE, |(_, text)| text),
        None => USAGE,
    }
}

/// `hostd oci --help`.
pub const OCI_USAGE: &str = "\
usage: hostd oci [--root DIR] [--log FILE] [--debug] COMMAND
  create [--bundle DIR] [--pid-file FILE] [--preserve-fds N] ID
  start ID
  state ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  run [--bundle DIR] [--detach] [--keep] [--pid-file FILE] [--preserve-fds N] ID
  list [--quiet]
The state root defaults to /run/hostd/oci, the bundle to the current directory.";

const ZYGOTE_USAGE: &str = "\
usage: hostd zygote --state DIR --conn FD --listener FD
(internal: started only by an upgrading zygote)";

/// What a `hostd` command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Cli {
    Daemon(Box<DaemonOptions>),
    Status(PathBuf),
    Images {
        socket: PathBuf,
        json: bool,
    },
    /// Relative paths are made absolute later, when the request is sent.
    Import {
        socket: PathBuf,
        path: PathBuf,
        reference: Option<String>,
    },
    Inspect {
        socket: PathBuf,
        image: String,
    },
    Rmi {
        socket: PathBuf,
        image: String,
    },
    Gc(PathBuf),
    Container {
        socket: PathBuf,
        request: Request,
    },
    /// `run`: in the foreground unless `detach`.
    Run {
        socket: PathBuf,
        request: Box<RunRequest>,
        detach: bool,
    },
    /// `ps`.
    Ps {
        socket: PathBuf,
        json: bool,
    },
    /// `pull REF`.
    Pull {
        socket: PathBuf,
        reference: String,
    },
    /// `network ...`.
    Network {
        socket: PathBuf,
        request: Request,
        json: bool,
    },
    /// `volume ...`.
    Volume {
        socket: PathBuf,
        request: Request,
        json: bool,
    },
    /// `logs -f`: print the log, then what it gains, until the container stops.
    Follow {
        socket: PathBuf,
        name: String,
    },
    /// `hostd oci ...`.
    Oci(OciCli),
    /// `hostd zygote ...`: the new image of an upgrading zygote.
    Zygote {
        state: PathBuf,
        conn: RawFd,
        listener: RawFd,
    },
    Version,
    /// `--help`: the usage to print.
    Help(&'static str),
}

/// A parsed `hostd oci` command line.
#[derive(Debug, PartialEq, Eq)]
pub struct OciCli {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub debug: bool,
    pub command: Oci,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Oci {
    Create(String, CreateOptions),
    Start(String),
    State(String),
    Kill { id: String, signal: i32, all: bool },
    Delete { id: String, force: bool },
    Run(String, RunOptions),
    List { quiet: bool },
    Help,
}

/// A command line that does not parse: what is wrong, and the usage to show.
#[derive(Debug)]
pub struct UsageError {
    program: &'static str,
    usage: &'static str,
    error: Error,
}

impl UsageError {
    /// The exit status: 2, or 125 for `run`, whose status is otherwise the
    /// container's (as `docker run`, which keeps 125 for its own errors).
    pub fn exit_code(&self) -> u8 {
        if self.program == "hostd run" {
            125
        } else {
            2
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\n{}", self.program, self.error, self.usage)
    }
}

/// What a usage error of `hostd run` shows instead of the whole usage.
const RUN_HINT: &str = "See 'hostd run --help'.";

/// Parses `hostd`'s arguments (without argv\[0\]).
pub fn parse<I>(args: I) -> Result<Cli, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let (program, usage, parsed) = match args.first().and_then(|a| a.to_str()) {
        Some("oci") => ("hostd oci", OCI_USAGE, parse_oci(args.split_off(1))),
        Some("zygote") => (
            "hostd zygote",
            ZYGOTE_USAGE,
            parse_zygote(args.split_off(1)),
        ),
        _ => match parse_host(args) {
            (Some(command), parsed) if command == "run" => ("hostd run", RUN_HINT, parsed),
            (_, parsed) => ("hostd", USAGE, parsed),
        },
    };
    parsed.map_err(|error| UsageError {
        program,
        usage,
        error,
    })
}

/// The daemon's and the clients' commands; `daemon` when none is given.
const COMMANDS: [&str; 17] = [
    "daemon", "status", "images", "import", "inspect", "rmi", "gc", "run", "ps", "logs", "stop",
    "start", "rm", "port", "network", "pull", "volume",
];

/// The commands an option belongs to: every one.
const ANY: &[&str] = &[];

/// The command word, as far as parsing got, and the parsed command line.
fn parse_host(args: Vec<OsString>) -> (Option<String>, Result<Cli, Error>) {
    let mut command = None;
    let parsed = parse_host_into(args, &mut command);
    (command, parsed)
}

fn parse_host_into(args: Vec<OsString>, command: &mut Option<String>) -> Result<Cli, Error> {
    let mut p = Parser::from_args(args);
    let mut socket = PathBuf::from(paths::CONTROL_SOCKET);
    let mut daemon = DaemonOptions::default();
    let mut json = false;
    // `-f`: --force for rm, --follow for logs.
    let mut force_or_follow = false;
    let mut timeout = None;
    let mut run = RunRequest::default();
    let mut net = NetworkSpec::default();
    let mut detach = false;
    // `--bind-root` replaces the default list with the ones given.
    let mut bind_roots: Vec<PathBuf> = Vec::new();
    let mut operands: Vec<String> = Vec::new();
    // Each option as written, with the commands it belongs to; checked once
    // the command is known (options may come before it).
    let mut given: Vec<(String, &[&str])> = Vec::new();
    while let Some(arg) = p.next()? {
        let flag = match arg {
            Short(c) => format!("-{c}"),
            Long(name) => format!("--{name}"),
            Value(_) => String::new(),
        };
        let owners: &[&str] = match arg {
            Short('h') if command.as_deref() == Some("run") => {
                run.hostname = Some(p.value()?.string()?);
                &["run"]
            }
            Short('h') | Long("help") => return Ok(Cli::Help(usage_of(command.as_deref()))),
            Short('V') | Long("version") => return Ok(Cli::Version),
            Long("socket") => {
                socket = p.value()?.into();
                ANY
            }
            Long("store") => {
                daemon.store = p.value()?.into();
                &["daemon"]
            }
            Long("state") => {
                daemon.state = p.value()?.into();
                &["daemon"]
            }
            Long("boot-manifest") => {
                daemon.boot_manifest = Some(p.value()?.into());
                &["daemon"]
            }
            Long("networks") => {
                daemon.networks = Some(p.value()?.into());
                &["daemon"]
            }
            Long("registries") => {
                daemon.registries.settings_file = Some(p.value()?.into());
                &["daemon"]
            }
            Long("insecure-registry") => {
                daemon.registries.insecure.push(p.value()?.string()?);
                &["daemon"]
            }
            Long("volumes") => {
                daemon.volumes = p.value()?.into();
                &["daemon"]
            }
            Long("containers") => {
                daemon.containers = p.value()?.into();
                &["daemon"]
            }
            Long("memory-cgroups") => {
                daemon.memory_cgroups = read(&mut p, &flag, |v| {
                    mkhost_shared::boot_config::MemoryCgroups::parse(v)
                        .ok_or_else(|| format!("{v:?} is not each or limited"))
                })?;
                &["daemon"]
            }
            Long("bind-root") => {
                bind_roots.push(p.value()?.into());
                &["daemon"]
            }
            Long("docker-tls") => {
                let path: PathBuf = p.value()?.into();
                daemon.docker_tls = (path.as_os_str() != "none").then_some(path);
                &["daemon"]
            }
            Long("docker-tls-listen") => {
                daemon.docker_tls_listen = read(&mut p, &flag, |v| {
                    v.parse::<std::net::SocketAddr>()
                        .map_err(|_| format!("{v:?} is not ADDRESS:PORT (0.0.0.0:2376)"))
                })?;
                &["daemon"]
            }
            Long("docker-socket") => {
                let path: PathBuf = p.value()?.into();
                daemon.docker_socket = (path.as_os_str() != "none").then_some(path);
                &["daemon"]
            }
            Long("registry-ca") => {
                daemon.registries.ca_file = Some(p.value()?.into());
                &["daemon"]
            }
            Long("registry-auth") => {
                daemon.registries.auth_file = Some(p.value()?.into());
                &["daemon"]
            }
            Long("registry-mirror") => {
                let (registry, mirror) = read(&mut p, &flag, |v| {
                    v.split_once('=')
                        .filter(|(r, m)| !r.is_empty() && !m.is_empty())
                        .map(|(r, m)| (r.to_string(), m.to_string()))
                        .ok_or_else(|| {
                            format!("{v:?} is not REGISTRY=MIRROR (docker.io=mirror.lab:5000)")
                        })
                })?;
                daemon
                    .registries
                    .mirrors
                    .entry(registry)
                    .or_default()
                    .push(mirror);
                &["daemon"]
            }
            Long("pull") => {
                run.pull = read(&mut p, &flag, |v| v.parse())?;
                &["run"]
            }
            Long("json") => {
                json = true;
                &["images", "ps", "network", "volume"]
            }
            Long("name") => {
                run.name = Some(p.value()?.string()?);
                &["run"]
            }
            Short('e') | Long("env") => {
                run.env.extend(read(&mut p, &flag, env_entry)?);
                &["run"]
            }
            Long("env-file") => {
                run.env.extend(read(&mut p, &flag, env_file)?);
                &["run"]
            }
            Short('l') | Long("label") => {
                let (key, value) = read(&mut p, &flag, label)?;
                run.labels.insert(key, value);
                &["run", "volume"]
            }
            Short('d') | Long("detach") => {
                detach = true;
                &["run"]
            }
            Long("rm") => {
                run.auto_remove = true;
                &["run"]
            }
            Short('u') | Long("user") => {
                run.user = Some(p.value()?.string()?);
                &["run"]
            }
            Short('w') | Long("workdir") => {
                run.workdir = Some(p.value()?.string()?);
                &["run"]
            }
            Long("entrypoint") => {
                let value = p.value()?.string()?;
                run.entrypoint = Some(if value.is_empty() {
                    Vec::new()
                } else {
                    vec![value]
                });
                &["run"]
            }
            Long("hostname") => {
                run.hostname = Some(p.value()?.string()?);
                &["run"]
            }
            Long("read-only") => {
                run.read_only = true;
                &["run"]
            }
            Long("oom-score-adj") => {
                run.oom_score_adj = read(&mut p, &flag, number)?;
                &["run"]
            }
            Long("tmpfs") => {
                let value = p.value()?.string()?;
                let (path, options) = value.split_once(':').unwrap_or((&value, ""));
                run.tmpfs.insert(path.to_string(), options.to_string());
                &["run"]
            }
            Short('v') | Long("volume") => {
                run.volumes.push(read(&mut p, &flag, |v| {
                    mkhost_shared::container::VolumeMount::parse(v).map_err(|e| e.to_string())
                })?);
                &["run"]
            }
            Long("network" | "net") => {
                run.network = Some(p.value()?.string()?);
                &["run"]
            }
            Short('p') | Long("publish") => {
                run.publish.extend(read(&mut p, &flag, |v| {
                    mkhost_shared::network::parse_publish(v).map_err(|e| e.to_string())
                })?);
                &["run"]
            }
            Long("network-alias" | "net-alias") => {
                run.network_aliases.push(p.value()?.string()?);
                &["run"]
            }
            Long("ip") => {
                run.ip = Some(read(&mut p, &flag, |v| {
                    v.parse()
                        .map_err(|_| format!("{v:?} is not an IPv4 address"))
                })?);
                &["run"]
            }
            Long("driver") => {
                net.driver = read(&mut p, &flag, |v| match v {
                    "bridge" => Ok(Driver::Bridge),
                    "direct" | "macvlan" => Ok(Driver::Direct),
                    other => Err(format!("unknown driver {other:?} (bridge or direct)")),
                })?;
                &["network"]
            }
            Long("subnet") => {
                net.subnet = Some(read(&mut p, &flag, |v| {
                    v.parse().map_err(|e: NetworkError| e.to_string())
                })?);
                &["network"]
            }
            Long("gateway") => {
                net.gateway = Some(read(&mut p, &flag, |v| {
                    v.parse()
                        .map_err(|_| format!("{v:?} is not an IPv4 address"))
                })?);
                &["network"]
            }
            Long("parent") => {
                net.parent = Some(p.value()?.string()?);
                &["network"]
            }
            Long("internal") => {
                net.internal = true;
                &["network"]
            }
            Long("cap-add") => {
                run.cap_add.push(p.value()?.string()?);
                &["run"]
            }
            Long("cap-drop") => {
                run.cap_drop.push(p.value()?.string()?);
                &["run"]
            }
            Short('t') | Long("time") if command.as_deref() != Some("run") => {
                timeout = Some(read(&mut p, &flag, |v| {
                    number(v).and_then(mkhost_shared::control::check_stop_timeout)
                })?);
                &["stop"]
            }
            Short('i' | 't') | Long("interactive" | "tty") => {
                return Err(format!(
                    "{flag}: an interactive terminal needs attach streams, which hostd run \
                     does not offer yet; run without -i/-t, or follow the output with hostd logs -f"
                )
                .into())
            }
            Long("restart") => {
                run.restart = read(&mut p, &flag, |v| v.parse())?;
                &["run"]
            }
            Short('m') | Long("memory") => {
                run.limits.memory = Some(read(&mut p, &flag, parse_size)?);
                &["run"]
            }
            Long("cpus") => {
                run.limits.nano_cpus = Some(read(&mut p, &flag, parse_cpus)?);
                &["run"]
            }
            Long("cpu-weight") => {
                run.limits.cpu_weight = Some(read(&mut p, &flag, number)?);
                &["run"]
            }
            Long("pids" | "pids-limit") => {
                run.limits.pids = Some(read(&mut p, &flag, number)?);
                &["run"]
            }
            Long("cpuset-cpus") => {
                run.limits.cpuset_cpus = Some(p.value()?.string()?);
                &["run"]
            }
            Long("cpuset-mems") => {
                run.limits.cpuset_mems = Some(p.value()?.string()?);
                &["run"]
            }
            Short('f') => {
                force_or_follow = true;
                &["rm", "logs"]
            }
            Long("force") => {
                force_or_follow = true;
                &["rm"]
            }
            Long("follow") => {
                force_or_follow = true;
                &["logs"]
            }
            Value(word) => {
                let word = word.string()?;
                match command.as_deref() {
                    None if COMMANDS.contains(&word.as_str()) => *command = Some(word),
                    None => return Err(format!("unknown command {word:?}").into()),
                    Some("run") => {
                        // IMAGE; what follows is the container's command.
                        run.image = word;
                        run.command = p
                            .raw_args()?
                            .map(ValueExt::string)
                            .collect::<Result<_, _>>()?;
                    }
                    Some(_) => operands.push(word),
                }
                continue;
            }
            _ => return Err(arg.unexpected()),
        };
        given.push((flag, owners));
    }
    let command = command.as_deref().unwrap_or("daemon");
    for (flag, owners) in &given {
        if !owners.is_empty() && !owners.contains(&command) {
            return Err(format!(
                "{flag} is an option of {}, not of {command}",
                owners.join(" and ")
            )
            .into());
        }
    }
    let mut operands = operands.into_iter();
    let mut operand = |what: &str| {
        operands
            .next()
            .ok_or_else(|| Error::from(format!("{command}: missing {what}")))
    };
    let container = |request| Cli::Container {
        socket: socket.clone(),
        request,
    };
    let cli = match command {
        "daemon" => Cli::Daemon(Box::new(DaemonOptions {
            socket: socket.clone(),
            bind_roots: if bind_roots.is_empty() {
                daemon.bind_roots
            } else {
                bind_roots
            },
            ..daemon
        })),
        "status" => Cli::Status(socket.clone()),
        "images" => Cli::Images {
            socket: socket.clone(),
            json,
        },
        "import" => Cli::Import {
            socket: socket.clone(),
            path: operand("FILE")?.into(),
            reference: operands.next(),
        },
        "inspect" => Cli::Inspect {
            socket: socket.clone(),
            image: operand("IMAGE")?,
        },
        "rmi" => Cli::Rmi {
            socket: socket.clone(),
            image: operand("IMAGE")?,
        },
        "gc" => Cli::Gc(socket.clone()),
        "run" if run.image.is_empty() => return Err("missing IMAGE".into()),
        "run" => {
            run.validate().map_err(|e| e.to_string())?;
            Cli::Run {
                socket: socket.clone(),
                request: Box::new(run),
                detach,
            }
        }
        "ps" => Cli::Ps {
            socket: socket.clone(),
            json,
        },
        "logs" if force_or_follow => Cli::Follow {
            socket: socket.clone(),
            name: operand("NAME")?,
        },
        "logs" => container(Request::Logs {
            name: operand("NAME")?,
        }),
        "stop" => container(Request::Stop {
            name: operand("NAME")?,
            timeout_secs: timeout,
        }),
        "start" => container(Request::Start {
            name: operand("NAME")?,
        }),
        "port" => container(Request::Port {
            name: operand("NAME")?,
        }),
        "pull" => Cli::Pull {
            socket: socket.clone(),
            reference: operand("REF")?,
        },
        "network" => {
            let verb = operand("ls, create, inspect or rm")?;
            let request = match verb.as_str() {
                "ls" | "list" => Request::Networks,
                "create" => {
                    net.name = operand("NAME")?;
                    net.validate().map_err(|e| e.to_string())?;
                    Request::NetworkCreate(net)
                }
                "inspect" => Request::NetworkInspect {
                    name: operand("NAME")?,
                },
                "rm" | "remove" => Request::NetworkRm {
                    name: operand("NAME")?,
                },
                other => {
                    return Err(format!(
                        "network: unknown command {other:?} (ls, create, inspect or rm)"
                    )
                    .into())
                }
            };
            Cli::Network {
                socket: socket.clone(),
                request,
                json,
            }
        }
        "volume" => {
            let verb = operand("ls, create, inspect or rm")?;
            let request = match verb.as_str() {
                "ls" | "list" => Request::Volumes,
                "create" => Request::VolumeCreate {
                    name: operand("NAME")?,
                    labels: std::mem::take(&mut run.labels),
                },
                "inspect" => Request::VolumeInspect {
                    name: operand("NAME")?,
                },
                "rm" | "remove" => Request::VolumeRm {
                    name: operand("NAME")?,
                },
                other => {
                    return Err(format!(
                        "volume: unknown command {other:?} (ls, create, inspect or rm)"
                    )
                    .into())
                }
            };
            Cli::Volume {
                socket: socket.clone(),
                request,
                json,
            }
        }
        _ => container(Request::Rm {
            name: operand("NAME")?,
            force: force_or_follow,
        }),
    };
    if let Some(extra) = operands.next() {
        return Err(format!("{command}: unexpected argument {extra:?}").into());
    }
    Ok(cli)
}

/// The value of the option just read, checked by `check`; a refusal names
/// the option as written.
fn read<T>(
    p: &mut Parser,
    flag: &str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, Error> {
    let value = p.value()?.string()?;
    check(&value).map_err(|e| format!("{flag}: {e}").into())
}

fn number<T: FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `-e`: `NAME=value` as it is; `NAME` alone takes the variable from this
/// process's environment, and is dropped if it has none (as docker does).
fn env_entry(text: &str) -> Result<Option<String>, String> {
    if text.contains('=') {
        return Ok(Some(text.to_string()));
    }
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not NAME=value or NAME"));
    }
    Ok(std::env::var(text)
        .ok()
        .map(|value| format!("{text}={value}")))
}

/// `--env-file`: one `NAME=value` or `NAME` per line (see [`env_entry`]);
/// blank lines and lines starting with `#` are skipped; the value is taken
/// verbatim, quotes included, as docker does.
fn env_file(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut env = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, _) = line.split_once('=').unwrap_or((line, ""));
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "{path}:{}: {name:?} is not a variable name (expected NAME=value or NAME)",
                number + 1
            ));
        }
        env.extend(env_entry(line).map_err(|e| format!("{path}:{}: {e}", number + 1))?);
    }
    Ok(env)
}

/// `-l KEY=value` (or `KEY`, an empty value).
fn label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("{text:?}: the key is empty (expected KEY=value)"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The most descriptors `--preserve-fds` may keep: the kernel's default
/// `fs.nr_open`, above which no process can hold them.
const MAX_PRESERVE_FDS: u32 = 1 << 20;

fn preserve_fds(text: &str) -> Result<u32, String> {
    let n: u32 = number(text)?;
    if n > MAX_PRESERVE_FDS {
        return Err(format!("{n} is out of range (at most {MAX_PRESERVE_FDS})"));
    }
    Ok(n)
}

/// runc's long options. runc (Go's flag package) also takes them with one
/// dash (`-root`), so `hostd oci` does too.
const OCI_LONG: [&str; 17] = [
    "root",
    "log",
    "log-format",
    "debug",
    "systemd-cgroup",
    "bundle",
    "pid-file",
    "preserve-fds",
    "no-pivot",
    "no-new-keyring",
    "console-socket",
    "detach",
    "keep",
    "all",
    "force",
    "quiet",
    "help",
];

/// `-root` and `-root=DIR` as `--root` and `--root=DIR`; anything else as is.
fn double_dash(arg: OsString) -> OsString {
    let name = arg
        .to_str()
        .and_then(|a| a.strip_prefix('-'))
        .map(|a| a.split_once('=').map_or(a, |(name, _)| name));
    match name {
        Some(name) if OCI_LONG.contains(&name) => {
            let mut long = OsString::from("-");
            long.push(&arg);
            long
        }
        _ => arg,
    }
}

const OCI_COMMANDS: [&str; 8] = [
    "create", "start", "state", "kill", "delete", "run", "list", "help",
];

fn parse_oci(args: Vec<OsString>) -> Result<Cli, Error> {
    let mut p = Parser::from_args(args.into_iter().map(double_dash));
    let mut cli = OciCli {
        root: PathBuf::from(runtime::DEFAULT_ROOT),
        log: None,
        debug: false,
        command: Oci::Help,
    };
    // Global options, up to the command.
    let command = loop {
        match p.next()? {
            None | Some(Short('h') | Long("help")) => return Ok(Cli::Oci(cli)),
            Some(Long("root")) => cli.root = p.value()?.into(),
            Some(Long("log")) => cli.log = Some(p.value()?.into()),
            Some(Long("log-format")) => drop(p.value()?),
            Some(Long("debug")) => cli.debug = true,
            Some(Long("systemd-cgroup")) => return Err("--systemd-cgroup is not supported".into()),
            Some(Value(word)) => break word.string()?,
            Some(arg) => return Err(arg.unexpected()),
        }
    };
    if !OCI_COMMANDS.contains(&command.as_str()) {
        return Err(format!("unknown command {command:?}").into());
    }
    // The command's options and operands.
    let is = |name: &str| command == name;
    let runs = is("create") || is("run");
    let mut create = CreateOptions {
        bundle: PathBuf::from("."),
        ..CreateOptions::default()
    };
    let (mut detach, mut keep, mut all, mut force, mut quiet) = (false, false, false, false, false);
    let mut operands: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Short('b') | Long("bundle") if runs => create.bundle = p.value()?.into(),
            Long("pid-file") if runs => create.pid_file = Some(p.value()?.into()),
            Long("preserve-fds") if runs => {
                create.preserve_fds = read(&mut p, "--preserve-fds", preserve_fds)?
            }
            Long("no-pivot" | "no-new-keyring") if runs => {}
            Long("console-socket") if is("create") => {
                create.console = Console::Socket(p.value()?.into())
            }
            Short('d') | Long("detach") if is("run") => detach = true,
            Long("keep") if is("run") => keep = true,
            Short('a') | Long("all") if is("kill") => all = true,
            Short('f') | Long("force") if is("delete") => force = true,
            Short('q') | Long("quiet") if is("list") => quiet = true,
            Short('h') | Long("help") => return Ok(Cli::Oci(cli)),
            Value(word) => operands.push(word.string()?),
            _ => return Err(format!("{command}: {}", arg.unexpected()).into()),
        }
    }
    let mut operands = operands.into_iter();
    let mut id = || {
        operands
            .next()
            .ok_or_else(|| Error::from(format!("{command}: missing container id")))
    };
    cli.command = match command.as_str() {
        "create" => Oci::Create(id()?, create),
        "start" => Oci::Start(id()?),
        "state" => Oci::State(id()?),
        "kill" => {
            let id = id()?;
            let signal = match operands.next() {
                None => libc::SIGTERM,
                Some(s) => runtime::container::parse_signal(&s)
                    .ok_or_else(|| format!("kill: unknown signal {s:?}"))?,
            };
            Oci::Kill { id, signal, all }
        }
        "delete" => Oci::Delete { id: id()?, force },
        "run" => Oci::Run(
            id()?,
            RunOptions {
                create,
                detach,
                keep,
            },
        ),
        "list" => Oci::List { quiet },
        _ => Oci::Help,
    };
    if let Some(extra) = operands.next() {
        return Err(format!("{command}: unexpected argument {extra:?}").into());
    }
    Ok(Cli::Oci(cli))
}

fn parse_zygote(args: Vec<OsString>) -> Result<Cli, Error> {
    let mut p = Parser::from_args(args);
    let (mut state, mut conn, mut listener) = (None, None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("state") => state = Some(PathBuf::from(p.value()?)),
            Long("conn") => conn = Some(read(&mut p, "--conn", number)?),
            Long("listener") => listener = Some(read(&mut p, "--listener", number)?),
            _ => return Err(arg.unexpected()),
        }
    }
    match (state, conn, listener) {
        (Some(state), Some(conn), Some(listener)) => Ok(Cli::Zygote {
            state,
            conn,
            listener,
        }),
        _ => Err("needs --state, --conn and --listener".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mkhost_shared::container::RunRequest;

    use super::*;

    fn parse_str(list: &[&str]) -> Result<Cli, String> {
        parse(list).map_err(|e| e.to_string())
    }

    /// A container command's arguments (after the command word).
    fn container(command: &str, list: &[&str]) -> Result<Cli, String> {
        parse_str(&[&[command], list].concat())
    }

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn daemon_at(socket: &str, store: &str) -> Cli {
        Cli::Daemon(Box::new(DaemonOptions {
            socket: socket.into(),
            store: store.into(),
            state: paths::STATE.into(),
            containers: paths::CONTAINERS.into(),
            boot_manifest: Some(mkhost_shared::paths::BOOT_MANIFEST.into()),
            networks: Some(paths::NETWORKS.into()),
            registries: hostd::daemon::pull::RegistryOptions {
                settings_file: Some(paths::REGISTRIES.into()),
                auth_file: Some(hostd::daemon::DOCKER_AUTH_FILE.into()),
                ..Default::default()
            },
            volumes: paths::VOLUMES.into(),
            bind_roots: vec![paths::BIND_ROOT.into()],
            docker_socket: Some(paths::DOCKER_SOCKET.into()),
            docker_tls: Some(paths::DOCKER_TLS.into()),
            docker_tls_listen: ([0, 0, 0, 0], paths::DOCKER_TLS_PORT).into(),
            memory_cgroups: Default::default(),
        }))
    }

    #[test]
    fn parses_volumes() {
        let req = run_request(&["-v", "data:/d", "--volume=/srv/www:/www:ro", "-vx:/x", "bb"]);
        assert_eq!(
            req.volumes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["data:/d", "/srv/www:/www:ro", "x:/x"]
        );
        let e = container("run", &["-v", "../etc:/x", "bb"]).unwrap_err();
        assert!(
            e.contains("-v") && e.contains("\"../etc\"") && e.contains("absolute path"),
            "{e}"
        );
        let e = container("run", &["-v", "a:/x", "-v", "b:/x/", "bb"]).unwrap_err();
        assert!(e.contains("/x is mounted twice"), "{e}");
        match parse_str(&[
            "daemon",
            "--volumes",
            "/v",
            "--bind-root",
            "/a",
            "--bind-root=/b",
            "--containers",
            "/c",
        ]) {
            Ok(Cli::Daemon(o)) => {
                assert_eq!(o.volumes, Path::new("/v"));
                assert_eq!(o.containers, Path::new("/c"));
                assert_eq!(o.bind_roots, [Path::new("/a"), Path::new("/b")]);
            }
            other => panic!("{other:?}"),
        }
        let socket = PathBuf::from(paths::CONTROL_SOCKET);
        let volume = |request, json| {
            Ok(Cli::Volume {
                socket: socket.clone(),
                request,
                json,
            })
        };
        assert_eq!(
            container("volume", &["ls", "--json"]),
            volume(Request::Volumes, true)
        );
        assert_eq!(
            container("volume", &["create", "-l", "k=v", "data"]),
            volume(
                Request::VolumeCreate {
                    name: "data".into(),
                    labels: [("k".to_string(), "v".to_string())].into()
                },
                false
            )
        );
        assert_eq!(
            container("volume", &["inspect", "data"]),
            volume(
                Request::VolumeInspect {
                    name: "data".into()
                },
                false
            )
        );
        assert_eq!(
            container("volume", &["rm", "data"]),
            volume(
                Request::VolumeRm {
                    name: "data".into()
                },
                false
            )
        );
        assert!(container("volume", &["prune"])
            .unwrap_err()
            .contains("unknown command"));
        assert!(container("volume", &["rm"])
            .unwrap_err()
            .contains("missing NAME"));
        assert!(container("ps", &["-v", "a:/b"])
            .unwrap_err()
            .contains("option of run"));
        assert!(container("run", &["--bind-root", "/x", "bb"]).is_err());
    }

    /// The `run` request of a command line that must parse.
    fn run_request(list: &[&str]) -> RunRequest {
        match container("run", list) {
            Ok(Cli::Run { request, .. }) => *request,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn logs_follow() {
        assert_eq!(
            container("logs", &["-f", "web"]),
            Ok(Cli::Follow {
                socket: paths::CONTROL_SOCKET.into(),
                name: "web".into()
            })
        );
        assert_eq!(
            container("logs", &["web", "--follow"]),
            container("logs", &["-f", "web"])
        );
        assert!(container("ps", &["-f"]).is_err());
    }

    #[test]
    fn parses_container_commands() {
        let run = container(
            "run",
            &[
                "--socket", "/s", "--name", "web", "-e", "A=1", "bb", "sh", "-c", "echo hi",
            ],
        )
        .unwrap();
        assert_eq!(
            run,
            Cli::Run {
                socket: "/s".into(),
                request: Box::new(RunRequest {
                    image: "bb".into(),
                    name: Some("web".into()),
                    command: v(&["sh", "-c", "echo hi"]),
                    env: v(&["A=1"]),
                    ..Default::default()
                }),
                detach: false,
            }
        );
        let run = run_request(&[
            "--memory",
            "64M",
            "--cpus",
            "0.5",
            "--cpu-weight",
            "20",
            "--pids",
            "50",
            "--cpuset-cpus",
            "0",
            "--restart",
            "on-failure:3",
            "bb",
        ]);
        assert_eq!(run.limits.memory, Some(64 << 20));
        assert_eq!(run.limits.nano_cpus, Some(500_000_000));
        assert_eq!(run.limits.cpu_weight, Some(20));
        assert_eq!(run.limits.pids, Some(50));
        assert_eq!(run.limits.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(run.restart.to_string(), "on-failure:3");
        for (args, wanted) in [
            (&["--memory", "4k", "bb"][..], "6 MiB"),
            (&["--memory", "lots", "bb"][..], "--memory"),
            (&["--memory=lots", "bb"][..], "--memory"),
            (&["-m", "lots", "bb"][..], "-m:"),
            (&["--cpus", "0.001", "bb"][..], "cpus"),
            (&["--restart", "sometimes", "bb"][..], "on-failure:N"),
            (&["--cpu-weight", "0", "bb"][..], "1..=10000"),
            (
                &["--cpu-weight", "x", "bb"][..],
                "--cpu-weight: \"x\" is not a number",
            ),
            (&["--name", "-bad", "bb"][..], "invalid container name"),
            (
                &["-e", "no value", "bb"][..],
                "-e: \"no value\" is not NAME=value or NAME",
            ),
            (
                &["--cap-add", "frob", "bb"][..],
                "unknown capability \"frob\"",
            ),
            (&["--hostname", "a_b", "bb"][..], "invalid hostname"),
            (&["-w", "rel", "bb"][..], "workdir \"rel\""),
            (&["--tmpfs", "/", "bb"][..], "tmpfs \"/\""),
            (
                &["--rm", "--restart", "always", "bb"][..],
                "conflicting options",
            ),
            (&["-it", "bb"][..], "-i: an interactive terminal"),
            (&["--tty", "bb"][..], "--tty: an interactive terminal"),
            (&["-l", "=x", "bb"][..], "the key is empty"),
            (&["--memory"][..], "missing argument for option '--memory'"),
            (&["--frob", "bb"][..], "invalid option '--frob'"),
            (&[][..], "hostd run: missing IMAGE"),
        ] {
            let e = container("run", args).unwrap_err();
            assert!(e.contains(wanted), "{args:?}: {e}");
            // As docker run: a pointer to the help, and exit status 125.
            assert!(e.starts_with("hostd run: "), "{args:?}: {e}");
            assert!(e.ends_with("See 'hostd run --help'."), "{args:?}: {e}");
            let code = parse([&["run"][..], args].concat())
                .unwrap_err()
                .exit_code();
            assert_eq!(code, 125, "{args:?}");
        }
        assert_eq!(parse(["gc", "x"]).unwrap_err().exit_code(), 2);
        assert_eq!(
            container("start", &["web"]),
            Ok(Cli::Container {
                socket: paths::CONTROL_SOCKET.into(),
                request: Request::Start { name: "web".into() },
            })
        );
        assert!(container("start", &[]).is_err());
        assert!(matches!(
            container("rm", &["-f", "web"]),
            Ok(Cli::Container {
                request: Request::Rm { force: true, .. },
                ..
            })
        ));
        assert!(matches!(
            container("stop", &["-t", "3", "web"]),
            Ok(Cli::Container {
                request: Request::Stop {
                    timeout_secs: Some(3),
                    ..
                },
                ..
            })
        ));
        assert_eq!(
            container("ps", &["--json"]),
            Ok(Cli::Ps {
                socket: paths::CONTROL_SOCKET.into(),
                json: true
            })
        );
        assert!(container("logs", &["a", "b"]).is_err());
        assert!(container("rm", &["-x", "a"]).is_err());
        assert!(parse_str(&["daemon", "--state", "/st"]).is_ok());
        assert!(parse_str(&["status", "--state", "/st"]).is_err());
    }

    /// `docker run`'s options, with docker's meaning.
    #[test]
    fn parses_docker_run_options() {
        let env_file = std::env::temp_dir().join(format!("hostd-env-{}", std::process::id()));
        std::fs::write(
            &env_file,
            "# comment\n\nA=1\n  B=\"quoted\"\nHOSTD_TEST_UNSET_VARIABLE\nPATH\n",
        )
        .unwrap();
        let env_arg = format!("--env-file={}", env_file.display());
        let run = container(
            "run",
            &[
                "-d",
                "--rm",
                "-u",
                "www:staff",
                "-w",
                "/srv",
                "--entrypoint",
                "/bin/sh",
                "-h",
                "web1",
                "--read-only",
                "--oom-score-adj",
                "-17",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/t:size=1m,mode=700",
                "--cap-add",
                "net_admin",
                "--cap-drop=ALL",
                &env_arg,
                "-l",
                "a=b",
                "--label",
                "c",
                "bb",
                "-c",
                "true",
            ],
        )
        .unwrap();
        std::fs::remove_file(&env_file).unwrap();
        let Cli::Run {
            request, detach, ..
        } = run
        else {
            panic!("{run:?}")
        };
        assert!(detach && request.auto_remove && request.read_only);
        assert_eq!(request.oom_score_adj, -17);
        assert_eq!(request.user.as_deref(), Some("www:staff"));
        assert_eq!(request.workdir.as_deref(), Some("/srv"));
        assert_eq!(request.entrypoint, Some(v(&["/bin/sh"])));
        assert_eq!(request.command, v(&["-c", "true"]));
        assert_eq!(request.hostname.as_deref(), Some("web1"));
        assert_eq!(request.tmpfs.get("/run").map(String::as_str), Some(""));
        assert_eq!(
            request.tmpfs.get("/t").map(String::as_str),
            Some("size=1m,mode=700")
        );
        assert_eq!(request.cap_add, v(&["net_admin"]));
        assert_eq!(request.cap_drop, v(&["ALL"]));
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            request.env,
            v(&["A=1", "B=\"quoted\"", &format!("PATH={path}")])
        );
        assert_eq!(request.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(request.labels.get("c").map(String::as_str), Some(""));
        // --entrypoint "" clears the image's.
        assert_eq!(
            run_request(&["--entrypoint", "", "bb"]).entrypoint,
            Some(vec![])
        );
        // -h is the host name for run only; -t is stop's time.
        assert_eq!(
            run_request(&["--hostname=h", "bb"]).hostname.as_deref(),
            Some("h")
        );
        let e = container("run", &["--env-file", "/nonexistent/env", "bb"]).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/env"), "{e}");
    }

    /// `--flag=VALUE` is `--flag VALUE`, for every option and command;
    /// short options take their value attached too.
    #[test]
    fn every_value_inline_or_separate() {
        let separate = run_request(&[
            "--name",
            "x",
            "--memory",
            "64M",
            "--cpus",
            "2",
            "-e",
            "A=1",
            "--env",
            "B=2",
            "--restart",
            "always",
            "bb",
        ]);
        let inline = run_request(&[
            "--name=x",
            "--memory=64M",
            "--cpus=2",
            "-e=A=1",
            "--env=B=2",
            "--restart=always",
            "bb",
        ]);
        assert_eq!(separate, inline);
        assert_eq!(inline.name.as_deref(), Some("x"));
        assert_eq!(inline.limits.memory, Some(64 << 20));
        assert_eq!(inline.env, v(&["A=1", "B=2"]));
        assert_eq!(run_request(&["-eA=1", "-m64M", "bb"]).env, v(&["A=1"]));
        for stop in [
            &["-t", "5", "w"][..],
            &["-t5", "w"],
            &["-t=5", "w"],
            &["--time=5", "w"],
        ] {
            assert!(
                matches!(
                    container("stop", stop),
                    Ok(Cli::Container {
                        request: Request::Stop {
                            timeout_secs: Some(5),
                            ..
                        },
                        ..
                    })
                ),
                "{stop:?}"
            );
        }
        assert_eq!(
            parse_str(&["ps", "--socket=/s"]),
            parse_str(&["ps", "--socket", "/s"])
        );
        // After the image everything is the container's, flags included.
        let run = run_request(&["bb", "--name=y", "-e", "--", "x"]);
        assert_eq!(run.name, None);
        assert_eq!(run.command, v(&["--name=y", "-e", "--", "x"]));
        // `--` ends the options.
        assert_eq!(
            container("rm", &["--", "-f"]),
            Ok(Cli::Container {
                socket: paths::CONTROL_SOCKET.into(),
                request: Request::Rm {
                    name: "-f".into(),
                    force: false
                },
            })
        );
    }

    #[test]
    fn usage_errors_name_the_option() {
        for (args, wanted) in [
            (&["--json=yes", "images"][..], "'--json'"),
            (
                &["ps", "-f"][..],
                "-f is an option of rm and logs, not of ps",
            ),
            (
                &["--memory", "1G", "ps"][..],
                "--memory is an option of run, not of ps",
            ),
            (
                &["images", "--store=/x"][..],
                "--store is an option of daemon, not of images",
            ),
            (&["stop", "-t"][..], "missing argument for option '-t'"),
            (
                &["stop", "-t", "soon", "w"][..],
                "-t: \"soon\" is not a number",
            ),
            (
                &["stop", "-t", "18446744073709551615", "w"][..],
                "-t: stop timeout 18446744073709551615 s is out of range",
            ),
            (
                &["stop", "-t", "99999999999999999999", "w"][..],
                "is not a number",
            ),
            (
                &["status", "--socket"][..],
                "missing argument for option '--socket'",
            ),
            (&["frobnicate"][..], "unknown command \"frobnicate\""),
            (&["gc", "x"][..], "gc: unexpected argument \"x\""),
        ] {
            let e = parse_str(args).unwrap_err();
            assert!(e.starts_with("hostd: "), "{args:?}: {e}");
            assert!(e.contains(wanted), "{args:?}: {e}");
        }
    }

    #[test]
    fn parses_commands() {
        let default = PathBuf::from(paths::CONTROL_SOCKET);
        let sock = paths::CONTROL_SOCKET;
        let store = paths::STORE;
        assert_eq!(parse_str(&[]), Ok(daemon_at(sock, store)));
        assert_eq!(parse_str(&["daemon"]), Ok(daemon_at(sock, store)));
        assert_eq!(parse_str(&["status"]), Ok(Cli::Status(default)));
        assert_eq!(
            parse_str(&["status", "--socket", "/tmp/s"]),
            Ok(Cli::Status("/tmp/s".into()))
        );
        assert_eq!(
            parse_str(&["--socket=/tmp/s"]),
            Ok(daemon_at("/tmp/s", store))
        );
        assert_eq!(
            parse_str(&["daemon", "--store", "/tmp/st", "--socket", "/s"]),
            Ok(daemon_at("/s", "/tmp/st"))
        );
        assert_eq!(parse_str(&["--version"]), Ok(Cli::Version));
        assert_eq!(parse_str(&["--help"]), Ok(Cli::Help(USAGE)));
        assert_eq!(parse_str(&["run", "--help"]), Ok(Cli::Help(RUN_USAGE)));
        for command in COMMANDS {
            let Ok(Cli::Help(usage)) = parse_str(&[command, "--help"]) else {
                panic!("{command} --help");
            };
            assert!(
                usage.contains(&format!("hostd {command}")) || command == "daemon",
                "{usage}"
            );
            if command != "run" {
                // For run, -h is --hostname, as in docker.
                assert_eq!(parse_str(&[command, "-h"]), parse_str(&[command, "--help"]));
            }
        }
        assert!(parse_str(&["status", "daemon"]).is_err());
        assert!(parse_str(&["--socket"]).is_err());
        assert!(parse_str(&["daemon", "--state"])
            .unwrap_err()
            .starts_with("hostd: missing argument for option '--state'\nusage: hostd"));
        assert_eq!(
            parse_str(&["daemon", "--store=/tmp/st", "--socket=/s"]),
            Ok(daemon_at("/s", "/tmp/st"))
        );
        assert!(matches!(
            parse_str(&["daemon", "--boot-manifest=/b.json"]),
            Ok(Cli::Daemon(d)) if d.boot_manifest.as_deref() == Some(Path::new("/b.json"))
        ));
        assert!(parse_str(&["--store"]).is_err());
        let Ok(Cli::Daemon(d)) = parse_str(&[
            "daemon",
            "--insecure-registry",
            "10.0.2.2:5000",
            "--registry-mirror",
            "docker.io=mirror.lab:5000",
            "--registry-mirror=docker.io=10.0.0.9:5000",
            "--registry-ca=/ca.pem",
        ]) else {
            panic!("daemon options");
        };
        assert_eq!(d.registries.insecure, ["10.0.2.2:5000"]);
        assert_eq!(
            d.registries.mirrors["docker.io"],
            ["mirror.lab:5000", "10.0.0.9:5000"]
        );
        assert_eq!(d.registries.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        let bad = parse_str(&["daemon", "--registry-mirror", "docker.io"]).unwrap_err();
        assert!(bad.to_string().contains("is not REGISTRY=MIRROR"), "{bad}");
        assert!(matches!(
            parse_str(&["daemon", "--memory-cgroups", "limited"]),
            Ok(Cli::Daemon(d)) if d.memory_cgroups == mkhost_shared::boot_config::MemoryCgroups::Limited
        ));
        let bad = parse_str(&["daemon", "--memory-cgroups=some"]).unwrap_err();
        assert!(
            bad.to_string().contains("\"some\" is not each or limited"),
            "{bad}"
        );
        assert!(parse_str(&["pull"])
            .unwrap_err()
            .to_string()
            .contains("missing REF"));
        assert!(matches!(
            parse_str(&["run", "--pull", "sometimes", "bb"]),
            Err(e) if e.to_string().contains("unknown pull policy")
        ));
    }

    #[test]
    fn parses_image_commands() {
        let s = || PathBuf::from("/s");
        assert_eq!(
            parse_str(&["images", "--socket", "/s"]),
            Ok(Cli::Images {
                socket: s(),
                json: false
            })
        );
        assert_eq!(
            parse_str(&["images", "--json", "--socket=/s"]),
            Ok(Cli::Images {
                socket: s(),
                json: true
            })
        );
        assert_eq!(
            parse_str(&["import", "img.tar", "--socket", "/s"]),
            Ok(Cli::Import {
                socket: s(),
                path: "img.tar".into(),
                reference: None,
            })
        );
        assert_eq!(
            parse_str(&["import", "--socket", "/s", "rootfs.tar.gz", "app:1"]),
            Ok(Cli::Import {
                socket: s(),
                path: "rootfs.tar.gz".into(),
                reference: Some("app:1".into()),
            })
        );
        assert!(parse_str(&["import", "a.tar", "b", "c"]).is_err());
        assert_eq!(
            parse_str(&["--socket", "/s", "inspect", "busybox"]),
            Ok(Cli::Inspect {
                socket: s(),
                image: "busybox".into()
            })
        );
        assert_eq!(
            parse_str(&["rmi", "sha256:ab", "--socket", "/s"]),
            Ok(Cli::Rmi {
                socket: s(),
                image: "sha256:ab".into()
            })
        );
        assert_eq!(parse_str(&["gc", "--socket", "/s"]), Ok(Cli::Gc(s())));
        assert!(parse_str(&["import"]).is_err());
        assert!(parse_str(&["inspect"]).is_err());
        assert!(parse_str(&["rmi", "a", "b"]).is_err());
        assert!(parse_str(&["gc", "x"]).is_err());
        assert!(parse_str(&["status", "--json"]).is_err());
        assert!(parse_str(&["images", "--store", "/x"]).is_err());
        assert!(parse_str(&["images", "--frob"]).is_err());
    }

    fn oci(list: &[&str]) -> Result<OciCli, String> {
        match parse_str(&[&["oci"], list].concat())? {
            Cli::Oci(cli) => Ok(cli),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_oci_commands() {
        let cli = oci(&[
            "--root",
            "/r",
            "create",
            "--bundle=/b",
            "--pid-file",
            "/p",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.root, PathBuf::from("/r"));
        match cli.command {
            Oci::Create(id, opts) => {
                assert_eq!(id, "c1");
                assert_eq!(opts.bundle, PathBuf::from("/b"));
                assert_eq!(opts.pid_file, Some(PathBuf::from("/p")));
            }
            other => panic!("{other:?}"),
        }
        let cli = oci(&["kill", "c1", "KILL"]).unwrap();
        assert_eq!(cli.root, PathBuf::from(runtime::DEFAULT_ROOT));
        assert_eq!(
            cli.command,
            Oci::Kill {
                id: "c1".into(),
                signal: 9,
                all: false
            }
        );
        assert_eq!(
            oci(&["delete", "-f", "c1"]).unwrap().command,
            Oci::Delete {
                id: "c1".into(),
                force: true
            }
        );
        match oci(&["run", "-b", "b", "-d", "x"]).unwrap().command {
            Oci::Run(id, opts) => {
                assert_eq!(id, "x");
                assert!(opts.detach && !opts.keep);
                assert_eq!(opts.create.bundle, PathBuf::from("b"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(oci(&[]).unwrap().command, Oci::Help);
        assert_eq!(oci(&["--help"]).unwrap().command, Oci::Help);
        assert!(oci(&["start"]).is_err());
        assert!(oci(&["kill", "c1", "BOGUS"]).is_err());
        assert!(oci(&["state", "a", "b"]).is_err());
        assert!(oci(&["start", "--force", "a"]).is_err());
        assert!(oci(&["frob", "a"]).is_err());
    }

    #[test]
    fn oci_values_inline_or_separate() {
        let separate = oci(&[
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "run",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--preserve-fds",
            "2",
            "--detach",
            "x",
        ])
        .unwrap();
        let inline = oci(&[
            "--root=/r",
            "--log=/l",
            "--log-format=json",
            "run",
            "--bundle=/b",
            "--pid-file=/p",
            "--preserve-fds=2",
            "-d",
            "x",
        ])
        .unwrap();
        assert_eq!(separate, inline);
        assert_eq!(inline.log.as_deref(), Some(Path::new("/l")));
        let Oci::Run(_, opts) = &inline.command else {
            panic!("{inline:?}")
        };
        assert_eq!(opts.create.preserve_fds, 2);
        // runc's one-dash long names.
        assert_eq!(
            oci(&[
                "-root",
                "/r",
                "-log=/l",
                "-log-format",
                "json",
                "run",
                "-bundle=/b",
                "x"
            ])
            .unwrap()
            .root,
            PathBuf::from("/r")
        );
        assert_eq!(
            oci(&[
                "run",
                "-b=/b",
                "-pid-file",
                "/p",
                "-preserve-fds=2",
                "-detach",
                "x"
            ]),
            Ok(inline).map(|cli| OciCli {
                log: None,
                root: runtime::DEFAULT_ROOT.into(),
                ..cli
            })
        );
    }

    #[test]
    fn oci_usage_errors_name_the_option() {
        for (args, wanted) in [
            (&["--frob", "list"][..], "invalid option '--frob'"),
            (&["--root"][..], "missing argument for option '--root'"),
            (
                &["run", "--bundle"][..],
                "missing argument for option '--bundle'",
            ),
            (&["list", "--all"][..], "list: invalid option '--all'"),
            (
                &["create", "--preserve-fds=x", "c"][..],
                "--preserve-fds: \"x\" is not a number",
            ),
            (
                &["create", "--preserve-fds=4294967295", "c"][..],
                "--preserve-fds: 4294967295 is out of range",
            ),
            (&["delete", "--force=yes", "c"][..], "'--force'"),
            (&["frob"][..], "unknown command \"frob\""),
            (&["--systemd-cgroup", "list"][..], "not supported"),
        ] {
            let e = oci(args).unwrap_err();
            assert!(e.starts_with("hostd oci: "), "{args:?}: {e}");
            assert!(e.contains(wanted), "{args:?}: {e}");
            assert!(e.contains("usage: hostd oci"), "{args:?}: {e}");
        }
    }

    #[test]
    fn zygote() {
        assert_eq!(
            parse_str(&["zygote", "--state", "/st", "--conn=3", "--listener", "4"]),
            Ok(Cli::Zygote {
                state: "/st".into(),
                conn: 3,
                listener: 4
            })
        );
        for args in [
            &["zygote"][..],
            &["zygote", "--state", "/st", "--conn", "x", "--listener", "4"],
            &["zygote", "--frob"],
        ] {
            let e = parse_str(args).unwrap_err();
            assert!(e.starts_with("hostd zygote: "), "{args:?}: {e}");
        }
    }
}
