//! The kubeconfig document (`apiVersion: v1`, `kind: Config`), typed where kubelab reads
//! or writes a field and caught whole elsewhere: every level has an `extra` map, so
//! fields kubelab does not know (new client-go fields, `exec`, `token`, tool-specific
//! keys) survive a read-modify-write. Comments and key order are not kept; data is.
//!
//! Field names follow client-go's `k8s.io/client-go/tools/clientcmd/api/v1/types.go`.
//! A missing or `null` list reads as empty, as client-go reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Fields kubelab does not model, kept as they were read.
pub type Extra = BTreeMap<String, Value>;

/// A whole kubeconfig file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// `apiVersion`, `v1` for every file kubectl writes.
    #[serde(rename = "apiVersion", default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `kind`, `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Named clusters: where an API server is and which CA it has.
    #[serde(default, deserialize_with = "null_as_default")]
    pub clusters: Vec<NamedCluster>,
    /// Named users: the credentials.
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Vec<NamedUser>,
    /// Named contexts: a cluster, a user and a namespace.
    #[serde(default, deserialize_with = "null_as_default")]
    pub contexts: Vec<NamedContext>,
    /// The context kubectl uses by default; an empty string means none.
    #[serde(rename = "current-context", default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// kubectl preferences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Preferences>,
    /// Extensions of the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NamedExtension>>,
    /// Unknown top-level fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `preferences`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    /// Extensions of the preferences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NamedExtension>>,
    /// Other fields (`colors`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of an `extensions` list; its payload is kept as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedExtension {
    /// The extension's name.
    #[serde(default)]
    pub name: String,
    /// The extension's payload.
    #[serde(default)]
    pub extension: Value,
    /// Unknown fields next to `name`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `clusters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The name contexts refer to.
    #[serde(default)]
    pub name: String,
    /// The cluster itself.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cluster: Cluster,
    /// Unknown fields next to `name`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A cluster: its API server and the CA that signed the server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// The API server's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// A CA file path (refused in admin.conf: the copy must be self-contained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// The CA bundle, base64 PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Extensions of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NamedExtension>>,
    /// Other fields (`insecure-skip-tls-verify`, `proxy-url`, `tls-server-name`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    /// The name contexts refer to.
    #[serde(default)]
    pub name: String,
    /// The credentials.
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: AuthInfo,
    /// Unknown fields next to `name`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A user's credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    /// A client certificate file path (refused in admin.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// The client certificate, base64 PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// A client key file path (refused in admin.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// The client key, base64 PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Extensions of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NamedExtension>>,
    /// Other credentials and fields (`token`, `exec`, `auth-provider`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `contexts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The name `current-context` and `--context` refer to.
    #[serde(default)]
    pub name: String,
    /// The context itself.
    #[serde(default, deserialize_with = "null_as_default")]
    pub context: Context,
    /// Unknown fields next to `name`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A context: which cluster, as which user, in which namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Extensions of the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<NamedExtension>>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Reads `null` as the type's default, as client-go does for lists and objects.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Kubeconfig {
    /// Parses a kubeconfig; an empty or comment-only text is an empty document.
    ///
    /// Parser errors carry no snippet of the input: a kubeconfig holds keys and tokens.
    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        // Plain `0123` or `1_000` would read as the number 123.0 or 1000 and be written
        // back so: keep their text (as strings) instead of retyping a foreign value.
        options.leading_zero_numbers_as_strings = true;
        options.underscored_numbers_as_strings = true;
        let doc: Option<Self> = serde_saphyr::from_str_with_options(text, options)?;
        Ok(doc.unwrap_or_default())
    }

    /// The document as YAML that kubectl reads.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        // Plain or quoted scalars only: a folded block (`>`) around a long base64 value is
        // valid YAML but needlessly different from what kubectl writes.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(self, options)
    }

    /// Whether `current-context` names a context (it may be missing or `""`).
    pub fn current(&self) -> Option<&str> {
        self.current_context.as_deref().filter(|name| !name.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as kubectl and other tools leave it: extensions at every level, unknown
    /// fields, exec credentials, a token, YAML-1.1-looking strings.
    const RICH: &str = include_str!("../../tests/fixtures/kubeconfig/rich.yaml");

    #[test]
    fn empty_and_comment_only_texts_are_empty_documents() {
        for text in ["", "\n", "# nothing here\n", "---\n", "null\n"] {
            assert_eq!(Kubeconfig::parse(text).unwrap(), Kubeconfig::default(), "{text:?}");
        }
    }

    #[test]
    fn null_lists_and_objects_read_as_empty() {
        let doc = Kubeconfig::parse(
            "apiVersion: v1\nkind: Config\nclusters: null\nusers:\ncontexts: []\n\
             preferences: {}\ncurrent-context: \"\"\n",
        )
        .unwrap();
        assert!(doc.clusters.is_empty() && doc.users.is_empty() && doc.contexts.is_empty());
        assert_eq!(doc.current(), None);
        let doc = Kubeconfig::parse("clusters: [{name: a, cluster: null}]\n").unwrap();
        assert_eq!(doc.clusters[0].cluster, Cluster::default());
    }

    #[test]
    fn rich_file_survives_a_round_trip() {
        let doc = Kubeconfig::parse(RICH).unwrap();
        assert_eq!(doc.clusters.len(), 2);
        assert_eq!(doc.users[1].user.extra["exec"]["command"], "aws");
        assert_eq!(doc.extra["x-tool-setting"]["nested"], serde_json::json!([1, "two", true]));
        assert_eq!(doc.preferences.as_ref().unwrap().extra["colors"], true);
        assert_eq!(doc.clusters[0].cluster.extra["insecure-skip-tls-verify"], false);
        assert_eq!(doc.contexts[0].context.extensions.as_ref().unwrap()[0].name, "ctx-ext");
        let yaml = doc.to_yaml().unwrap();
        assert_eq!(Kubeconfig::parse(&yaml).unwrap(), doc, "{yaml}");
        // YAML 1.1 readers (kubectl's) must not see these strings as booleans or numbers.
        let users = &Kubeconfig::parse(&yaml).unwrap().users;
        assert_eq!(users[0].user.extra["username"], "yes");
        assert_eq!(users[0].user.extra["password"], "0123");
    }

    #[test]
    fn foreign_scalars_keep_their_type_and_text() {
        let text = "x:\n  plain-zero: 0123\n  quoted: \"0123\"\n  int: 42\n  neg: -7\n  \
                    float: 1.5\n  under: 1_000\n  yes-str: 'yes'\n  bool: true\n  nil: null\n  \
                    dotted: '1.10'\n  big: 18446744073709551615\n";
        let doc = Kubeconfig::parse(text).unwrap();
        let x = &doc.extra["x"];
        assert_eq!(x["plain-zero"], "0123");
        assert_eq!(x["quoted"], "0123");
        assert_eq!(x["int"], 42);
        assert_eq!(x["neg"], -7);
        assert_eq!(x["float"], 1.5);
        assert_eq!(x["under"], "1_000");
        assert_eq!(x["yes-str"], "yes");
        assert_eq!(x["bool"], true);
        assert!(x["nil"].is_null());
        assert_eq!(x["dotted"], "1.10");
        assert_eq!(x["big"], u64::MAX);
        let yaml = doc.to_yaml().unwrap();
        assert_eq!(Kubeconfig::parse(&yaml).unwrap(), doc, "{yaml}");
        for line in [
            "plain-zero: \"0123\"",
            "int: 42",
            "float: 1.5",
            "dotted: \"1.10\"",
            "big: 18446744073709551615",
        ] {
            assert!(yaml.contains(line), "{line} missing from {yaml}");
        }
    }

    #[test]
    fn long_data_fields_stay_single_line_scalars() {
        let mut doc = Kubeconfig::default();
        let data = "QUJD".repeat(500);
        doc.clusters.push(NamedCluster {
            name: "a".into(),
            cluster: Cluster {
                certificate_authority_data: Some(data.clone()),
                ..Cluster::default()
            },
            extra: Extra::new(),
        });
        let yaml = doc.to_yaml().unwrap();
        assert!(
            yaml.lines()
                .any(|line| line.trim_start() == format!("certificate-authority-data: {data}")),
            "{yaml}"
        );
    }

    #[test]
    fn parse_errors_do_not_quote_the_input() {
        let err =
            Kubeconfig::parse("users:\n- name: a\n  user: {token: s3cr3t-token\n").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
