//! Where a run's CPU went: the bench process (the service and its callers, in-process), the child processes
//! it waited for (pgbench), PostgreSQL's processes, and the whole machine. Linux only (`/proc`).

use std::sync::OnceLock;
use std::time::Duration;

/// The postmaster of the PostgreSQL the bench runs against, when it is the bench's own cluster.
static POSTMASTER: OnceLock<u32> = OnceLock::new();

/// Counts PostgreSQL's CPU from here on: the postmaster whose pid file is in `data_dir`, and its children.
pub fn watch_postgres(data_dir: &std::path::Path) {
    let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    if let Some(pid) = pid {
        let _ = POSTMASTER.set(pid);
    }
}

/// CPU counters at one instant.
#[derive(Clone, Copy)]
pub struct CpuSample {
    own: Duration,
    children: Duration,
    postgres: Option<Duration>,
    /// Machine-wide busy and total jiffies.
    machine: (u64, u64),
}

/// Which process generated a run's load.
#[derive(Clone, Copy)]
pub enum Client {
    /// The bench process itself: the service and its in-process callers.
    ThisProcess,
    /// The child processes the bench waited for since the sample: pgbench.
    WaitedChildren,
}

/// What a run used, per call (or per pgbench transaction).
#[derive(Clone, Copy, Default)]
pub struct CpuUse {
    /// The load generator's process: the bench (service and callers) or pgbench.
    pub client_ms: f64,
    /// PostgreSQL's processes, when the bench runs its own cluster.
    pub postgres_ms: Option<f64>,
    /// Share of the machine's cores that were busy.
    pub busy: f64,
}

impl CpuSample {
    pub fn now() -> Self {
        Self {
            own: rusage(libc::RUSAGE_SELF),
            children: rusage(libc::RUSAGE_CHILDREN),
            postgres: POSTMASTER.get().and_then(|pid| postgres_cpu(*pid)),
            machine: machine_jiffies(),
        }
    }

    /// Use since `self`, over `calls`, with `client` as the load generator.
    pub fn until_now(&self, calls: usize, client: Client) -> CpuUse {
        let now = Self::now();
        let per_call = |d: Duration| d.as_secs_f64() * 1e3 / calls.max(1) as f64;
        let client = match client {
            Client::ThisProcess => now.own.saturating_sub(self.own),
            Client::WaitedChildren => now.children.saturating_sub(self.children),
        };
        let postgres = match (self.postgres, now.postgres) {
            (Some(before), Some(after)) => Some(per_call(after.saturating_sub(before))),
            _ => None,
        };
        let busy = now.machine.0.saturating_sub(self.machine.0) as f64
            / now.machine.1.saturating_sub(self.machine.1).max(1) as f64;
        CpuUse {
            client_ms: per_call(client),
            postgres_ms: postgres,
            busy,
        }
    }
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// The fields of /proc/<pid>/stat after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The postmaster's CPU, its reaped children's (backends that exited) and its live children's. A child
/// reaped during the scan would be in neither count, so the scan is repeated until the reaped count held
/// still across it.
fn postgres_cpu(postmaster: u32) -> Option<Duration> {
    // Fields from 3: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let at = |fields: &[u64], n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let reaped = |fields: &[u64]| at(fields, 16) + at(fields, 17);
    for _ in 0..10 {
        let own = stat_fields(postmaster)?;
        let mut jiffies = at(&own, 14) + at(&own, 15) + reaped(&own);
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            if let Some(fields) = stat_fields(pid)
                && at(&fields, 4) == u64::from(postmaster)
            {
                jiffies += at(&fields, 14) + at(&fields, 15);
            }
        }
        if reaped(&stat_fields(postmaster)?) == reaped(&own) {
            return Some(Duration::from_secs_f64(jiffies as f64 / ticks()));
        }
    }
    None
}

/// One process's own CPU so far (user and system), e.g. a nats-server the bench started.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // Fields from 3: utime(14) stime(15).
    let jiffies = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Some(Duration::from_secs_f64(jiffies as f64 / ticks()))
}

/// Busy and total jiffies of all cores, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
