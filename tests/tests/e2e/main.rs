//! End-to-end tests: one binary, a module per area. Every test starts a real broker on
//! `127.0.0.1:0` and speaks QUIC to it.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

/// The audit log: every step on the record, in order, chained.
mod audit;
/// The audit stream to a real rsyslogd over TCP and TLS.
mod audit_syslog;
/// Bounds on what a peer can make the broker hold or write, before and after authentication.
mod bounds;
/// The staff web UI in real headless Chromium, against a real client.
mod browser;
/// Signed checkpoints of the audit log: rewrites, deletions, cuts and rollbacks made with SQL
/// are found against the checkpoint file and a SIEM stream; file modes in the data directory.
mod checkpoints;
/// The broker cuts sessions on its own, whatever a hostile client does.
mod hard_cut;
/// Enrollment, the certificate registry, disabling and resetting technicians and vendors.
mod identity;
/// The hospital's CA and sealing key, checked against the database at start.
mod keys;
/// Accountable operators: the command line's authentication, separation of duties, lockdown lifts.
mod operators;
/// Each rule a policy states, refusing when broken against a live broker; reloads.
mod policy;
/// What the broker and the client refuse, and the sentence each refusal carries.
mod refusals;
/// Sessions that outlive a lost connection: taken up again with a new code, every end still
/// applying between connections, a vendor that does not allow it, restarts.
mod resume;
/// Sessions: request, approval, one-time password, end time, revocation, lockdown, restart.
mod sessions;
/// Setting up a staff account: the new authenticator's confirming code, wrong codes, resets,
/// expiry.
mod staff_setup;
/// Real store faults (a full disk) across live work: nothing acknowledged is lost, and the broker heals by itself.
mod store_faults;
/// Real programs through a forward: curl, psql, ssh and scp against real servers.
mod third_party;
/// Clock steps and the host's time sync, recorded and shown by status; ends on the monotonic clock.
mod time;
/// The data path: transfers, concurrency, half-close, backpressure, resets.
mod tunnel;
/// The staff web UI and JSON API over HTTP: roles, CSRF, logins, escaping.
mod web;
/// The staff web UI under abuse (issue 16): encoded names, bad input, login delays and
/// locks, CSV formulas, who may connect, session and stream lifetimes.
mod web_abuse;
/// The web UI's connections under abuse: caps, room for staff, deadlines.
mod web_connections;
/// The approvers' webhook against a real relay: events, signature, trust, retries, failures.
mod webhook;
