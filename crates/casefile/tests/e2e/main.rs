//! End-to-end tests: the real server on an ephemeral port with a temporary SQLite file,
//! a real agent task, real HTTP and real zips.

mod agent;
mod analyst;
mod api;
mod audit;
mod auth;
mod browser;
mod cancel;
mod cli;
mod clients;
mod console;
mod contract;
mod durability;
mod faults;
mod flood;
mod hardening;
mod hostile;
mod identity;
mod issuers;
mod lifecycle;
mod limits;
mod observe;
mod odata;
mod offline;
mod openapi;
mod operate;
mod profiles;
mod rbac;
mod replicas;
mod s3;
mod shutdown;
mod sso;
mod store_copy;
mod support;
mod takeover;
mod transport;
