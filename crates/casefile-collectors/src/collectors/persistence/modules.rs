//! `kernel_modules.csv`: the loaded kernel modules from `/proc/modules`, with the taint
//! flags of each (`O` out-of-tree, `E` unsigned, `P` proprietary, …).

use casefile_package::{ItemSink, PackageError};

use crate::Context;
use crate::collectors::common::{Problems, csv_from_lines, is_missing, read_value, split_fields, trim_bytes};

const MODULES: &str = "/proc/modules";
const HEADER: [&str; 7] = ["name", "size", "instances", "dependencies", "state", "address", "taint"];

pub(super) fn write_kernel_modules(ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
    let item = ("kernel_modules.csv", MODULES, "/proc/modules, /sys/module/*/taint");
    csv_from_lines(ctx, sink, item, &HEADER, |line, problems| Some(Module::parse(line)?.fields(ctx, problems)))
}

/// `nf_tables 348160 12 nft_ct,nft_chain_nat, Live 0xffffffffc0a1b000 (OE)`.
#[derive(Debug, PartialEq, Eq)]
struct Module {
    name: String,
    size: String,
    instances: String,
    dependencies: String,
    state: String,
    address: String,
    /// The flags in parentheses at the end, if any.
    taint: String,
}

impl Module {
    fn parse(line: &[u8]) -> Option<Self> {
        let (fields, rest) = split_fields(line, 6)?;
        let text = |i: usize| String::from_utf8_lossy(fields[i]).into_owned();
        let dependencies = match text(3).as_str() {
            "-" => String::new(),
            deps => deps.trim_end_matches(',').to_owned(),
        };
        let taint = String::from_utf8_lossy(trim_bytes(rest)).trim_matches(['(', ')']).to_owned();
        Some(Self {
            name: text(0),
            size: text(1),
            instances: text(2),
            dependencies,
            state: text(4),
            address: text(5),
            taint,
        })
    }

    /// `/sys/module/<name>/taint` is the kernel's own record; `/proc/modules` is the
    /// fallback for kernels without it.
    fn fields(self, ctx: &Context, problems: &mut Problems) -> [String; 7] {
        let taint = match read_value(&ctx.path(&format!("/sys/module/{}/taint", self.name))) {
            Ok(taint) => taint,
            Err(e) if is_missing(&e) => self.taint,
            Err(e) => {
                problems.add("unreadable taint flags", format!("{}: {e}", self.name));
                self.taint
            }
        };
        [self.name, self.size, self.instances, self.dependencies, self.state, self.address, taint]
    }
}

#[cfg(test)]
mod tests {
    use casefile_package::ItemStatus;

    use crate::collectors::persistence::Persistence;
    use crate::collectors::test_support::{Fixture, find_row, run, run_live};

    use super::*;

    #[test]
    fn modules_list_dependencies_state_and_taint() {
        let f = Fixture::new();
        f.write(
            MODULES,
            "nf_tables 348160 12 nft_ct,nft_chain_nat, Live 0xffffffffc0a1b000\n\
             rootkit 16384 0 - Live 0x0000000000000000 (OE)\n\
             loading 4096 0 - Loading 0x0000000000000000\n\
             garbage\n",
        );
        f.write("/sys/module/nf_tables/taint", "\n");
        f.write("/sys/module/loading/taint", "O\n");
        let sink = run(&Persistence, f.root());
        let item = sink.item("kernel_modules.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        let rows = item.rows();
        assert_eq!(rows.len(), 3);
        let nf = find_row(&rows, "name", "nf_tables");
        assert_eq!(nf["size"], "348160");
        assert_eq!(nf["instances"], "12");
        assert_eq!(nf["dependencies"], "nft_ct,nft_chain_nat");
        assert_eq!(nf["state"], "Live");
        assert_eq!(nf["address"], "0xffffffffc0a1b000");
        assert_eq!(nf["taint"], "");
        let rootkit = find_row(&rows, "name", "rootkit");
        assert_eq!((rootkit["dependencies"].as_str(), rootkit["taint"].as_str()), ("", "OE"));
        assert_eq!(find_row(&rows, "name", "loading")["taint"], "O");
    }

    #[test]
    fn live_modules_are_listed_or_not_applicable() {
        let sink = run_live(&Persistence);
        let item = sink.item("kernel_modules.csv");
        assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
    }
}
