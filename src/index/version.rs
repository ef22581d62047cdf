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
pub struct VersionVector(pub BTreeMap<DeviceId, u64>);

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
        for (&d, &c) in &other.0 {
            let e = self.0.entry(d).or_insert(0);
            *e = (*e).max(c);
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
