//! Device identity and version vectors: who changed a record, and whether one history of a
//! path contains another (Syncthing's model: a counter per device, compared component-wise).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A folder replica's persistent random identity (64 bits, 16 uppercase hex digits on the
/// wire and in `.ssp/`), made once when the folder's store is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u64);

impl DeviceId {
    /// A fresh random identity (from the operating system's random source).
    pub fn random() -> DeviceId {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the operating system's random source");
        DeviceId(u64::from_be_bytes(b))
    }

    /// The first 7 digits, as conflict-copy names show it (like Syncthing's short ID).
    pub fn short(&self) -> String {
        self.to_string()[..7].to_owned()
    }

    /// Parses 16 hex digits (either case).
    pub fn parse(s: &str) -> Option<DeviceId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(DeviceId)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).ok_or_else(|| serde::de::Error::custom("bad device id"))
    }
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The same history.
    Equal,
    /// `self` contains the other's history and more: it is the newer version.
    Newer,
    /// The other contains `self`'s history and more.
    Older,
    /// Each has changes the other has not seen: a conflict (unless the contents agree).
    Concurrent,
}

/// Per-device change counters: `{device: counter}`, absent counters are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub Counters);

/// `(device, counter)` pairs sorted by device, each device once: a map kept as a short
/// vector. One or two devices is the usual record; a B-tree map took a 192-byte node for
/// each, the largest part of a record in memory. On the wire and in JSON it is a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(Vec<(DeviceId, u64)>);

impl Counters {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counter of `device`.
    pub fn get(&self, device: &DeviceId) -> Option<&u64> {
        self.0
            .binary_search_by_key(device, |&(d, _)| d)
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Whether `device` has a counter.
    pub fn contains_key(&self, device: &DeviceId) -> bool {
        self.get(device).is_some()
    }

    /// Sets the counter of `device`, returning the one it replaced.
    pub fn insert(&mut self, device: DeviceId, counter: u64) -> Option<u64> {
        match self.0.binary_search_by_key(&device, |&(d, _)| d) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, counter)),
            Err(i) => {
                self.0.insert(i, (device, counter));
                None
            }
        }
    }

    /// `(device, counter)` in device order.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &u64)> {
        self.0.iter().map(|(d, c)| (d, c))
    }

    pub fn keys(&self) -> impl Iterator<Item = &DeviceId> {
        self.0.iter().map(|(d, _)| d)
    }

    pub fn values(&self) -> impl Iterator<Item = &u64> {
        self.0.iter().map(|(_, c)| c)
    }
}

impl FromIterator<(DeviceId, u64)> for Counters {
    /// As a map is built: a device given twice keeps its last counter.
    fn from_iter<I: IntoIterator<Item = (DeviceId, u64)>>(pairs: I) -> Counters {
        let mut v: Vec<(DeviceId, u64)> = pairs.into_iter().collect();
        // Stable: equal devices stay in the given order, so the last one is kept below.
        v.sort_by_key(|&(d, _)| d);
        let mut out: Vec<(DeviceId, u64)> = Vec::with_capacity(v.len());
        for (d, c) in v {
            match out.last_mut() {
                Some(last) if last.0 == d => last.1 = c,
                _ => out.push((d, c)),
            }
        }
        out.shrink_to_fit();
        Counters(out)
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<DeviceId, u64>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

impl VersionVector {
    /// True when no device has changed the record (a record from before versions existed).
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|&c| c == 0)
    }

    /// This device's counter.
    pub fn counter(&self, device: DeviceId) -> u64 {
        self.0.get(&device).copied().unwrap_or(0)
    }

    /// Records a change made by `device`: its counter becomes larger than every counter in
    /// the vector, so the new version is newer than anything this one was compared with.
    pub fn bump(&mut self, device: DeviceId) -> &mut Self {
        let top = self.0.values().copied().max().unwrap_or(0);
        self.0.insert(device, top.saturating_add(1));
        self
    }

    /// The least vector containing both histories (component-wise maximum).
    pub fn merge(&mut self, other: &VersionVector) -> &mut Self {
        for (&d, &c) in other.0.iter() {
            if c > self.counter(d) {
                self.0.insert(d, c);
            }
        }
        self
    }

