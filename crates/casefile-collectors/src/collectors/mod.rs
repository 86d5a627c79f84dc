//! One module per category of the package. Each collector reads below
//! [`Context::root`](crate::Context), so tests run them on fixture trees.

use crate::Collector;

mod accounts;
mod command;
mod common;
pub mod configs;
pub mod containers;
mod copies;
pub mod disks;
pub mod hidden_processes;
pub mod histories;
pub mod kernel_security;
pub mod logs;
pub mod network;
pub mod open_files;
pub mod packages;
pub mod persistence;
pub mod processes;
mod procs;
pub mod system;
#[cfg(test)]
mod test_support;
pub mod timeline;
pub mod user_traces;
pub mod users;
pub mod var_log;
mod walk;

/// Every collector this build knows, by the name a profile uses: the standard ones in
/// their order, then the triage ones.
pub fn catalog() -> Vec<Box<dyn Collector>> {
    let mut catalog = all();
    // Triage collectors (issue 13), in the order of `casefile_proto::profile::COLLECTORS`.
    catalog.extend(Vec::<Box<dyn Collector>>::from([
        Box::new(timeline::Timeline) as Box<dyn Collector>,
        Box::new(var_log::VarLog),
        Box::new(configs::Configs),
        Box::new(user_traces::UserTraces),
        Box::new(containers::Containers),
        Box::new(kernel_security::KernelSecurity),
        Box::new(hidden_processes::HiddenProcesses),
    ]));
    catalog
}

/// The collector a profile names, if this build has it.
pub fn by_name(name: &str) -> Option<Box<dyn Collector>> {
    catalog().into_iter().find(|c| c.name() == name)
}

/// The standard collectors (MDE's content), in the order they run.
pub fn all() -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(system::SystemInfo),
        Box::new(processes::Processes),
        Box::new(network::Network),
        Box::new(users::Users),
        Box::new(disks::Disks),
        Box::new(open_files::OpenFiles),
        Box::new(persistence::Persistence),
        Box::new(packages::Packages),
        Box::new(histories::Histories),
        Box::new(logs::Logs),
    ]
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use casefile_package::writer::PackageMeta;
    use casefile_package::{ItemStatus, PackageWriter, verify};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{CollectError, Context};

    #[test]
    fn the_catalog_is_what_profiles_may_name_in_order() {
        let names: Vec<&str> = catalog().iter().map(|c| c.name()).collect();
        assert_eq!(names, casefile_proto::profile::COLLECTORS);
        assert!(by_name("timeline").is_some() && by_name("sh").is_none());
    }

    #[test]
    fn collectors_run_in_the_documented_order_with_their_folders() {
        let folders: Vec<(&str, &str)> = all().iter().map(|c| (c.name(), c.folder())).collect();
        assert_eq!(
            folders,
            [
                ("system", "System information"),
                ("processes", "Processes"),
                ("network", "Network connections"),
                ("users", "Users and groups"),
                ("disks", "Disk volumes"),
                ("open_files", "Open files"),
                ("persistence", "Persistence"),
                ("packages", "Installed packages"),
                ("histories", "Shell histories"),
                ("logs", "Logs"),
            ]
        );
    }

    /// The whole live collection through the real package writer: no collector returns
    /// an error, none fails outright, and the package verifies against its manifest.
    #[test]
    fn live_collection_makes_a_package_that_verifies() {
        let ctx = Context::live(CancellationToken::new());
        let mut writer = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("test"));
        for collector in all() {
            writer.begin_collector(collector.name(), collector.folder());
            let result = collector.collect(&ctx, &mut writer);
            assert!(result.is_ok(), "{}: {:?}", collector.name(), result.err());
            writer.end_collector(None);
        }
        let (out, manifest) = writer.finish().unwrap();
        for run in &manifest.collectors {
            assert_ne!(run.status, ItemStatus::Failed, "{}: {:?}", run.name, run.error);
        }
        let paths: Vec<&str> = manifest.items.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "System information/os.json",
            "Processes/processes.csv",
            "Network connections/connections.csv",
            "Users and groups/users.csv",
            "Disk volumes/mounts.csv",
            "Open files/open_files.csv",
            "Network connections/commands.csv",
            "Users and groups/lastlog.csv",
            "Users and groups/ssh_authorized_keys.csv",
            "Persistence/systemd_units.csv",
            "Persistence/timers.csv",
            "Persistence/cron.csv",
            "Persistence/at_jobs.csv",
            "Persistence/kernel_modules.csv",
            "Installed packages/dpkg.csv",
            "Installed packages/rpm.csv",
            "Shell histories/temp_executables.csv",
            "Logs/logs.csv",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
        let report = verify(Cursor::new(out.into_inner())).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    /// The host-state triage collectors (containers, kernel and security, hidden
    /// processes) on the live machine through the real package writer: the package
    /// verifies and holds each one's main table.
    #[test]
    fn live_host_state_collectors_make_a_package_that_verifies() {
        let ctx = Context::live(CancellationToken::new());
        let mut writer = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("test"));
        for name in ["containers", "kernel_security", "hidden_processes"] {
            let collector = by_name(name).unwrap_or_else(|| panic!("{name} not in the catalog"));
            assert!(!all().iter().any(|c| c.name() == name), "{name} is not a standard collector");
            writer.begin_collector(collector.name(), collector.folder());
            let result = collector.collect(&ctx, &mut writer);
            assert!(result.is_ok(), "{name}: {:?}", result.err());
            writer.end_collector(None);
        }
        let (out, manifest) = writer.finish().unwrap();
        let paths: Vec<&str> = manifest.items.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "Containers and VMs/containers.csv",
            "Containers and VMs/commands.csv",
            "Kernel and security/sysctl.csv",
            "Kernel and security/tainted.csv",
            "Kernel and security/security.csv",
            "Kernel and security/dmesg.txt",
            "Hidden processes/hidden_processes.csv",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
        let hidden = manifest.items.iter().find(|i| i.path == "Hidden processes/hidden_processes.csv").unwrap();
        assert_eq!(hidden.status, ItemStatus::Ok, "{:?}", hidden.error);
        let report = verify(Cursor::new(out.into_inner())).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }

    #[test]
    fn a_cancelled_collection_stops_with_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ctx = Context::live(cancel);
        for collector in catalog() {
            let mut sink = test_support::MemorySink::default();
            let result = collector.collect(&ctx, &mut sink);
            assert!(matches!(result, Err(CollectError::Cancelled)), "{}: {result:?}", collector.name());
        }
    }
}
