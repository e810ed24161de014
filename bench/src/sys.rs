//! Process-level plumbing: file-descriptor limit, CPU pinning, /proc readers.

use std::io;

/// Raise RLIMIT_NOFILE: first try to lift the hard limit too (works as root / CAP_SYS_RESOURCE),
/// else set the soft limit to the hard one. Returns the soft limit in force afterwards.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        // fs.nr_open caps what even root may ask for.
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20);
        let want = nr_open.min(1 << 20) as libc::rlim_t;
        if rl.rlim_max < want {
            let up = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return want as u64;
            }
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur as u64
    }
}

/// Pin a task (0 = the calling thread) to one CPU.
pub fn pin(pid: libc::pid_t, cpu: usize) -> io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Nice value of the calling thread (threads started later inherit it).
pub fn set_nice(n: i32) -> io::Result<()> {
    // PRIO_PROCESS with 0 = the calling thread on Linux.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn online_cpus() -> usize {
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize }
}

/// Resident set size in bytes: smaps_rollup's Rss when the kernel has it, else status VmRSS.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let kb_field = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| {
                l[key.len()..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(v) = kb_field(&t, "Rss:") {
            return Some(v);
        }
    }
    let t = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&t, "VmRSS:")
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields restart after the last ')'.
    let rest = &t[t.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

/// "AMD EPYC" etc. from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-, 5- and 15-minute load averages (other work on the machine skews every number).
pub fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| {
            t.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// (on-CPU ns, runqueue-wait ns) of a task from a `schedstat` file: `/proc/PID/schedstat`
/// is the process's main thread (the reactor), `/proc/thread-self/schedstat` the caller.
pub fn schedstat(path: &str) -> Option<(u64, u64)> {
    let t = std::fs::read_to_string(path).ok()?;
    let mut it = t.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// `schedstat` summed over several tasks (the reactors of a cluster's nodes); `None` when
/// there are none or one cannot be read.
pub fn schedstat_sum(paths: &[String]) -> Option<(u64, u64)> {
    if paths.is_empty() {
        return None;
    }
    paths.iter().try_fold((0, 0), |(cpu, wait), p| {
        schedstat(p).map(|(c, w)| (cpu + c, wait + w))
    })
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat; machine-wide). A dropped SYN is retried
/// after a second, which shows as a one-second step in a connect storm.
pub fn listen_overflows() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = t.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}
