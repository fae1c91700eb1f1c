//! [`ConnectionBudget`]: how many connections one listener holds at once, in all and per
//! client address, and [`accept`], the accept loop every listener shares.
//!
//! Each listener (HTTP, TCP ingest, operations) has its own budget, so a flood on one port
//! cannot take the others' connections. A connection over the per-address cap is closed as
//! soon as it is accepted; one over the total waits in the listen backlog until a
//! connection closes (the timeouts see that idle ones do).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections by client address; an address is removed when its last one closes.
type ByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The connections a listener may hold: `max` in all, `per_address` from one client
/// address (0: no cap).
#[derive(Debug)]
pub struct ConnectionBudget {
    permits: Arc<Semaphore>,
    /// Admitted connections open now (the accept loop holds a permit while it waits, so
    /// the semaphore counts one more).
    open: Arc<AtomicUsize>,
    per_address: usize,
    by_address: ByAddress,
    refused: AtomicU64,
}

/// One admitted connection's share of its budget, given back when dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _address: Option<AddressHold>,
    open: Arc<AtomicUsize>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct AddressHold {
    by_address: ByAddress,
    ip: IpAddr,
}

impl Drop for AddressHold {
    fn drop(&mut self) {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnectionBudget {
    /// A budget of `max` connections, at most `per_address` (0: any number) from one
    /// client address.
    pub fn new(max: usize, per_address: usize) -> ConnectionBudget {
        ConnectionBudget {
            permits: Arc::new(Semaphore::new(max)),
            open: Arc::default(),
            per_address,
            by_address: ByAddress::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because their address was over its cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admits a connection from `ip` holding `permit`, or `None` when `ip` holds its cap.
    fn admit(&self, permit: OwnedSemaphorePermit, ip: IpAddr) -> Option<Admission> {
        if self.per_address == 0 {
            return Some(self.admitted(permit, None));
        }
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_address {
            drop(map);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        drop(map);
        let hold = AddressHold {
            by_address: self.by_address.clone(),
            ip,
        };
        Some(self.admitted(permit, Some(hold)))
    }

    fn admitted(&self, permit: OwnedSemaphorePermit, address: Option<AddressHold>) -> Admission {
        self.open.fetch_add(1, Ordering::Relaxed);
        Admission {
            _permit: permit,
            _address: address,
            open: self.open.clone(),
        }
    }
}

/// The next connection `budget` admits: waits for room in the budget, then accepts;
/// closes at once a connection whose address is over its cap. Cancel-safe.
pub async fn accept(
    listener: &TcpListener,
    budget: &ConnectionBudget,
) -> (TcpStream, SocketAddr, Admission) {
    loop {
        let permit = match budget.permits.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; if it were, accept nothing more.
            Err(_) => return std::future::pending().await,
        };
        match listener.accept().await {
            Ok((stream, peer)) => match budget.admit(permit, peer.ip()) {
                Some(admission) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, admission);
                }
                None => {
                    tracing::debug!(%peer, "connection refused: its address holds its cap");
                    drop(stream);
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_holds_at_most_its_cap_and_gets_it_back() {
        let budget = ConnectionBudget::new(10, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let permit = || budget.permits.clone().try_acquire_owned().unwrap();
        let first = budget.admit(permit(), a).unwrap();
        let _second = budget.admit(permit(), a).unwrap();
        assert!(budget.admit(permit(), a).is_none());
        assert_eq!((budget.refused(), budget.open()), (1, 2));
        let _other = budget.admit(permit(), b).unwrap();
        drop(first);
        assert_eq!(budget.open(), 2);
        let _again = budget.admit(permit(), a).unwrap();
        assert_eq!(budget.by_address.lock().unwrap()[&a], 2);
    }
}
