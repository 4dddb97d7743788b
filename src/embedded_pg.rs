//! A private PostgreSQL cluster for running with no configuration: initialised once under a data directory,
//! started from the PostgreSQL binaries installed on the machine, stopped when its owner goes away.
//!
//! PostgreSQL refuses to run as root, so when this process is root the cluster runs as the `postgres`
//! system user that the distribution's packages create.
//!
//! The cluster trusts every connection it accepts, so it accepts them only on a Unix socket in a directory
//! that only its owner can enter ([`SOCKET_DIR`] inside the data directory, mode 0700): no TCP, and no other
//! local user.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL is not installed: install it (e.g. `apt-get install -y postgresql`) or set DATABASE_URL \
         to a server you have"
    )]
    NotInstalled,
    #[error(
        "running as root, the embedded PostgreSQL needs the `postgres` system user (created by the \
         postgresql package); install the package or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("embedded PostgreSQL: {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("embedded PostgreSQL failed to {what}; see {log}")]
    Failed { what: String, log: PathBuf },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedPgError {
    let what = what.into();
    move |source| EmbeddedPgError::Io { what, source }
}

/// The socket directory's name inside the data directory.
pub const SOCKET_DIR: &str = "socket";

/// Server settings for a cluster whose data may be thrown away (tests): no fsync, no waiting on WAL.
pub const THROWAWAY_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

/// A running private cluster. Dropping it stops the server (fast shutdown); if this process dies first, the
/// kernel asks the server for a fast shutdown.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// Names the socket file (`.s.PGSQL.<port>`); nothing listens on it over TCP.
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    /// Sends the keeper thread the signal that stops the server; dropping it asks for a fast shutdown.
    stop: Option<mpsc::Sender<libc::c_int>>,
    keeper: Option<thread::JoinHandle<()>>,
}

/// The system user to run as, when this process is root.
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, EmbeddedPgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy the fields at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(EmbeddedPgError::NoPostgresUser);
    }
    // SAFETY: entry is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

/// The directory holding `initdb` and `postgres`: PATH first, then `pg_config`, then Debian's layout.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedPgError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Follow a symlinked `postgres` to its real directory, where its share files are found.
                let real = fs::canonicalize(dir.join("postgres")).ok();
                return Ok(real
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir));
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_both(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedPgError::NotInstalled)
}

impl EmbeddedPostgres {
    /// Starts a cluster in `data_dir`, running `initdb` first if the directory holds none.
    pub fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Result<Self, EmbeddedPgError> {
        Self::start_on_port(data_dir, free_port()?, settings)
    }

    /// [`EmbeddedPostgres::start`] with the socket named by `port`: the same URL as a cluster that ran on
    /// it before, so clients of a server that crashed find it again after [`EmbeddedPostgres::crash`].
    pub fn start_on_port(
        data_dir: &Path,
        port: u16,
        settings: &[(&str, &str)],
    ) -> Result<Self, EmbeddedPgError> {
        let bin = find_bin_dir()?;
        let run_as = run_as()?;
        fs::create_dir_all(data_dir).map_err(io_err(format!("create {}", data_dir.display())))?;
        let data_dir = fs::canonicalize(data_dir).map_err(io_err("resolve the data directory"))?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("restrict the data directory"))?;
        let log = data_dir.with_extension("log");

