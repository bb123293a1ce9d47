//! Pod IPs in 127.0.0.0/8: 127.0.1.1 to 127.0.1.254, then 127.0.2.1, ... Loopback addresses
//! need no interface set-up on Linux: a process can bind any of them.
//!
//! An address is held by a pod UID from its first start until the pod is finalised, and is not
//! handed out again while held; freed addresses are reused lowest first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Addresses per /24 (the .0 and .255 ends are skipped).
const PER_BLOCK: u32 = 254;
/// 127.0.1.0/24 to 127.0.254.0/24.
const BLOCKS: u32 = 254;

#[derive(Debug, Default)]
pub struct Ipam {
    held: BTreeMap<u32, String>,
}

fn addr(index: u32) -> Ipv4Addr {
    let block = 1 + index / PER_BLOCK;
    let host = 1 + index % PER_BLOCK;
    Ipv4Addr::new(127, 0, block as u8, host as u8)
}

fn index(ip: Ipv4Addr) -> Option<u32> {
    let [a, b, c, d] = ip.octets();
    if a != 127 || b != 0 || !(1..=254).contains(&c) || !(1..=254).contains(&d) {
        return None;
    }
    Some(u32::from(c - 1) * PER_BLOCK + u32::from(d - 1))
}

impl Ipam {
    /// The address held by `uid`, or the lowest free one, now held by `uid`.
    pub fn allocate(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some((i, _)) = self.held.iter().find(|(_, u)| *u == uid) {
            return Some(addr(*i));
        }
        let free = (0..PER_BLOCK * BLOCKS).find(|i| !self.held.contains_key(i))?;
        self.held.insert(free, uid.to_string());
        Some(addr(free))
    }

    /// Record an address a pod already has (adopted after an agent restart). False when the
    /// address is outside the range or held by another pod.
    pub fn reserve(&mut self, uid: &str, ip: Ipv4Addr) -> bool {
        let Some(i) = index(ip) else { return false };
        match self.held.get(&i) {
            Some(u) => u == uid,
            None => {
                self.held.insert(i, uid.to_string());
                true
            }
        }
    }

    pub fn release(&mut self, uid: &str) {
        self.held.retain(|_, u| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_stable_unique_addresses() {
        let mut ipam = Ipam::default();
        let a = ipam.allocate("a");
        let b = ipam.allocate("b");
        assert_eq!(a, Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(b, Some(Ipv4Addr::new(127, 0, 1, 2)));
        assert_eq!(ipam.allocate("a"), a, "stable while held");
        ipam.release("a");
        assert_eq!(ipam.allocate("c"), a, "reused once released");
        assert_ne!(ipam.allocate("d"), b, "never one in use");
    }

    #[test]
    fn crosses_blocks_and_reserves() {
        assert_eq!(addr(253), Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(addr(254), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(index(Ipv4Addr::new(127, 0, 2, 1)), Some(254));
        assert_eq!(index(Ipv4Addr::new(127, 0, 0, 1)), None);
        assert_eq!(index(Ipv4Addr::new(10, 0, 1, 1)), None);
        let mut ipam = Ipam::default();
        assert!(ipam.reserve("x", Ipv4Addr::new(127, 0, 1, 1)));
        assert!(ipam.reserve("x", Ipv4Addr::new(127, 0, 1, 1)));
        assert!(!ipam.reserve("y", Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(ipam.allocate("y"), Some(Ipv4Addr::new(127, 0, 1, 2)));
    }
}
