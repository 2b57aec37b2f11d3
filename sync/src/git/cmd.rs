//! Running the `git` program: clean environment, no prompts, bounded output, typed errors.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::GitError;

/// Most stdout bytes captured from one command.
pub(crate) const MAX_STDOUT: usize = 64 << 20;
/// Most stderr bytes kept (the rest is drained and dropped).
pub(crate) const MAX_STDERR: usize = 64 << 10;
/// Longest stdout line accepted when streaming lines.
const MAX_LINE: usize = 64 << 10;
/// Longest one git command may run before it is killed. Some of them work on a peer's pack or
/// refs (`index-pack`, `rev-list`, `update-ref`), and one that never ends would hold a transfer
/// slot and a blocking thread for good; an hour leaves room for the largest real repositories.
pub(crate) const MAX_GIT_RUN: Duration = Duration::from_secs(3600);

enum Input {
    Null,
    Bytes(Vec<u8>),
    File(File),
}

/// The `PATH` given to every `git` (and searched for it): the node's, or a usual default.
fn search_path() -> &'static OsStr {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin")))
}

/// The `git` program, looked up in [`search_path`] once. An absolute program lets std start it
/// with `posix_spawn` (a name to look up in a `PATH` we set ourselves makes it fall back to
/// `fork` + `exec`, which gets slower as the node's memory grows). When no executable `git` is
/// found the bare name is kept, so spawning reports it as unavailable.
fn git_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::split_paths(search_path())
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join("git"))
            .find(|candidate| is_executable(candidate))
            .unwrap_or_else(|| PathBuf::from("git"))
    })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// One `git` invocation.
pub(crate) struct GitCmd {
    cmd: Command,
    /// The arguments after the global options, for error messages.
    shown: Vec<String>,
    input: Input,
    deadline: Duration,
}

/// A finished command whose status the caller inspects.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl GitCmd {
    /// `git` with a clean environment, operating on the git directory `git_dir` (never
    /// discovered from the working directory), or on no repository.
    pub(crate) fn new(git_dir: Option<&Path>) -> Self {
        let mut cmd = Command::new(git_program());
        cmd.env_clear();
        cmd.env("PATH", search_path());
        let home = git_dir
            .filter(|p| p.is_dir())
            .map(absolute)
            .unwrap_or_else(std::env::temp_dir);
        cmd.env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ADVICE", "0")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("TZ", "UTC");
        // No background maintenance from our commands; objects and refs reach the disk before
        // a command returns.
        cmd.args([
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "-c",
            "core.fsync=committed",
        ]);
        if let Some(dir) = git_dir {
            let mut arg = OsString::from("--git-dir=");
            arg.push(absolute(dir));
            cmd.arg(arg);
        }
        Self {
            cmd,
            shown: Vec::new(),
            input: Input::Null,
            deadline: MAX_GIT_RUN,
        }
    }

    /// Kills the command if it runs longer than `deadline` (default [`MAX_GIT_RUN`]).
    #[cfg(test)]
    pub(crate) fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// A `-c key=value` before the subcommand.
    pub(crate) fn config(mut self, kv: &str) -> Self {
        self.cmd.args(["-c", kv]);
        self
    }

    pub(crate) fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub(crate) fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub(crate) fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.input = Input::Bytes(bytes);
        self
    }

    pub(crate) fn stdin_file(mut self, file: File) -> Self {
        self.input = Input::File(file);
        self
    }

    fn describe(&self) -> String {
        self.shown.join(" ")
    }

    fn spawn(mut self, stdout: Stdio) -> Result<Running, GitError> {
        let args = self.describe();
        let (stdin, bytes) = match self.input {
            Input::Null => (Stdio::null(), None),
            Input::Bytes(b) => (Stdio::piped(), Some(b)),
            Input::File(f) => (Stdio::from(f), None),
        };
        let mut child = self
            .cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => GitError::GitUnavailable(e.to_string()),
                _ => GitError::Io(format!("spawning git {args}"), e),
            })?;
        let writer = match (bytes, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A child that exits early closes the pipe; its status tells what happened.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let stderr = child
            .stderr
            .take()
            .map(|pipe| std::thread::spawn(move || read_capped(pipe, MAX_STDERR)));
        let watchdog = Watchdog::arm(&child, self.deadline);
        Ok(Running {
            child,
            args,
            writer,
            stderr,
            watchdog,
            started: Instant::now(),
        })
    }

    /// Runs to completion, capturing at most [`MAX_STDOUT`] bytes of stdout.
    pub(crate) fn output(self) -> Result<Finished, GitError> {
        let mut running = self.spawn(Stdio::piped())?;
        let mut stdout = Vec::new();
        let mut too_large = false;
        if let Some(pipe) = running.child.stdout.take() {
            let read = pipe.take(MAX_STDOUT as u64 + 1).read_to_end(&mut stdout);
            if let Err(e) = read {
                let args = running.args.clone();
                running.abort();
                return Err(GitError::Io(format!("reading the output of git {args}"), e));
            }
            too_large = stdout.len() > MAX_STDOUT;
        }
        if too_large {
            let args = running.args.clone();
            running.abort();
            return Err(GitError::OutputTooLarge {
                args,
                limit: MAX_STDOUT,
            });
        }
        let (status, stderr) = running.finish()?;
        Ok(Finished { status, stdout, stderr })
    }

    /// Runs to completion; a non-zero exit is a [`GitError::Command`]. Returns stdout.
    pub(crate) fn run(self) -> Result<Vec<u8>, GitError> {
        let args = self.describe();
        let out = self.output()?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(command_error(args, out.status, out.stderr))
        }
    }

    /// Runs to completion, handing every stdout line (without its newline) to `each`; nothing
    /// is accumulated here, so the output may be arbitrarily long. Lines longer than 64 KiB
    /// are an error.
    pub(crate) fn run_lines(self, mut each: impl FnMut(&[u8])) -> Result<(), GitError> {
        let mut running = self.spawn(Stdio::piped())?;
        if let Some(pipe) = running.child.stdout.take() {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line);
                match read {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let args = running.args.clone();
                        running.abort();
                        return Err(GitError::Io(format!("reading the output of git {args}"), e));
                    }
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                } else if line.len() > MAX_LINE {
                    let args = running.args.clone();
                    running.abort();
                    return Err(GitError::OutputTooLarge { args, limit: MAX_LINE });
                }
                each(&line);
            }
        }
        let args = running.args.clone();
        let (status, stderr) = running.finish()?;
        if status.success() {
            Ok(())
        } else {
            Err(command_error(args, status, stderr))
        }
    }

    /// Runs to completion with stdout going to `file`.
    pub(crate) fn run_to_file(self, file: File) -> Result<(), GitError> {
        let running = self.spawn(Stdio::from(file))?;
        let args = running.args.clone();
        let (status, stderr) = running.finish()?;
        if status.success() {
            Ok(())
        } else {
            Err(command_error(args, status, stderr))
        }
    }
}

