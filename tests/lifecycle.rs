//! The server's lifecycle: a stop is never lost, whatever moment it comes at, and an explicit
//! bind after a stop starts the server again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_a_client_syncs, write, SECRET};
use ssp::{Server, ServerConfig};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_stop_before_serve_begins_is_not_lost_and_a_new_bind_restarts() {
    let base = tempfile::tempdir().unwrap();
    write(base.path(), "f", b"x");
    let config = ServerConfig::new(SECRET, base.path(), "127.0.0.1", 0);
    let server = Arc::new(Server::new(config));
    let port = server.bind().await.unwrap().port();

    // stop() lands before serve() has started (as when serve is spawned and stopped at once).
    server.stop().await;
    let served = tokio::time::timeout(Duration::from_secs(30), server.serve()).await;
    assert!(
        matches!(served, Ok(Ok(()))),
        "serve() after stop() bound again and kept serving: {served:?}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "something still listens on the stopped server's port"
    );

    // Binding again is a restart.
    let port = server.bind().await.unwrap().port();
    let serving = tokio::spawn({
        let server = Arc::clone(&server);
        async move { server.serve().await }
    });
    assert_a_client_syncs(port, &["f"]).await;
    server.stop().await;
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("serve() ended after stop()")
        .unwrap()
        .unwrap();
}
