//! End-to-end tests: one binary, a module per area. Every test starts a real broker on
//! `127.0.0.1:0` and speaks QUIC to it.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

/// The audit log: every step on the record, in order, chained.
mod audit;
/// The audit stream to a real rsyslogd over TCP and TLS.
mod audit_syslog;
/// The staff web UI in real headless Chromium, against a real client.
mod browser;
/// Enrollment, the certificate registry, disabling and resetting technicians and vendors.
mod identity;
/// The hospital's CA and sealing key, checked against the database at start.
mod keys;
/// Each rule a policy states, refusing when broken against a live broker; reloads.
mod policy;
/// What the broker and the client refuse, and the sentence each refusal carries.
mod refusals;
/// Sessions: request, approval, one-time password, end time, revocation, lockdown, restart.
mod sessions;
/// Setting up a staff account: the new authenticator's confirming code, wrong codes, resets,
/// expiry.
mod staff_setup;
/// Real programs through a forward: curl, psql, ssh and scp against real servers.
mod third_party;
/// The data path: transfers, concurrency, half-close, backpressure, resets.
mod tunnel;
/// The staff web UI and JSON API over HTTP: roles, CSRF, logins, escaping.
mod web;
/// The approvers' webhook against a real relay: events, signature, trust, retries, failures.
mod webhook;