struct Running {
    child: Child,
    args: String,
    writer: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    watchdog: Option<Watchdog>,
    started: Instant,
}

/// Kills a git process that outlives its deadline. It signals through a pidfd, which names
/// that one process even after it was reaped and its number reused; a process that ended in
/// time is never signalled.
struct Watchdog {
    /// Dropped when the command ends, which wakes and ends the watchdog's thread.
    _done: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
    deadline: Duration,
}

impl Watchdog {
    fn arm(child: &Child, deadline: Duration) -> Option<Self> {
        let pid = libc::pid_t::try_from(child.id()).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let Ok(fd) = libc::c_int::try_from(fd) else {
            return None;
        };
        if fd < 0 {
            tracing::debug!("pidfd_open failed; git runs without a deadline");
            return None;
        }
        let (done, wait) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(deadline) {
                flag.store(true, Ordering::SeqCst);
                // SAFETY: `fd` is the pidfd opened above, owned by this thread.
                unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, 0usize, 0u32) };
            }
            // SAFETY: closes the descriptor this thread owns, once.
            unsafe { libc::close(fd) };
        });
        Some(Self {
            _done: done,
            fired,
            deadline,
        })
    }
}

impl Running {
    fn finish(mut self) -> Result<(ExitStatus, String), GitError> {
        let status = self
            .child
            .wait()
            .map_err(|e| GitError::Io(format!("waiting for git {}", self.args), e))?;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(dog) = self.watchdog.take()
            && dog.fired.load(Ordering::SeqCst)
        {
            if let Some(h) = self.stderr.take() {
                let _ = h.join();
            }
            return Err(GitError::TimedOut {
                args: self.args.clone(),
                secs: dog.deadline.as_secs(),
            });
        }
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        tracing::debug!(
            args = %self.args,
            status = ?status.code(),
            ms = self.started.elapsed().as_secs_f64() * 1e3,
            "git finished"
        );
        Ok((status, String::from_utf8_lossy(&stderr).trim_end().to_string()))
    }

    fn abort(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

/// Reads everything from `r`, keeping the first `cap` bytes.
fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

pub(crate) fn command_error(args: String, status: ExitStatus, stderr: String) -> GitError {
    GitError::Command {
        args,
        status: status.code(),
        stderr,
    }
}

/// `path` made absolute against the working directory (without resolving symlinks).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_run_past_its_deadline_is_killed() {
        if !is_executable(git_program()) {
            return;
        }
        // Hashing an endless input never finishes by itself.
        let endless = File::open("/dev/zero").expect("/dev/zero");
        let err = GitCmd::new(None)
            .args(["hash-object", "--stdin"])
            .stdin_file(endless)
            .deadline(Duration::from_millis(200))
            .run()
            .expect_err("an endless run must be stopped");
        assert!(matches!(err, GitError::TimedOut { .. }), "{err}");
        // A command that ends in time is unaffected.
        let out = GitCmd::new(None)
            .arg("--version")
            .deadline(Duration::from_secs(60))
            .run();
        assert!(out.expect("git --version").starts_with(b"git version"));
    }

    #[test]
    fn git_is_run_by_absolute_path_when_found() {
        // An absolute program is what lets std use posix_spawn with our own PATH.
        let found = std::env::split_paths(search_path()).any(|d| is_executable(&d.join("git")));
        if found {
            assert!(git_program().is_absolute(), "{}", git_program().display());
            let out = GitCmd::new(None).arg("--version").run().expect("git --version");
            assert!(out.starts_with(b"git version"));
        } else {
            assert_eq!(git_program(), Path::new("git"));
        }
    }
}
