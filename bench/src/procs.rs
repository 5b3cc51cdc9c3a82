//! Child processes and what they cost, read from `/proc`.
//!
//! Every process the benchmark starts is a [`Child`]: killed when dropped (also when the
//! benchmark fails half-way), with its first stdout lines read as readiness signals. CPU time
//! is `utime + stime` from `/proc/PID/stat` (kept apart too: user space and kernel), summed
//! over a process and all its descendants (sshd forks a child per connection); memory is
//! `VmRSS`/`VmHWM` from `/proc/PID/status`.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};

/// How long a started process may take to say it is ready.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(30);

/// A started process, killed when dropped.
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) pid: u32,
    process: tokio::process::Child,
    stdin: Option<ChildStdin>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    stderr: Option<Lines<BufReader<ChildStderr>>>,
}

impl Child {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub(crate) fn spawn(name: &str, mut command: Command) -> anyhow::Result<Child> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut process = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", command.as_std()))?;
        let pid = process
            .id()
            .ok_or_else(|| anyhow!("{name} exited as it started"))?;
        Ok(Child {
            name: name.to_owned(),
            pid,
            stdin: process.stdin.take(),
            stdout: process.stdout.take().map(|out| BufReader::new(out).lines()),
            stderr: process.stderr.take().map(|err| BufReader::new(err).lines()),
            process,
        })
    }

    /// Writes one line to the process's stdin.
    pub(crate) async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}'s stdin is closed", self.name))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next stdout line that starts with `prefix` (the rest of it), within
    /// [`READY_WITHIN`]. Fails with the process's stderr if it exits first.
    pub(crate) async fn expect_stdout(&mut self, prefix: &str) -> anyhow::Result<String> {
        let name = self.name.clone();
        let stdout = self
            .stdout
            .as_mut()
            .ok_or_else(|| anyhow!("{name}'s stdout is gone"))?;
        let found = tokio::time::timeout(READY_WITHIN, async {
            while let Some(line) = stdout.next_line().await? {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(Some(rest.trim().to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        match found {
            Ok(Ok(Some(rest))) => Ok(rest),
            Ok(Ok(None)) | Ok(Err(_)) => bail!(
                "{name} ended before saying `{prefix}`: {}",
                self.stderr_text().await
            ),
            Err(_) => bail!(
                "{name} did not say `{prefix}` within {} s",
                READY_WITHIN.as_secs()
            ),
        }
    }

    /// The next stderr line that contains `needle`, within [`READY_WITHIN`].
    pub(crate) async fn expect_stderr(&mut self, needle: &str) -> anyhow::Result<()> {
        let name = self.name.clone();
        let stderr = self
            .stderr
            .as_mut()
            .ok_or_else(|| anyhow!("{name}'s stderr is gone"))?;
        let mut seen = Vec::new();
        let found = tokio::time::timeout(READY_WITHIN, async {
            while let Some(line) = stderr.next_line().await? {
                if line.contains(needle) {
                    return Ok(true);
                }
                seen.push(line);
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match found {
            Ok(Ok(true)) => {
                // Keep draining so the process never blocks on a full pipe.
                if let Some(mut stderr) = self.stderr.take() {
                    tokio::spawn(
                        async move { while let Ok(Some(_)) = stderr.next_line().await {} },
                    );
                }
                Ok(())
            }
            _ => bail!("{name} did not say `{needle}`: {}", seen.join(" / ")),
        }
    }

    /// Drains stdout and stderr in the background from now on, so the process never blocks on
    /// a full pipe.
    pub(crate) fn drain(&mut self) {
        if let Some(mut stdout) = self.stdout.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        }
        if let Some(mut stderr) = self.stderr.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        }
    }

    async fn stderr_text(&mut self) -> String {
        let Some(stderr) = self.stderr.as_mut() else {
            return String::new();
        };
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(line)) = stderr.next_line().await {
                text.push(line);
            }
        })
        .await;
        text.join(" / ")
    }

    /// Closes stdin (our processes stop cleanly on that) and waits briefly for the exit;
    /// kills the process if it does not go.
    pub(crate) async fn stop(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(5), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU time of one process, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ticks {
    /// In user space (`utime`).
    user: u64,
    /// In the kernel on its behalf (`stime`).
    kernel: u64,
}

/// CPU seconds between two snapshots, split.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSpent {
    pub(crate) user: f64,
    pub(crate) kernel: f64,
}

impl CpuSpent {
    pub(crate) fn total(self) -> f64 {
        self.user + self.kernel
    }
}

/// `(ppid, times)` of `pid`.
fn stat(pid: u32) -> Option<(u32, Ticks)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let kernel: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, Ticks { user, kernel }))
}

/// CPU ticks of every process in the trees rooted at `roots`, by pid.
pub(crate) fn cpu_snapshot(roots: &[u32]) -> HashMap<u32, Ticks> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut ticks = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((ppid, cpu)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
                ticks.insert(pid, cpu);
            }
        }
    }
    let mut found = HashMap::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if let Some(cpu) = ticks.get(&pid)
            && found.insert(pid, *cpu).is_none()
        {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    found
}

/// CPU seconds spent between two snapshots (processes that appeared count from zero).
pub(crate) fn cpu_seconds(before: &HashMap<u32, Ticks>, after: &HashMap<u32, Ticks>) -> f64 {
    cpu_spent(before, after).total()
}

/// [`cpu_seconds`], in user space and in the kernel.
pub(crate) fn cpu_spent(before: &HashMap<u32, Ticks>, after: &HashMap<u32, Ticks>) -> CpuSpent {
    let (mut user, mut kernel) = (0u64, 0u64);
    for (pid, now) in after {
        let then = before.get(pid).copied().unwrap_or_default();
        user += now.user.saturating_sub(then.user);
        kernel += now.kernel.saturating_sub(then.kernel);
    }
    let per_second = clock_ticks();
    CpuSpent {
        user: user as f64 / per_second,
        kernel: kernel as f64 / per_second,
    }
}

/// Resident memory of `pid` now and at its peak, in bytes.
pub(crate) fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => bail!("/proc/{pid}/status has no VmRSS/VmHWM"),
    }
}
