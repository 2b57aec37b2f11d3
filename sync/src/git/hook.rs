//! The post-receive hook that tells the node a repository changed.

use std::fs;
use std::path::{Path, PathBuf};

use super::GitError;
use super::cmd::GitCmd;

/// The line that marks a hook as ours; a hook containing it is replaced on reinstall.
pub const HOOK_MARKER: &str = "# causeway-notify-hook";

const HOOK: &str = "post-receive";
const CHAINED: &str = "post-receive.causeway-chained";

fn io(what: String) -> impl FnOnce(std::io::Error) -> GitError {
    move |e| GitError::Io(what, e)
}

/// The hooks directory git uses for `repo` (honours `core.hooksPath`).
fn hooks_dir(repo: &Path) -> Result<PathBuf, GitError> {
    let out = GitCmd::new(Some(repo))
        .args(["rev-parse", "--git-path", "hooks"])
        .run()?;
    let text = String::from_utf8_lossy(&out).trim().to_string();
    let path = PathBuf::from(text);
    Ok(if path.is_absolute() { path } else { repo.join(path) })
}

fn script(command: &str) -> String {
    format!(
        r#"#!/bin/sh
{HOOK_MARKER} (installed by causeway; reinstalling replaces this file)
# A post-receive hook that was here before is kept as {CHAINED} and runs first,
# with the same input; its exit status is this hook's.
input=$(cat)
status=0
chained="$(dirname "$0")/{CHAINED}"
if [ -x "$chained" ]; then
	printf '%s\n' "$input" | "$chained" "$@" || status=$?
fi
printf '%s\n' "$input" | (
{command}
) || echo "causeway: the notify command failed" >&2
exit $status
"#
    )
}

/// Installs (or replaces) a post-receive hook in a bare repo that runs `command` (a shell line,
/// given the pushed ref updates on stdin), so a `git push` into the repo notifies the node.
///
/// An existing hook that is not ours is kept: it is renamed to `post-receive.causeway-chained`
/// and our hook runs it first with the same input (if a chained hook already exists from an
/// earlier installation, it is first renamed to `post-receive.causeway-chained.<unix time>`
/// rather than lost). Our hook is marked with [`HOOK_MARKER`], so reinstalling only rewrites
/// it. The new hook is written to a temporary file and renamed into place.
pub fn install_notify_hook(repo: &Path, command: &str) -> Result<(), GitError> {
    if command.contains('\0') || command.trim().is_empty() {
        return Err(GitError::InvalidArgument(
            "the notify command must be a non-empty shell line".into(),
        ));
    }
    super::ensure_repo(repo)?;
    // A repository borrowing another's directory could aim the hook elsewhere.
    super::check_self_contained(repo)?;
    let dir = hooks_dir(repo)?;
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let hook = dir.join(HOOK);
    let chained = dir.join(CHAINED);
    if fs::symlink_metadata(&hook).is_ok() {
        let ours = fs::read(&hook)
            .map(|content| String::from_utf8_lossy(&content).contains(HOOK_MARKER))
            .unwrap_or(false);
        if !ours {
            if fs::symlink_metadata(&chained).is_ok() {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let old = dir.join(format!("{CHAINED}.{secs}"));
                fs::rename(&chained, &old).map_err(io(format!("renaming {}", chained.display())))?;
            }
            fs::rename(&hook, &chained).map_err(io(format!("renaming {}", hook.display())))?;
        }
    }
    let tmp = dir.join(format!(".{HOOK}.causeway-tmp-{}", super::unique_suffix()));
    let result = (|| {
        fs::write(&tmp, script(command)).map_err(io(format!("writing {}", tmp.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .map_err(io(format!("making {} executable", tmp.display())))?;
        }
        fs::rename(&tmp, &hook).map_err(io(format!("installing {}", hook.display())))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_marked_and_runs_the_command_in_a_subshell() {
        let s = script("touch /tmp/x");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains(HOOK_MARKER));
        assert!(s.contains("(\ntouch /tmp/x\n)"));
    }
}
