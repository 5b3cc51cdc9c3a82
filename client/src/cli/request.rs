//! `sekisho request`: ask the hospital for a session.
//!
//! The id alone goes to standard output, so that `id=$(sekisho request …)` works; the
//! sentences go to standard error.

use std::process::ExitCode;

use proto::RequestAccess;
use sekisho_client::{ClientConfig, Session};

use super::{Outcome, Stop, when};

/// What the technician asks for.
#[derive(Debug)]
pub(crate) struct Ask {
    pub(crate) targets: Vec<String>,
    pub(crate) purpose: String,
    pub(crate) ticket: String,
    pub(crate) wanted_secs: u32,
}

pub(crate) async fn run(config: &ClientConfig, ask: Ask) -> Outcome {
    let mut session = Session::connect(config).await.map_err(Stop::error)?;
    let asked = session
        .request(RequestAccess {
            targets: ask.targets,
            purpose: ask.purpose,
            ticket: ask.ticket,
            duration_secs: ask.wanted_secs,
        })
        .await;
    let hospital = session.welcome().broker_name.clone();
    session.close().await;
    let view = asked.map_err(Stop::error)?;

    println!("{}", view.id);
    let within = when::length(view.answer_by.saturating_sub(view.created_at));
    let approvers = match view.approvals_needed {
        0 | 1 => format!("An approver at the hospital must answer it within {within}"),
        n => format!("{n} approvers at the hospital must approve it within {within}"),
    };
    eprintln!(
        "Request {} sent to {hospital} for {} ({}). {approvers}; `sekisho connect` waits for the answer.",
        view.id,
        view.targets.join(", "),
        when::length(u64::from(view.wanted_secs)),
    );
    let forwards: Vec<String> = view
        .targets
        .iter()
        .map(|target| format!("-L LOCAL_PORT:{target}"))
        .collect();
    eprintln!("Next: sekisho connect {} {}", view.id, forwards.join(" "));
    Ok(ExitCode::SUCCESS)
}
