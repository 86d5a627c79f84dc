//! Collection profiles: which collectors a collection runs, and with which budgets. A
//! profile is data: the server ships `standard` and `triage` (`profiles/*.toml`, embedded),
//! an administrator defines more from the same collectors in the server's configuration,
//! and the resolved profile travels to the agent with the task. No profile can name a
//! command to run: its building blocks are the collectors of [`COLLECTORS`] only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The profile MDE's `collectInvestigationPackage` gets when the request names none: the
/// content MDE automation expects.
pub const STANDARD: &str = "standard";
/// Standard plus the responder's triage collectors.
pub const TRIAGE: &str = "triage";

/// Every collector a profile may name, standard ones first in the order they run. The
/// agent's collector catalog has exactly these (a test in `casefile-collectors` holds it to
/// this list).
pub const COLLECTORS: [&str; 17] = [
    "system",
    "processes",
    "network",
    "users",
    "disks",
    "open_files",
    "persistence",
    "packages",
    "histories",
    "logs",
    "timeline",
    "var_log",
    "configs",
    "user_traces",
    "containers",
    "kernel_security",
    "hidden_processes",
];

/// Budgets no profile may exceed: a profile is a request to an endpoint, not a way to
/// take it over.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
pub const MAX_BYTES: u64 = 1 << 40;

/// A profile as the agent runs it: its collectors in order, each with its budgets. On the
/// agent API with the configuration's snake_case keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Largest package the collection may produce (the agent's own cap applies too: the
    /// smaller wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_package_bytes: Option<u64>,
    pub collectors: Vec<CollectorSpec>,
}

/// One collector of a profile and the budgets it overrides (unset: the agent's defaults), as
/// the configuration writes it (`[[profiles.define.NAME.collector]]`) and the agent gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSpec {
    pub name: String,
    /// Longest the collector may run before it is abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Largest single file it copies (a larger one is cut, `partial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<u64>,
    /// Most bytes it keeps of one log source, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
    /// Most bytes it puts into the package in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_bytes: Option<u64>,
    /// Longest one of its read-only commands may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout_seconds: Option<u64>,
}

/// A profile as an administrator writes it (TOML): it may extend another profile, whose
/// collectors come first; naming one of them again replaces its budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDefinition {
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_package_bytes: Option<u64>,
    #[serde(default, rename = "collector", skip_serializing_if = "Vec::is_empty")]
    pub collectors: Vec<CollectorSpec>,
}

/// The profiles casefile ships, as written.
pub const BUILTIN: [(&str, &str); 2] =
    [(STANDARD, include_str!("../profiles/standard.toml")), (TRIAGE, include_str!("../profiles/triage.toml"))];

/// Why a set of profile definitions cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile name {0:?}: use 1 to 64 of a-z, 0-9, '-' and '_'")]
    BadName(String),
    #[error("profile {profile}: {why}")]
    Invalid { profile: String, why: String },
    #[error("no profile is named {0:?}")]
    Unknown(String),
}

/// Whether `name` can name a profile.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses a profile definition written in TOML.
pub fn parse_definition(name: &str, text: &str) -> Result<ProfileDefinition, ProfileError> {
    toml::from_str(text).map_err(|e| ProfileError::Invalid { profile: name.to_owned(), why: e.message().to_owned() })
}

/// The built-in definitions, parsed (once).
pub fn builtin_definitions() -> BTreeMap<String, ProfileDefinition> {
    static PARSED: std::sync::LazyLock<BTreeMap<String, ProfileDefinition>> = std::sync::LazyLock::new(|| {
        BUILTIN
            .iter()
            .map(|(name, text)| ((*name).to_owned(), parse_definition(name, text).expect("a built-in profile parses")))
            .collect()
    });
    PARSED.clone()
}

/// The built-in profiles, resolved.
pub fn builtin() -> BTreeMap<String, Profile> {
    resolve(&builtin_definitions()).expect("the built-in profiles resolve")
}

/// Resolves every definition (following `extends`) and checks each: a known collector
/// named once, budgets within bounds, no cycle.
pub fn resolve(definitions: &BTreeMap<String, ProfileDefinition>) -> Result<BTreeMap<String, Profile>, ProfileError> {
    definitions.keys().map(|name| Ok((name.clone(), resolve_one(definitions, name, 0)?))).collect()
}

fn resolve_one(
    definitions: &BTreeMap<String, ProfileDefinition>,
    name: &str,
    depth: usize,
) -> Result<Profile, ProfileError> {
    if !valid_name(name) {
        return Err(ProfileError::BadName(name.to_owned()));
    }
    let invalid = |why: String| ProfileError::Invalid { profile: name.to_owned(), why };
    let definition = definitions.get(name).ok_or_else(|| ProfileError::Unknown(name.to_owned()))?;
    if depth > definitions.len() {
        return Err(invalid("its `extends` chain loops".to_owned()));
    }
    let mut profile = match &definition.extends {
        Some(base) if !definitions.contains_key(base) => {
            return Err(invalid(format!("extends {base:?}, which is not defined")));
        }
        Some(base) => resolve_one(definitions, base, depth + 1)?,
        None => Profile::default(),
    };
    profile.name = name.to_owned();
    profile.description = definition.description.clone();
    profile.max_package_bytes = definition.max_package_bytes.or(profile.max_package_bytes);
    let mut seen = std::collections::HashSet::new();
    for collector in &definition.collectors {
        if !COLLECTORS.contains(&collector.name.as_str()) {
            return Err(invalid(format!(
                "names the collector {:?}; the collectors are {}",
                collector.name,
                COLLECTORS.join(", ")
            )));
        }
        if !seen.insert(collector.name.as_str()) {
            return Err(invalid(format!("names the collector {:?} twice", collector.name)));
        }
        let spec = collector.clone();
        check_budgets(&spec).map_err(invalid)?;
        match profile.collectors.iter_mut().find(|c| c.name == spec.name) {
            Some(inherited) => *inherited = spec,
            None => profile.collectors.push(spec),
        }
    }
    // The whole profile passes the checks the agent makes again: one set of rules.
    profile.check()?;
    Ok(profile)
}

