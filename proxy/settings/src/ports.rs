//! Port lists such as "25,3306,8000-8010": the opaque ports and the ports iptables must skip.

use std::fmt;

use crate::SettingError;

const EXPECTED: &str = r#"a comma-separated list of ports and ranges such as "25,3306,8000-8010""#;

/// A set of TCP ports, kept as sorted, merged inclusive ranges so that equal sets compare equal
/// and `Display` prints the canonical form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| low <= port && port <= high)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The inclusive ranges, ascending; a single port is `(p, p)`.
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.ranges.iter().copied()
    }

    /// Adds one port (the injector always adds the admin port to the inbound skip list).
    pub fn insert(&mut self, port: u16) {
        self.insert_range(port, port);
    }

    fn insert_range(&mut self, low: u16, high: u16) {
        self.ranges.push((low, high));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(self.ranges.len());
        for &(low, high) in &self.ranges {
            match merged.last_mut() {
                // Overlapping or adjacent ranges collapse into one.
                Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        self.ranges = merged;
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (low, high)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for PortSet {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_ports(s)
    }
}

/// Parses "25,3306,8000-8010"; whitespace around items is fine and "" is the empty set.
/// Port 0, reversed ranges and empty items are refused.
pub fn parse_ports(s: &str) -> Result<PortSet, SettingError> {
    let mut set = PortSet::default();
    if s.trim().is_empty() {
        return Ok(set);
    }
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(SettingError::new(EXPECTED, s).because("empty item in the list"));
        }
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (parse_port(s, low.trim())?, parse_port(s, high.trim())?),
            None => {
                let port = parse_port(s, item)?;
                (port, port)
            }
        };
        if low > high {
            return Err(
                SettingError::new(EXPECTED, s).because(format!("range {low}-{high} is reversed"))
            );
        }
        set.insert_range(low, high);
    }
    Ok(set)
}

fn parse_port(whole: &str, item: &str) -> Result<u16, SettingError> {
    let err = || SettingError::new(EXPECTED, whole);
    if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err().because(format!("{item:?} is not a port number")));
    }
    match item.parse::<u16>() {
        Ok(0) => Err(err().because("port 0 is not a port")),
        Ok(port) => Ok(port),
        Err(_) => Err(err().because(format!("{item} is above 65535"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        let set = parse_ports("25,3306,8000-8010").unwrap();
        assert!(set.contains(25));
        assert!(set.contains(3306));
        assert!(set.contains(8000));
        assert!(set.contains(8005));
        assert!(set.contains(8010));
        assert!(!set.contains(8011));
        assert!(!set.contains(26));
        assert_eq!(
            set.ranges().collect::<Vec<_>>(),
            vec![(25, 25), (3306, 3306), (8000, 8010)]
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "25,3306,8000-8010",
            "1",
            "1-65535",
            "25,587,3306,4444,5432,6379,9300,11211",
        ] {
            assert_eq!(parse_ports(s).unwrap().to_string(), s);
        }
        let canonical = parse_ports("8000-8010, 3306 ,25").unwrap().to_string();
        assert_eq!(canonical, "25,3306,8000-8010");
        assert_eq!(parse_ports(&canonical).unwrap().to_string(), canonical);
    }

    #[test]
    fn empty_is_empty_set() {
        assert!(parse_ports("").unwrap().is_empty());
        assert!(parse_ports("  ").unwrap().is_empty());
        assert_eq!(parse_ports("").unwrap().to_string(), "");
        assert_eq!(parse_ports("").unwrap(), PortSet::default());
    }

    #[test]
    fn whitespace_tolerated() {
        assert_eq!(
            parse_ports(" 25 , 8000 - 8010 ").unwrap(),
            parse_ports("25,8000-8010").unwrap()
        );
    }

    #[test]
    fn overlapping_and_adjacent_merge() {
        assert_eq!(parse_ports("10-20,15-30,31").unwrap().to_string(), "10-31");
        assert_eq!(parse_ports("5,5").unwrap().to_string(), "5");
        assert_eq!(parse_ports("65535,1").unwrap().to_string(), "1,65535");
    }

    #[test]
    fn insert_adds_port() {
        let mut set = parse_ports("25").unwrap();
        set.insert(4191);
        assert_eq!(set.to_string(), "25,4191");
        set.insert(26);
        assert_eq!(set.to_string(), "25-26,4191");
        let mut empty = PortSet::default();
        empty.insert(4191);
        assert_eq!(empty.to_string(), "4191");
    }

    #[test]
    fn rejects_zero() {
        let e = parse_ports("0").unwrap_err();
        assert_eq!(e.reason(), Some("port 0 is not a port"));
        assert!(parse_ports("0-10").is_err());
    }

    #[test]
    fn rejects_reversed_range() {
        let e = parse_ports("8010-8000").unwrap_err();
        assert_eq!(e.reason(), Some("range 8010-8000 is reversed"));
        assert!(e.to_string().contains(r#"got "8010-8000""#), "{e}");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "http",
            "25,",
            ",25",
            "25,,26",
            "65536",
            "-5",
            "5-",
            "1-2-3",
            "+5",
            "25;26",
            "2 5",
            "99999999999",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_ports("65536").unwrap_err().reason(),
            Some("65536 is above 65535")
        );
    }

    #[test]
    fn from_str_matches_parse() {
        let set: PortSet = "80,443".parse().unwrap();
        assert_eq!(set, parse_ports("80,443").unwrap());
    }
}
