//! A local TCP port forwarded through a remote libvirt host: each accepted connection
//! becomes its own `ssh -W` (see [`Jump::proxy`]), so the client (kubectl, kubelab's
//! API-server wait) talks TLS end to end with the API server behind the jump.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::jump::{Jump, JumpError, Proxy};

/// A running forward from [`Tunnel::local_addr`] to a target behind a jump; stopped,
/// with every `ssh` it started, when dropped.
#[derive(Debug)]
pub struct Tunnel {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tunnel {
    /// Listens on `listen` (port 0: any free port) and forwards each connection to `to`
    /// as seen from the jump host.
    pub fn start(jump: Jump, listen: SocketAddr, to: SocketAddr) -> Result<Self, JumpError> {
        let io = |source| JumpError::Listen { addr: listen, source };
        let listener = TcpListener::bind(listen).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tunnel".into())
            .spawn(move || serve(&listener, &jump, to, &stopping))
            .map_err(io)?;
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends (`kubelab tunnel`).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts until told to stop; each connection's `ssh -W` is reaped when it ends, and
/// the ones still running are stopped with the tunnel.
fn serve(listener: &TcpListener, jump: &Jump, to: SocketAddr, stop: &AtomicBool) {
    let mut open: Vec<Proxy> = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        open.retain_mut(|p| p.running());
        let Ok(stream) = stream else { continue };
        // The stream becomes the stdin and stdout of its own `ssh -W`.
        match jump.proxy_stream(stream.into(), to) {
            Ok(proxy) => open.push(proxy),
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "tunnel connection"),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
