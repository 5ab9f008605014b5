//! Merging a user's own `#cloud-config` document (`--cloud-init FILE`) into kubelab's
//! user-data.
//!
//! The rule, applied key by key from the top-level mapping down:
//! - a key kubelab does not set is added as the user wrote it;
//! - maps are merged recursively with this same rule;
//! - lists (`runcmd`, `packages`, `write_files`, `users`, the module lists...) get the
//!   user's items appended after kubelab's, except items equal to one kubelab already has;
//! - a scalar kubelab sets (`hostname`, `disable_root`...) may only be repeated with the
//!   same value, and a key whose type differs from kubelab's is refused;
//! - `ssh_keys`, `fqdn`, `preserve_hostname`, `prefer_fqdn_over_hostname` and a `users`
//!   entry for kubelab's own user are refused: they would break host-key verification,
//!   SSH access or the node's identity.
//!
//! The document is read with YAML 1.1 number rules (`0644` is octal, as cloud-init's
//! PyYAML reads it), so the values keep their meaning when kubelab writes them back.

use serde_json::{Map, Value};

use super::CloudInitError;

/// First line of every cloud-config document; cloud-init treats other user-data as a
/// script, a MIME archive or an include list.
pub(super) const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// Top-level keys the user's document may not set at all.
const PROTECTED: &[&str] = &["ssh_keys", "fqdn", "preserve_hostname", "prefer_fqdn_over_hostname"];

/// Parses the user's document into its top-level mapping.
pub(super) fn parse(text: &str) -> Result<Map<String, Value>, CloudInitError> {
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.trim_end() != CLOUD_CONFIG_HEADER {
        return Err(CloudInitError::NotCloudConfig);
    }
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    let value: Value = serde_saphyr::from_str_with_options(text, options)
        .map_err(|source| CloudInitError::ParseExtraUserData { source: Box::new(source) })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(refuse("(document)", "the document must be a mapping of cloud-config keys")),
    }
}

/// Merges `theirs` into `ours` (kubelab's user-data, whose node user is `user`).
pub(super) fn merge(
    ours: &mut Map<String, Value>,
    theirs: Map<String, Value>,
    user: &str,
) -> Result<(), CloudInitError> {
    if let Some(key) = PROTECTED.iter().find(|key| theirs.contains_key(**key)) {
        return Err(refuse(key, "kubelab manages this key"));
    }
    if let Some(users) = theirs.get("users") {
        let Value::Array(users) = users else {
            return Err(refuse("users", "must be a list"));
        };
        if users.iter().any(|entry| names_user(entry, user)) {
            return Err(refuse("users", "kubelab creates its own user; pick another name"));
        }
    }
    merge_map(ours, theirs, "")
}

/// Whether a `users` entry (a name or a mapping with `name`) is `user`.
fn names_user(entry: &Value, user: &str) -> bool {
    match entry {
        Value::String(name) => name == user,
        Value::Object(fields) => fields.get("name").and_then(Value::as_str) == Some(user),
        _ => false,
    }
}

fn merge_map(
    ours: &mut Map<String, Value>,
    theirs: Map<String, Value>,
    path: &str,
) -> Result<(), CloudInitError> {
    for (key, their_value) in theirs {
        let key_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match ours.get_mut(&key) {
            None => {
                ours.insert(key, their_value);
            }
            Some(our_value) => merge_value(our_value, their_value, &key_path)?,
        }
    }
    Ok(())
}

fn merge_value(ours: &mut Value, theirs: Value, path: &str) -> Result<(), CloudInitError> {
    match (ours, theirs) {
        (Value::Object(ours), Value::Object(theirs)) => merge_map(ours, theirs, path),
        (Value::Array(ours), Value::Array(theirs)) => {
            let kubelab_items = ours.len();
            for item in theirs {
                if !ours[..kubelab_items].contains(&item) {
                    ours.push(item);
                }
            }
            Ok(())
        }
        (ours, theirs) if *ours == theirs => Ok(()),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            Err(refuse(path, "its type differs from kubelab's value"))
        }
        _ => Err(refuse(path, "kubelab sets this key to another value")),
    }
}

