//! The catalogue of user-facing failures: a stable id, an exit code and advice for each.
//! All advice lives here; `reason()` maps a typed error to its entry (minikube's
//! `pkg/minikube/reason/reason.go` is the model).
//!
//! Exit codes are grouped by layer: 1 unknown, 2 usage (clap), 10-19 `PROFILE_`,
//! 20-39 `HOST_`, 40-49 `DRV_`, 50-59 `IMG_`, 60-69 `GUEST_`, 70-79 `K8S_`.

use crate::Error;
use crate::lock::LockError;
use crate::profile::ProfileError;

/// One kind of failure a user can meet.
#[derive(Debug, PartialEq, Eq)]
pub struct Reason {
    /// Stable id, prefixed by layer; shown in the hint and safe to search for.
    pub id: &'static str,
    /// The process exit code.
    pub exit_code: u8,
    /// What the user should do.
    pub advice: &'static str,
}

/// Another kubelab process holds the profile's lock.
pub const PROFILE_BUSY: Reason = Reason {
    id: "PROFILE_BUSY",
    exit_code: 10,
    advice: "wait for the other kubelab command to finish, or pass --wait to queue behind it",
};
/// The profile name is not a DNS-1123 label.
pub const PROFILE_NAME_INVALID: Reason = Reason {
    id: "PROFILE_NAME_INVALID",
    exit_code: 11,
    advice: "use at most 40 lowercase letters, digits and '-', starting with a letter",
};
/// The named profile does not exist.
pub const PROFILE_NOT_FOUND: Reason = Reason {
    id: "PROFILE_NOT_FOUND",
    exit_code: 12,
    advice: "run `kubelab list` to see the profiles, or `kubelab up -p NAME` to create one",
};
/// The profile's state file cannot be read or parsed.
pub const PROFILE_STATE_CORRUPT: Reason = Reason {
    id: "PROFILE_STATE_CORRUPT",
    exit_code: 13,
    advice: "the profile's profile.json was changed by hand or by a newer kubelab; \
             `kubelab delete -p NAME` removes the profile",
};

/// The catalogue entry for `err`, if it is a failure the user can act on.
pub fn reason(err: &Error) -> Option<&'static Reason> {
    match err {
        Error::Lock(LockError::Busy { .. }) => Some(&PROFILE_BUSY),
        Error::Profile(ProfileError::InvalidName { .. }) => Some(&PROFILE_NAME_INVALID),
        Error::Profile(ProfileError::NotFound { .. }) => Some(&PROFILE_NOT_FOUND),
        Error::Profile(ProfileError::ParseState { .. }) => Some(&PROFILE_STATE_CORRUPT),
        _ => None,
    }
}

/// The exit code for `err`: its reason's, else 1.
pub fn exit_code(err: &Error) -> u8 {
    reason(err).map_or(1, |r| r.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason in the catalogue, for the uniqueness checks.
    const ALL: &[&Reason] =
        &[&PROFILE_BUSY, &PROFILE_NAME_INVALID, &PROFILE_NOT_FOUND, &PROFILE_STATE_CORRUPT];

    #[test]
    fn ids_and_codes_are_unique_and_in_their_layer_range() {
        let mut ids = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for r in ALL {
            assert!(ids.insert(r.id), "duplicate id {}", r.id);
            assert!(codes.insert(r.exit_code), "duplicate exit code {}", r.exit_code);
            let range = match r.id.split('_').next().unwrap() {
                "PROFILE" => 10..=19,
                "HOST" => 20..=39,
                "DRV" => 40..=49,
                "IMG" => 50..=59,
                "GUEST" => 60..=69,
                "K8S" => 70..=79,
                other => panic!("unknown layer {other}"),
            };
            assert!(range.contains(&r.exit_code), "{} has code {}", r.id, r.exit_code);
            assert!(!r.advice.ends_with('.'), "{}", r.id);
        }
    }

    #[test]
    fn busy_lock_maps_to_profile_busy() {
        let err = Error::Lock(LockError::Busy { what: "x".into(), pid: Some(1) });
        assert_eq!(reason(&err), Some(&PROFILE_BUSY));
        assert_eq!(exit_code(&err), 10);
    }
}
