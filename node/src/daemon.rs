//! `causeway run`: the daemon's lifecycle. Start the node, serve the control socket, tell
//! systemd we are ready, and on SIGTERM/SIGINT stop in order (control socket, router, Raft,
//! endpoint) so redb is closed cleanly and the socket file is gone.

use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::control::ControlServer;
use crate::error::NodeError;
use crate::node::Node;

/// Runs until SIGTERM or SIGINT.
pub async fn run(data_dir: &Path, config: Config) -> Result<(), NodeError> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| NodeError::Storage(format!("signal handler: {e}")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| NodeError::Storage(format!("signal handler: {e}")))?;
    let socket = config.socket_path(data_dir);
    // Bind the socket first: a second daemon on the same data dir stops here, before touching redb.
    let control = ControlServer::bind(&socket).await?;
    let node = Node::start(data_dir, config).await?;
    let serve = {
        let node = node.clone();
        tokio::spawn(async move { control.serve(node).await })
    };
    let release = tokio::spawn(release_freed_memory());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %socket.display(), "daemon ready");
    let signal_name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = signal_name, "shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    serve.abort();
    let _ = serve.await;
    release.abort();
    node.shutdown().await;
    Ok(())
}

/// Gives freed memory back to the system once its delay has passed, even while the node is
/// quiet (see [`crate::allocator::RELEASE_EVERY`]).
async fn release_freed_memory() {
    let mut tick = tokio::time::interval(crate::allocator::RELEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::allocator::release_expired();
    }
}