fn refuse(key: &str, reason: &'static str) -> CloudInitError {
    CloudInitError::MergeExtraUserData { key: key.into(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "hostname": "lab-m01",
            "disable_root": true,
            "users": [{"name": "kubelab", "shell": "/bin/bash"}],
            "write_files": [{"path": "/etc/a", "content": "a\n"}],
            "cloud_config_modules": ["runcmd"],
            "ssh_keys": {"ed25519_public": "ssh-ed25519 AAAA"},
        }) else {
            unreachable!()
        };
        map
    }

    fn merged(extra: &str) -> Result<Value, CloudInitError> {
        let mut map = ours();
        merge(&mut map, parse(extra)?, "kubelab")?;
        Ok(Value::Object(map))
    }

    #[test]
    fn lists_are_appended_and_new_keys_added() {
        let doc = merged(
            "#cloud-config\n\
             runcmd: [[touch, /x], [touch, /x]]\n\
             packages: [jq]\n\
             cloud_config_modules: [runcmd, timezone]\n\
             timezone: Europe/Paris\n\
             users: [default, {name: alice}]\n\
             write_files:\n  - path: /etc/b\n    permissions: 0600\n    content: b\n\
             hostname: lab-m01\n",
        )
        .unwrap();
        assert_eq!(doc["runcmd"], json!([["touch", "/x"], ["touch", "/x"]]));
        assert_eq!(doc["packages"], json!(["jq"]));
        assert_eq!(doc["cloud_config_modules"], json!(["runcmd", "timezone"]));
        assert_eq!(doc["timezone"], json!("Europe/Paris"));
        assert_eq!(doc["users"][0]["name"], json!("kubelab"));
        assert_eq!(doc["users"][1], json!("default"));
        assert_eq!(doc["users"][2]["name"], json!("alice"));
        assert_eq!(doc["write_files"][0]["path"], json!("/etc/a"));
        // YAML 1.1 octal, as cloud-init reads it: 0600 == 384.
        assert_eq!(doc["write_files"][1]["permissions"], json!(384));
        assert_eq!(doc["hostname"], json!("lab-m01"));
    }

    #[test]
    fn empty_document_changes_nothing() {
        assert_eq!(merged("#cloud-config\n").unwrap(), Value::Object(ours()));
        assert_eq!(merged("#cloud-config  \r\n# only a comment\n").unwrap(), Value::Object(ours()));
    }

    #[test]
    fn refuses_what_would_break_the_node() {
        let refused = |extra: &str, key: &str| match merged(extra) {
            Err(CloudInitError::MergeExtraUserData { key: k, .. }) => assert_eq!(k, key, "{extra}"),
            other => panic!("{extra}: {other:?}"),
        };
        refused("#cloud-config\nssh_keys: {rsa_private: x}\n", "ssh_keys");
        refused("#cloud-config\nfqdn: a.example\n", "fqdn");
        refused("#cloud-config\nusers: [kubelab]\n", "users");
        refused("#cloud-config\nusers:\n  - name: kubelab\n    sudo: false\n", "users");
        refused("#cloud-config\nusers: default\n", "users");
        refused("#cloud-config\nhostname: other\n", "hostname");
        refused("#cloud-config\ndisable_root: false\n", "disable_root");
        refused("#cloud-config\nwrite_files: {path: /x}\n", "write_files");
        refused("#cloud-config\n- a\n", "(document)");
    }

    #[test]
    fn refuses_documents_that_are_not_cloud_config() {
        for text in [
            "",
            "#!/bin/sh\necho hi\n",
            "runcmd: []\n",
            " #cloud-config\n",
            "#cloud-config-archive\n",
        ] {
            assert!(matches!(merged(text), Err(CloudInitError::NotCloudConfig)), "{text:?}");
        }
        let err = merged("#cloud-config\nruncmd: [unclosed\n").unwrap_err();
        assert!(matches!(err, CloudInitError::ParseExtraUserData { .. }), "{err}");
    }
}