    /// Compares two histories component-wise.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let (mut greater, mut less) = (false, false);
        for d in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.counter(*d), other.counter(*d));
            greater |= a > b;
            less |= a < b;
        }
        match (greater, less) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Newer,
            (false, true) => Causality::Older,
            (true, true) => Causality::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(pairs: &[(u64, u64)]) -> VersionVector {
        VersionVector(pairs.iter().map(|&(d, c)| (DeviceId(d), c)).collect())
    }

    /// The short vector behaves as the map it replaced: sorted, a device once (the last
    /// counter given), a JSON object on the wire.
    #[test]
    fn counters_are_a_map() {
        let c: Counters = [(DeviceId(9), 1), (DeviceId(2), 5), (DeviceId(9), 3)]
            .into_iter()
            .collect();
        let pairs: Vec<_> = c.iter().map(|(d, n)| (d.0, *n)).collect();
        assert_eq!(pairs, [(2, 5), (9, 3)]);
        let mut m = c.clone();
        assert_eq!(m.insert(DeviceId(4), 1), None);
        assert_eq!(m.insert(DeviceId(9), 7), Some(3));
        let keys: Vec<u64> = m.keys().map(|d| d.0).collect();
        assert_eq!(keys, [2, 4, 9]);
        assert_eq!(m.get(&DeviceId(9)), Some(&7));
        let json = serde_json::to_string(&VersionVector(c.clone())).unwrap();
        assert_eq!(json, r#"{"0000000000000002":5,"0000000000000009":3}"#);
        assert_eq!(serde_json::from_str::<VersionVector>(&json).unwrap().0, c);
    }

    #[test]
    fn compare_table() {
        // (case, a, b, a compared with b)
        let cases = [
            ("both empty", vv(&[]), vv(&[]), Causality::Equal),
            (
                "zero counters are absent",
                vv(&[(1, 0)]),
                vv(&[]),
                Causality::Equal,
            ),
            (
                "same",
                vv(&[(1, 2), (2, 1)]),
                vv(&[(1, 2), (2, 1)]),
                Causality::Equal,
            ),
            (
                "one more change",
                vv(&[(1, 3)]),
                vv(&[(1, 2)]),
                Causality::Newer,
            ),
            (
                "another device on top",
                vv(&[(1, 2), (2, 1)]),
                vv(&[(1, 2)]),
                Causality::Newer,
            ),
            (
                "behind",
                vv(&[(1, 1)]),
                vv(&[(1, 1), (2, 5)]),
                Causality::Older,
            ),
            (
                "each changed",
                vv(&[(1, 2)]),
                vv(&[(2, 1)]),
                Causality::Concurrent,
            ),
            (
                "diverged",
                vv(&[(1, 3), (2, 1)]),
                vv(&[(1, 2), (2, 2)]),
                Causality::Concurrent,
            ),
        ];
        for (case, a, b, want) in cases {
            assert_eq!(a.compare(&b), want, "{case}");
        }
    }

    #[test]
    fn a_bump_is_newer_than_everything_it_saw_and_a_merge_contains_both() {
        let (a, b) = (DeviceId(1), DeviceId(2));
        let mut x = vv(&[(1, 1), (2, 7)]);
        let before = x.clone();
        x.bump(a);
        assert_eq!(x.counter(a), 8);
        assert_eq!(x.compare(&before), Causality::Newer);
        let mut y = before.clone();
        y.bump(b);
        assert_eq!(x.compare(&y), Causality::Concurrent);
        let mut m = x.clone();
        m.merge(&y);
        assert_eq!(m.compare(&x), Causality::Newer);
        assert_eq!(m.compare(&y), Causality::Newer);
        m.bump(b);
        assert_eq!(m.compare(&x), Causality::Newer);
    }

    #[test]
    fn device_ids_roundtrip_and_refuse_junk() {
        let d = DeviceId(0x0123_4567_89AB_CDEF);
        assert_eq!(d.to_string(), "0123456789ABCDEF");
        assert_eq!(d.short(), "0123456");
        assert_eq!(DeviceId::parse("0123456789abcdef"), Some(d));
        for bad in [
            "",
            "0123",
            "0123456789ABCDEG",
            "+123456789ABCDEF",
            "0123456789ABCDEF0",
        ] {
            assert_eq!(DeviceId::parse(bad), None, "{bad:?}");
        }
        let json = serde_json::to_string(&vv(&[(1, 2)])).unwrap();
        assert_eq!(json, r#"{"0000000000000001":2}"#);
        assert_eq!(
            serde_json::from_str::<VersionVector>(&json).unwrap(),
            vv(&[(1, 2)])
        );
    }
}