impl Profile {
    /// The checks a resolved profile passed, again: for the agent, which runs what a server
    /// sends only within the same bounds.
    pub fn check(&self) -> Result<(), ProfileError> {
        let invalid = |why: String| ProfileError::Invalid { profile: self.name.clone(), why };
        if !valid_name(&self.name) {
            return Err(ProfileError::BadName(self.name.clone()));
        }
        if self.collectors.is_empty() {
            return Err(invalid("names no collector".to_owned()));
        }
        let mut seen = std::collections::HashSet::new();
        for spec in &self.collectors {
            if !COLLECTORS.contains(&spec.name.as_str()) || !seen.insert(spec.name.as_str()) {
                return Err(invalid(format!("names the collector {:?} unknown or twice", spec.name)));
            }
            check_budgets(spec).map_err(invalid)?;
        }
        match self.max_package_bytes {
            Some(bytes) if !(1..=MAX_BYTES).contains(&bytes) => {
                Err(invalid(format!("max_package_bytes must be between 1 and {MAX_BYTES}, not {bytes}")))
            }
            _ => Ok(()),
        }
    }
}

fn check_budgets(spec: &CollectorSpec) -> Result<(), String> {
    let seconds =
        [("timeout_seconds", spec.timeout_seconds), ("command_timeout_seconds", spec.command_timeout_seconds)];
    for (key, value) in seconds {
        if let Some(v) = value
            && !(1..=MAX_TIMEOUT_SECONDS).contains(&v)
        {
            return Err(format!("{}.{key} must be between 1 and {MAX_TIMEOUT_SECONDS}, not {v}", spec.name));
        }
    }
    let bytes = [
        ("max_file_bytes", spec.max_file_bytes),
        ("max_log_bytes", spec.max_log_bytes),
        ("max_total_bytes", spec.max_total_bytes),
    ];
    for (key, value) in bytes {
        if let Some(v) = value
            && !(1..=MAX_BYTES).contains(&v)
        {
            return Err(format!("{}.{key} must be between 1 and {MAX_BYTES}, not {v}", spec.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(entries: &[(&str, &str)]) -> BTreeMap<String, ProfileDefinition> {
        let mut all = builtin_definitions();
        for (name, text) in entries {
            all.insert((*name).to_owned(), parse_definition(name, text).unwrap());
        }
        all
    }

    #[test]
    fn triage_is_standard_plus_the_triage_collectors() {
        let builtin = builtin();
        let standard: Vec<&str> = builtin[STANDARD].collectors.iter().map(|c| c.name.as_str()).collect();
        let triage: Vec<&str> = builtin[TRIAGE].collectors.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(standard, COLLECTORS[..10]);
        assert_eq!(triage, COLLECTORS);
    }

    #[test]
    fn an_extension_replaces_budgets_and_appends_collectors() {
        let text = "extends = \"standard\"\n[[collector]]\nname = \"logs\"\nmax_log_bytes = 1024\n\
                    [[collector]]\nname = \"timeline\"\ntimeout_seconds = 60\n";
        let resolved = resolve(&defs(&[("web", text)])).unwrap();
        let web = &resolved["web"];
        assert_eq!(web.collectors.len(), 11);
        let logs = web.collectors.iter().find(|c| c.name == "logs").unwrap();
        assert_eq!(logs.max_log_bytes, Some(1024));
        assert_eq!(web.collectors.last().unwrap().name, "timeline");
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let cases = [
            ("x", "[[collector]]\nname = \"rm -rf /\"\n", "names the collector"),
            ("x", "[[collector]]\nname = \"logs\"\n[[collector]]\nname = \"logs\"\n", "twice"),
            ("x", "extends = \"nope\"\n", "not defined"),
            ("x", "", "names no collector"),
            ("x", "[[collector]]\nname = \"logs\"\ntimeout_seconds = 0\n", "timeout_seconds"),
            ("x", "[[collector]]\nname = \"logs\"\nmax_file_bytes = 0\n", "max_file_bytes"),
            ("Bad Name", "[[collector]]\nname = \"logs\"\n", "profile name"),
        ];
        for (name, text, expected) in cases {
            let err = resolve(&defs(&[(name, text)])).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        // What the agent checks again: a server's profile past the bounds is refused.
        let mut sent = builtin().remove(TRIAGE).unwrap();
        sent.check().unwrap();
        sent.collectors[0].timeout_seconds = Some(u64::MAX);
        assert!(sent.check().unwrap_err().to_string().contains("timeout_seconds"));
        let mut sent = builtin().remove(STANDARD).unwrap();
        sent.collectors.push(CollectorSpec { name: "logs".into(), ..Default::default() });
        assert!(sent.check().is_err(), "a collector twice");
        let loop_ = defs(&[("a", "extends = \"b\"\n"), ("b", "extends = \"a\"\n")]);
        assert!(resolve(&loop_).unwrap_err().to_string().contains("loops"));
        // A command is not a building block: unknown keys are refused.
        assert!(parse_definition("x", "[[collector]]\nname = \"logs\"\ncommand = \"sh\"\n").is_err());
    }
}
