//! A TCP forwarder between a process under test and a server, that a test can cut: a network
//! partition between the two while both keep running. It runs on a thread of its own, so that a
//! test blocked in a synchronous call does not hold the traffic up.

use std::net::SocketAddr;
use std::sync::mpsc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `addr` to the target, until [`Forwarder::cut`]; dropped, it closes
/// every connection.
pub struct Forwarder {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Forwarder {
    /// Starts forwarding to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let (cut, cut_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("forwarder".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the forwarder");
                runtime.block_on(forward(target, cut_rx, addr_tx));
            })
            .expect("start the forwarder thread");
        let addr = addr_rx.recv().expect("the forwarder's address");
        Self { addr, cut }
    }

    /// From now on nothing passes: the open connections stop carrying bytes (they are held
    /// open, as across a partition), and new ones are accepted and never answered.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

async fn forward(target: SocketAddr, cut: watch::Receiver<bool>, addr: mpsc::Sender<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the forwarder");
    let _ = addr.send(listener.local_addr().expect("the forwarder's address"));
    let mut held = Vec::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut closed = cut.clone();
    loop {
        tokio::select! {
            // The Forwarder was dropped.
            Err(_) = closed.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                if *cut.borrow() {
                    held.push(client);
                    continue;
                }
                let mut cut = cut.clone();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        cut = cut.wait_for(|cut| *cut) => cut.is_ok(),
                    };
                    if cut {
                        // Held open without a byte more, until the forwarder ends.
                        std::future::pending::<()>().await;
                    }
                });
            }
        }
    }
}
