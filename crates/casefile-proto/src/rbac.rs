//! Roles and device groups for delegated users (`../shared/spec/mde-api.md` §6.3), as
//! the admin API and the CLI show them. Application tokens are tenant-wide and ignore both.

use serde::{Deserialize, Serialize};

/// What a role lets a user do (MDE's role permissions).
pub mod permission {
    pub const VIEW_DATA: &str = "ViewData";
    /// Collect investigation packages, manage device tags (and alerts, in MDE).
    pub const ALERTS_INVESTIGATION: &str = "AlertsInvestigation";
    pub const ACTIVE_REMEDIATION: &str = "ActiveRemediation";
    pub const MANAGE_SECURITY_SETTINGS: &str = "ManageSecuritySettings";
    /// Everything, on every device, whatever the device groups say.
    pub const ADMINISTRATOR: &str = "Administrator";

    pub const ALL: &[&str] =
        &[VIEW_DATA, ALERTS_INVESTIGATION, ACTIVE_REMEDIATION, MANAGE_SECURITY_SETTINGS, ADMINISTRATOR];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Taken from the path when the role is stored through the admin API.
    #[serde(default)]
    pub name: String,
    /// Values of [`permission`].
    pub permissions: Vec<String>,
    /// Users (object id or UPN) holding the role.
    #[serde(default)]
    pub users: Vec<String>,
    /// Identity-provider groups (`groups` claim) whose members hold the role.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Which machine property a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RuleProperty {
    /// The computer name; `*` matches any run of characters (`web-*`).
    Name,
    /// The DNS domain: what follows the first `.` of the name.
    Domain,
    /// One of the machine's tags.
    Tag,
    OsPlatform,
}

/// One condition: the property equals (case aside) any of `values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupRule {
    pub property: RuleProperty,
    pub values: Vec<String>,
}

/// A device group: machines matching every rule (any value of each) belong to it, unless
/// a group of a better (lower) rank matches too. Machines no group matches are in
/// "Ungrouped devices (default)".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroup {
    /// Assigned by the server; ignored when creating.
    #[serde(default)]
    pub id: i64,
    pub name: String,
    /// 1 is the highest.
    pub rank: i64,
    pub rules: Vec<GroupRule>,
    /// Identity-provider groups whose members see these machines; empty: every user.
    #[serde(default)]
    pub user_groups: Vec<String>,
}

/// A list answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleList {
    pub value: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroupList {
    pub value: Vec<DeviceGroup>,
    /// Who sees "Ungrouped devices (default)"; empty: every user.
    pub ungrouped_user_groups: Vec<String>,
}

/// Body of `PUT /api/admin/devicegroups/ungrouped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UngroupedAccess {
    pub user_groups: Vec<String>,
}

/// The name of the group of machines no device group matches.
pub const UNGROUPED: &str = "Ungrouped devices (default)";

impl GroupRule {
    /// Whether a machine with these facts meets the rule.
    pub fn matches(&self, name: &str, tags: &[String], os_platform: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.values.iter().map(|v| v.to_ascii_lowercase()).any(|value| match self.property {
            RuleProperty::Name => wildcard(&value, &name),
            RuleProperty::Domain => name.split_once('.').is_some_and(|(_, domain)| domain == value),
            RuleProperty::Tag => tags.iter().any(|t| t.eq_ignore_ascii_case(&value)),
            RuleProperty::OsPlatform => os_platform.eq_ignore_ascii_case(&value),
        })
    }
}

impl DeviceGroup {
    pub fn matches(&self, name: &str, tags: &[String], os_platform: &str) -> bool {
        !self.rules.is_empty() && self.rules.iter().all(|r| r.matches(name, tags, os_platform))
    }
}

/// The group a machine belongs to: the best-ranked one it matches (`None`: ungrouped).
pub fn group_of<'a>(
    groups: &'a [DeviceGroup],
    name: &str,
    tags: &[String],
    os_platform: &str,
) -> Option<&'a DeviceGroup> {
    groups.iter().filter(|g| g.matches(name, tags, os_platform)).min_by_key(|g| (g.rank, g.id))
}

/// `pattern` with `*` for any run of characters, against `text` (both lower case).
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: i64, rank: i64, property: RuleProperty, values: &[&str]) -> DeviceGroup {
        DeviceGroup {
            id,
            name: format!("g{id}"),
            rank,
            rules: vec![GroupRule { property, values: values.iter().map(|v| v.to_string()).collect() }],
            user_groups: vec![],
        }
    }

    #[test]
    fn the_best_ranked_matching_group_wins() {
        let groups = [
            group(1, 2, RuleProperty::Name, &["web-*"]),
            group(2, 1, RuleProperty::Tag, &["PCI"]),
            group(3, 3, RuleProperty::Domain, &["corp.example"]),
        ];
        let tags = vec!["pci".to_owned()];
        assert_eq!(group_of(&groups, "WEB-01.corp.example", &tags, "Linux").map(|g| g.id), Some(2));
        assert_eq!(group_of(&groups, "web-01.corp.example", &[], "Linux").map(|g| g.id), Some(1));
        assert_eq!(group_of(&groups, "db.corp.example", &[], "Linux").map(|g| g.id), Some(3));
        assert_eq!(group_of(&groups, "db.other", &[], "Linux"), None);
    }

    #[test]
    fn rank_ties_go_to_the_older_group_and_rules_are_anded() {
        let mut both = group(5, 1, RuleProperty::OsPlatform, &["linux"]);
        both.rules.push(GroupRule { property: RuleProperty::Name, values: vec!["*-prod".into()] });
        let groups = [both, group(4, 1, RuleProperty::OsPlatform, &["Linux"])];
        assert_eq!(group_of(&groups, "api-prod", &[], "Linux").map(|g| g.id), Some(4), "same rank: lower id");
        assert_eq!(group_of(&groups[..1], "api-dev", &[], "Linux"), None, "every rule must hold");
        assert!(wildcard("a*b*c", "axxbyyc") && !wildcard("a*b*c", "axxc") && wildcard("*", "anything"));
    }
}
