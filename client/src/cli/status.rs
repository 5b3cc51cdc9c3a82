//! `sekisho status`: the technician's recent requests, newest first, as a table.

use std::process::ExitCode;

use proto::{RequestState, RequestView};
use sekisho_client::{ClientConfig, Session};

use super::{Outcome, Stop, when};

/// Longest purpose shown; the rest is cut with `…`.
const PURPOSE_WIDTH: usize = 40;

pub(crate) async fn run(config: &ClientConfig) -> Outcome {
    let mut session = Session::connect(config).await.map_err(Stop::error)?;
    let listed = session.status().await;
    session.close().await;
    let views = listed.map_err(Stop::error)?;
    if views.is_empty() {
        println!("You have no requests.");
    } else {
        print!("{}", table(&views, when::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The table, one row per request, columns padded to their widest cell.
fn table(views: &[RequestView], now: u64) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "STATE".to_owned(),
        "TARGETS".to_owned(),
        "PURPOSE".to_owned(),
        "WHEN".to_owned(),
    ]];
    rows.extend(views.iter().map(|view| {
        [
            view.id.clone(),
            state(view),
            view.targets.join(","),
            shorten(&view.purpose, PURPOSE_WIDTH),
            time(view, now),
        ]
    }));
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn state(view: &RequestView) -> String {
    match view.state {
        RequestState::Requested => format!(
            "requested ({} of {})",
            view.approvers.len(),
            view.approvals_needed
        ),
        RequestState::Ended if !view.end_reason.is_empty() => {
            format!("ended ({})", view.end_reason)
        }
        other => other.as_str().to_owned(),
    }
}

/// The time that matters in each state: when it was asked, when it must be opened by, when
/// the session ends, when it ended.
fn time(view: &RequestView, now: u64) -> String {
    let at = |unix: u64| format!("{} ({})", when::clock(unix, now), relative(unix, now));
    match view.state {
        RequestState::Requested => format!("asked {}", at(view.created_at)),
        RequestState::Approved => format!("open by {}", at(view.end_at)),
        RequestState::Active => format!("ends {}", at(view.end_at)),
        RequestState::Ended if view.ended_at != 0 => format!("ended {}", at(view.ended_at)),
        RequestState::Ended => format!("asked {}", at(view.created_at)),
    }
}

fn relative(unix: u64, now: u64) -> String {
    if unix > now {
        when::until(unix, now)
    } else {
        when::ago(unix, now)
    }
}

fn shorten(text: &str, width: usize) -> String {
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, state: RequestState) -> RequestView {
        RequestView {
            id: id.into(),
            state,
            targets: vec!["ehr-db".into(), "ehr-web".into()],
            purpose: "apply patch 5.2.1".into(),
            ticket: "INC-1234".into(),
            wanted_secs: 3600,
            created_at: 1_000,
            answer_by: 2_800,
            approvers: Vec::new(),
            approvals_needed: 1,
            end_at: 0,
            ended_at: 0,
            end_reason: String::new(),
            ended_by: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn each_state_shows_the_time_that_matters() {
        let now = 1_130;
        let active = RequestView {
            end_at: now + 3599,
            ..view("r-b", RequestState::Active)
        };
        let denied = RequestView {
            end_reason: "denied".into(),
            ..view("r-c", RequestState::Ended)
        };
        let table = table(&[view("r-a", RequestState::Requested), active, denied], now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID "), "{table}");
        assert!(lines[1].contains("requested (0 of 1)"), "{table}");
        assert!(lines[1].ends_with("(2m10s ago)"), "{table}");
        assert!(lines[2].contains("active"), "{table}");
        assert!(lines[2].ends_with("(in 59m)"), "{table}");
        assert!(lines[3].contains("ended (denied)"), "{table}");
        // Columns line up.
        let column = lines[0].find("TARGETS").unwrap();
        assert!(
            lines
                .iter()
                .skip(1)
                .all(|l| &l[column..column + 6] == "ehr-db"),
            "{table}"
        );
    }

    #[test]
    fn long_purposes_are_cut() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("a much longer purpose", 10), "a much lo…");
        assert_eq!(shorten("two\nlines", 10), "two lines");
    }
}
