//! `Persistence/`: what starts by itself on the host.
//!
//! - [`units`]: systemd units and timers (`systemd_units.csv`, `timers.csv`)
//! - [`cron`]: cron tables and at jobs (`cron.csv`, `at_jobs.csv`)
//! - [`modules`]: loaded kernel modules (`kernel_modules.csv`)
//! - [`startup`]: copies of `rc.local`, `ld.so.preload` and the shell startup files

use casefile_package::ItemSink;

use crate::{CollectError, Collector, Context};

use super::accounts::homes;
use super::common::UniqueNames;

mod cron;
mod modules;
mod startup;
mod units;

pub struct Persistence;

impl Collector for Persistence {
    fn name(&self) -> &'static str {
        "persistence"
    }

    fn folder(&self) -> &'static str {
        "Persistence"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let sink: &mut dyn ItemSink = &mut UniqueNames::new(sink);
        let homes = homes(ctx);
        units::write_units(ctx, sink, &homes)?;
        ctx.check_cancelled()?;
        cron::write_cron(ctx, sink)?;
        cron::write_at_jobs(ctx, sink)?;
        modules::write_kernel_modules(ctx, sink)?;
        ctx.check_cancelled()?;
        startup::copy_startup_files(ctx, sink, &homes)?;
        ctx.check_cancelled()
    }
}
