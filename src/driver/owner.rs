//! Who a hypervisor object belongs to: the owner marker kubelab writes on everything it
//! creates (libvirt `<metadata>`, VirtualBox extra data) and reads back before it acts.
//! The text form is `HOME/PROFILE` for a profile's objects and `HOME/PROFILE/NODE` for
//! a node's VM; reading it back validates every part, so a marker written by hand or by
//! something else never matches by accident.

use std::fmt;

use crate::home::HomeId;
use crate::profile::ProfileName;

/// The home, profile and (for a VM) node an object was created for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The home's id ([`crate::home::Home::id`]).
    pub home: HomeId,
    /// The profile's name.
    pub profile: String,
    /// The node, for a VM; `None` for the profile's networks.
    pub node: Option<String>,
}

impl Owner {
    /// The owner of `profile`'s objects in the home `home`.
    pub fn new(home: HomeId, profile: &ProfileName) -> Self {
        Self { home, profile: profile.to_string(), node: None }
    }

    /// The owner of node `node`'s VM: the same home and profile, and the node.
    pub fn node(&self, node: &str) -> Self {
        Self { node: Some(node.to_owned()), ..self.clone() }
    }

    /// The marker's text: `HOME/PROFILE` or `HOME/PROFILE/NODE`.
    pub fn marker(&self) -> String {
        match &self.node {
            Some(node) => format!("{}/{}/{node}", self.home, self.profile),
            None => format!("{}/{}", self.home, self.profile),
        }
    }

    /// Reads a marker's text back; an error says which part is wrong.
    pub fn parse_marker(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let (home, profile, node) = match parts[..] {
            [home, profile] => (home, profile, None),
            [home, profile, node] => (home, profile, Some(node)),
            _ => return Err(format!("{text:?} is not HOME/PROFILE[/NODE]")),
        };
        let home = home.parse()?;
        let profile: ProfileName = profile.parse().map_err(|e| format!("{e}"))?;
        if let Some(node) = node {
            check_node(&profile, node)?;
        }
        Ok(Self { home, profile: profile.to_string(), node: node.map(str::to_owned) })
    }

    /// The parts set from the XML attributes of a libvirt marker, checked like
    /// [`Owner::parse_marker`].
    pub fn from_parts(home: &str, profile: &str, node: Option<&str>) -> Result<Self, String> {
        let mut text = format!("{home}/{profile}");
        if let Some(node) = node {
            text = format!("{text}/{node}");
        }
        Self::parse_marker(&text)
    }
}

/// A node of `profile` is named `profile` (control plane) or `profile-mNN` (worker).
fn check_node(profile: &ProfileName, node: &str) -> Result<(), String> {
    let worker = node
        .strip_prefix(profile.as_str())
        .and_then(|rest| rest.strip_prefix("-m"))
        .is_some_and(|n| n.len() >= 2 && n.bytes().all(|b| b.is_ascii_digit()));
    if node == profile.as_str() || worker {
        Ok(())
    } else {
        Err(format!("{node:?} is not a node name of profile {profile}"))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kubelab home {} profile {}", self.home, self.profile)?;
        match &self.node {
            Some(node) => write!(f, " node {node}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner::new("0123456789abcdef".parse().unwrap(), &"lab".parse().unwrap())
    }

    #[test]
    fn marker_round_trips() {
        let profile = owner();
        assert_eq!(profile.marker(), "0123456789abcdef/lab");
        assert_eq!(Owner::parse_marker(&profile.marker()).unwrap(), profile);
        let node = profile.node("lab-m02");
        assert_eq!(node.marker(), "0123456789abcdef/lab/lab-m02");
        assert_eq!(Owner::parse_marker(&node.marker()).unwrap(), node);
        assert_eq!(
            Owner::from_parts("0123456789abcdef", "lab", Some("lab")).unwrap(),
            profile.node("lab")
        );
        assert_eq!(node.to_string(), "kubelab home 0123456789abcdef profile lab node lab-m02");
    }

    #[test]
    fn bad_markers_say_which_part_is_wrong() {
        for (text, why) in [
            ("", "HOME/PROFILE"),
            ("0123456789abcdef", "HOME/PROFILE"),
            ("0123456789abcdef/lab/lab/x", "HOME/PROFILE"),
            ("0123456789abcde/lab", "16 characters"),
            ("0123456789ABCDEF/lab", "lowercase hexadecimal"),
            ("0123456789abcdef/Lab", "invalid profile name"),
            ("0123456789abcdef/lab-m02", "worker"),
            ("0123456789abcdef/lab/other", "not a node name of profile lab"),
            ("0123456789abcdef/lab/lab-m2", "not a node name"),
            ("0123456789abcdef/lab/lab-mxx", "not a node name"),
        ] {
            let err = Owner::parse_marker(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn owners_differ_by_home_profile_and_node() {
        let a = owner().node("lab");
        let other_home = Owner { home: "fedcba9876543210".parse().unwrap(), ..a.clone() };
        assert_ne!(a, other_home);
        assert_ne!(a, owner().node("lab-m02"));
        assert_ne!(a, owner(), "a VM's marker names its node");
    }
}
