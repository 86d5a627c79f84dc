//! `casefile rbac ...`: roles and device groups for delegated users, managed on the
//! server's data directory as the admin API manages them.

use std::io::Write;

use anyhow::{Context as _, bail};
use casefile_proto::rbac::{DeviceGroup, GroupRule, Role, RuleProperty};
use casefile_server::admin::Admin;
use clap::Subcommand;

use crate::target::Target;

#[derive(Subcommand)]
pub enum RbacCommand {
    /// List the roles.
    Roles {
        #[command(flatten)]
        target: Target,
    },
    /// Create or replace a role.
    RolePut {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        /// ViewData, AlertsInvestigation, ActiveRemediation, ManageSecuritySettings, Administrator
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Users holding it: object ids or UPNs.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        /// Identity-provider groups (`groups` claim) whose members hold it.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    RoleDelete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
    /// List the device groups, best rank first.
    Groups {
        #[command(flatten)]
        target: Target,
    },
    /// Create a device group; machines are regrouped at once.
    GroupCreate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        /// 1 is the highest; a machine joins the best-ranked group it matches.
        #[arg(long)]
        rank: i64,
        /// PROPERTY=VALUE[,VALUE...] with PROPERTY one of Name (with * wildcards), Domain,
        /// Tag, OsPlatform; repeat for more rules (all must hold).
        #[arg(long = "rule", required = true)]
        rules: Vec<String>,
        /// Identity-provider groups whose members see the group's machines (default: all users).
        #[arg(long, value_delimiter = ',')]
        user_groups: Vec<String>,
    },
    GroupDelete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: i64,
    },
    /// Set which user groups see "Ungrouped devices (default)" (none given: every user).
    Ungrouped {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_delimiter = ',')]
        user_groups: Vec<String>,
    },
}

fn parse_rule(text: &str) -> anyhow::Result<GroupRule> {
    let (property, values) =
        text.split_once('=').with_context(|| format!("--rule '{text}': PROPERTY=VALUE[,VALUE...]"))?;
    let property = match property.trim().to_ascii_lowercase().as_str() {
        "name" => RuleProperty::Name,
        "domain" => RuleProperty::Domain,
        "tag" => RuleProperty::Tag,
        "osplatform" | "os" => RuleProperty::OsPlatform,
        other => bail!("--rule '{text}': unknown property '{other}' (Name, Domain, Tag, OsPlatform)"),
    };
    let values = values.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect();
    Ok(GroupRule { property, values })
}

async fn open(target: &Target) -> anyhow::Result<Admin> {
    target.config.admin().await
}

fn print<T: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        text(out)?;
    }
    Ok(())
}

pub async fn run(command: RbacCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        RbacCommand::Roles { target } => {
            let roles = open(&target).await?.roles(&target.tenant).await?;
            print(out, target.json, &roles, |out| {
                for r in &roles {
                    writeln!(
                        out,
                        "{}: {} (users: {}; groups: {})",
                        r.name,
                        r.permissions.join(", "),
                        r.users.join(", "),
                        r.groups.join(", ")
                    )?;
                }
                Ok(())
            })
        }
        RbacCommand::RolePut { target, name, permissions, users, groups } => {
            let server = open(&target).await?;
            let role = Role { name, permissions, users, groups };
            let role = server.put_role(&target.tenant, role).await?;
            print(out, target.json, &role, |out| writeln!(out, "role {} stored", role.name))
        }
        RbacCommand::RoleDelete { target, name } => {
            let server = open(&target).await?;
            server.delete_role(&target.tenant, &name).await?;
            Ok(writeln!(out, "role {name} deleted")?)
        }
        RbacCommand::Groups { target } => {
            let groups = open(&target).await?.device_groups(&target.tenant).await?;
            print(out, target.json, &groups, |out| {
                for g in &groups {
                    writeln!(out, "{} rank {} {} (user groups: {})", g.id, g.rank, g.name, g.user_groups.join(", "))?;
                }
                Ok(())
            })
        }
        RbacCommand::GroupCreate { target, name, rank, rules, user_groups } => {
            let rules = rules.iter().map(|r| parse_rule(r)).collect::<anyhow::Result<Vec<_>>>()?;
            let server = open(&target).await?;
            let group = DeviceGroup { id: 0, name, rank, rules, user_groups };
            let group = server.create_device_group(&target.tenant, group).await?;
            print(out, target.json, &group, |out| {
                writeln!(out, "device group {} created with id {}", group.name, group.id)
            })
        }
        RbacCommand::Ungrouped { target, user_groups } => {
            let server = open(&target).await?;
            server.set_ungrouped_access(&target.tenant, user_groups.clone()).await?;
            let who = if user_groups.is_empty() { "every user".to_owned() } else { user_groups.join(", ") };
            Ok(writeln!(out, "ungrouped devices are visible to {who}")?)
        }
        RbacCommand::GroupDelete { target, id } => {
            let server = open(&target).await?;
            server.delete_device_group(&target.tenant, id).await?;
            Ok(writeln!(out, "device group {id} deleted")?)
        }
    }
}