        if !data_dir.join("PG_VERSION").exists() {
            if let Some(user) = &run_as {
                chown_recursive(&data_dir, user)?;
            }
            let log_file =
                File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
            let mut initdb = Command::new(bin.join("initdb"));
            initdb
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ])
                .stdout(log_file.try_clone().map_err(io_err("open the log"))?)
                .stderr(log_file);
            as_user(&mut initdb, run_as.as_ref());
            let status = initdb.status().map_err(io_err("run initdb"))?;
            if !status.success() {
                return Err(EmbeddedPgError::Failed {
                    what: "initialise its data directory".into(),
                    log,
                });
            }
        }

        let socket_dir = private_socket_dir(&data_dir, run_as.as_ref())?;
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("open {}", log.display())))?;
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .arg("-c")
            .arg("unix_socket_permissions=0700")
            .arg("-c")
            .arg("max_connections=200");
        for (key, value) in settings {
            postgres.arg("-c").arg(format!("{key}={value}"));
        }
        postgres
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(io_err("open the log"))?)
            .stderr(log_file)
            // Its own process group: a terminal's Ctrl-C reaches us, and we stop the server after draining.
            .process_group(0);
        as_user(&mut postgres, run_as.as_ref());
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            postgres.pre_exec(|| {
                // If we die without stopping it, the kernel asks the server for a fast shutdown.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let pid_file = data_dir.join("postmaster.pid");
        // The kernel's parent-death signal follows the *thread* that spawned the server, so a dedicated thread
        // spawns it and lives exactly as long as the server should.
        let keeper = thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || keep(postgres, &pid_file, ready_tx, stop_rx))
            .map_err(io_err("start the embedded-postgres thread"))?;
        let failed = |what: &str| EmbeddedPgError::Failed {
            what: what.into(),
            log: log.clone(),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                port,
                data_dir,
                socket_dir,
                stop: Some(stop_tx),
                keeper: Some(keeper),
            }),
            Ok(Err(Startup::Spawn(source))) => Err(EmbeddedPgError::Io {
                what: "start postgres".into(),
                source,
            }),
            Ok(Err(Startup::Exited)) => Err(failed(
                "start (another server may be using this data directory)",
            )),
            Ok(Err(Startup::Timeout)) => Err(failed("become ready within 60 s")),
            Err(_) => Err(failed("start")),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// A URL for `database` as the cluster's superuser, through the socket: the `host` query parameter
    /// names the socket's directory and overrides `localhost` (for sqlx as for libpq).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?host={}",
            self.port,
            query_escape(&self.socket_dir.to_string_lossy()),
        )
    }

    /// Fast shutdown: disconnect clients, checkpoint, exit. Waits for the server to finish.
    pub fn stop(&mut self) {
        self.shut_down(libc::SIGINT);
    }

    /// Immediate shutdown, as a crash leaves it: every process exits at once, without a checkpoint, and
    /// what was not yet written to the WAL is lost; the next start recovers. Waits for the server to exit.
    pub fn crash(&mut self) {
        self.shut_down(libc::SIGQUIT);
    }

    fn shut_down(&mut self, signal: libc::c_int) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(signal);
        }
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Startup {
    Spawn(io::Error),
    Exited,
    Timeout,
}

/// Runs on the keeper thread: spawn, report readiness, then wait for the stop request (or for the owner to
/// vanish) and shut the server down.
fn keep(
    mut command: Command,
    pid_file: &Path,
    ready: mpsc::Sender<Result<(), Startup>>,
    stop: mpsc::Receiver<libc::c_int>,
) {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let _ = ready.send(Err(Startup::Spawn(err)));
            return;
        }
    };
    let outcome = wait_until_ready(&mut child, pid_file);
    let started = outcome.is_ok();
    let _ = ready.send(outcome);
    // An explicit stop names its signal; a dropped handle asks for a fast shutdown.
    let signal = if started {
        stop.recv().unwrap_or(libc::SIGINT)
    } else {
        libc::SIGINT
    };
    if let Ok(None) = child.try_wait() {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
    let _ = child.wait();
}

/// The server writes its pid, and "ready" once it accepts connections, into postmaster.pid. The pid must be
/// our child's: a server already running on the data directory has a ready pid file too, and our child then
/// exits (the directory is locked), which must not read as ready.
fn wait_until_ready(child: &mut Child, pid_file: &Path) -> Result<(), Startup> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = child.id().to_string();
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(Startup::Exited);
        }
        if let Ok(contents) = fs::read_to_string(pid_file) {
            let mut lines = contents.lines().map(str::trim);
            if lines.next() == Some(pid.as_str()) && lines.nth(6) == Some("ready") {
                return Ok(());
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(Startup::Timeout)
}

fn as_user(command: &mut Command, run_as: Option<&RunAs>) {
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
        // HOME of root is not readable by postgres; initdb and postgres do not need one.
        command.env_remove("HOME").current_dir("/");
    }
}

/// Creates (or corrects) the 0700 socket directory inside the data directory, owned by the server's user.
fn private_socket_dir(data_dir: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, EmbeddedPgError> {
    let dir = data_dir.join(SOCKET_DIR);
    match fs::create_dir(&dir) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err(format!("create {}", dir.display()))(err));
        }
        _ => {}
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err("restrict the socket directory"))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(io_err("hand the socket directory to the postgres user"))?;
    }
    Ok(dir)
}

/// Percent-escapes what a URL query value cannot hold as is.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The socket file is named by a port; one free on TCP as well means a client that tries TCP by mistake is
/// refused rather than reaching some other server.
fn free_port() -> Result<u16, EmbeddedPgError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("find a free port"))?
        .port())
}

fn chown_recursive(path: &Path, user: &RunAs) -> Result<(), EmbeddedPgError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(format!(
        "hand {} to the postgres user",
        path.display()
    )))?;
    if path.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err(format!("read {}", path.display())))? {
            let entry = entry.map_err(io_err(format!("read {}", path.display())))?;
            if !entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                chown_recursive(&entry.path(), user)?;
            }
        }
    }
    Ok(())
}
