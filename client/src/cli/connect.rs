//! `sekisho connect REQUEST_ID -L …`: bind the local ports, follow the request until the
//! hospital answers, open it with a one-time password, forward until the session ends.
//!
//! Ctrl-C is caught from the moment the request is being followed: before the session opens
//! it stops waiting (the request stays as it is), after it closes the session. Before that
//! (connecting), Ctrl-C ends the process as usual; there is nothing to clean up.
//!
//! A session outlives a lost connection (unless the vendor's policy says otherwise): when the
//! connection is lost, the command keeps its local ports, connects again by itself (backing
//! off, until the end time) and takes the session up with a new one-time password (none
//! within the short window a policy may give). New local connections wait meanwhile; those in
//! flight are reported cut. `sekisho connect ID` on a live session whose client is gone (a
//! crash, a closed laptop) takes it up the same way.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use proto::{ErrorCode, Opened, RequestState, RequestView};
use sekisho_client::forward::{EventSink, serve_local_forward};
use sekisho_client::{
    ClientConfig, ConnectError, ControlError, ForwardEvent, LocalForward, Session, SessionEvent,
    SessionLink,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tunnel::splice::SpliceEnd;

use super::code::{CodeSource, Read};
use super::console::Console;
use super::interrupt::Interrupts;
use super::{Outcome, Stop, when};

/// How long to let the prompt's thread put the terminal back after Ctrl-C.
const PROMPT_RESTORE: Duration = Duration::from_secs(1);
/// The first pause between attempts to reach the broker again after a lost connection; it
/// doubles up to [`RECONNECT_LONGEST`].
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_LONGEST: Duration = Duration::from_secs(10);

pub(crate) async fn run(config: &ClientConfig, id: &str, forwards: Vec<LocalForward>) -> Outcome {
    // Every local port first, so a port in use fails before anything is asked of anyone.
    let mut listeners = Vec::new();
    for forward in forwards {
        let listener = TcpListener::bind(forward.bind).await.map_err(|e| {
            Stop::Error(format!(
                "Cannot listen on {} ({e}); choose another local port.",
                forward.bind
            ))
        })?;
        listeners.push((listener, forward));
    }

    let console = Arc::new(Console::stderr());
    let mut session = Session::connect(config).await.map_err(Stop::error)?;
    let welcome = session.welcome().clone();
    let who = format!("{}/{}", welcome.vendor, welcome.technician);
    console.say(format!("Connected to {} as {who}.", welcome.broker_name));

    let view = session.watch(id).await.map_err(Stop::error)?;
    check_targets(&view, &listeners)?;
    let mut interrupts =
        Interrupts::catch().map_err(|e| Stop::Error(format!("Cannot catch Ctrl-C ({e}).")))?;

    let view = wait_for_approval(&mut session, view, &console, &mut interrupts).await?;
    let now = when::now();
    let attempt = if view.state == RequestState::Active {
        console.say(format!(
            "{} is live but its connection was lost; taking it up again (approved until {}).",
            view.id,
            when::clock(view.end_at, now)
        ));
        Attempt::Resume
    } else {
        console.say(format!(
            "Approved by {} until {} ({}).",
            view.approvers.join(", "),
            when::clock(view.end_at, now),
            when::until(view.end_at, now)
        ));
        Attempt::Open
    };
    let ask = Ask {
        id: &view.id,
        end_at: view.end_at,
        who: &who,
        attempt,
    };
    let opened = open(&mut session, &ask, &console, &mut interrupts).await?;
    forward(
        config, session, opened, listeners, console, interrupts, &who,
    )
    .await
}

/// Every `-L` target must be one the request asked for; a typo is better found now than after
/// the hospital's approval and a one-time password.
fn check_targets(
    view: &RequestView,
    listeners: &[(TcpListener, LocalForward)],
) -> Result<(), Stop> {
    match listeners
        .iter()
        .find(|(_, forward)| !view.targets.contains(&forward.target))
    {
        Some((_, stray)) => Err(Stop::Error(format!(
            "{} does not cover `{}` (it asks for {}); forward only those targets, or ask for `{}` with a new `sekisho request`.",
            view.id,
            stray.target,
            view.targets.join(", "),
            stray.target
        ))),
        None => Ok(()),
    }
}

/// Follows the request until it is approved; anything else ends the command.
async fn wait_for_approval(
    session: &mut Session,
    mut view: RequestView,
    console: &Console,
    interrupts: &mut Interrupts,
) -> Result<RequestView, Stop> {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // What the last line printed off a terminal said, to print again only on a change.
    let mut shown: Option<usize> = None;
    loop {
        match view.state {
            RequestState::Requested => {}
            // A live session: its connection was lost (or another client holds it, which
            // the broker says when asked to take it up).
            RequestState::Approved | RequestState::Active => {
                console.clear_status();
                return Ok(view);
            }
            RequestState::Ended => {
                console.clear_status();
                console.say(over(&view));
                return Err(Stop::Exit(ExitCode::FAILURE));
            }
        }
        if console.is_live() || shown != Some(view.approvers.len()) {
            console.status(waiting(&view, when::now()));
            shown = Some(view.approvers.len());
        }
        tokio::select! {
            event = session.next_event() => match event {
                SessionEvent::Status(changed) => view = changed,
                SessionEvent::Lost(end) => return Err(Stop::Error(end.reason)),
                // Only a live session has these; there is none yet.
                SessionEvent::Warning { .. } | SessionEvent::Extended { .. } | SessionEvent::Ended { .. } => {}
            },
            _ = ticks.tick(), if console.is_live() => {}
            () = interrupts.next() => {
                console.clear_status();
                console.say(format!(
                    "Stopped waiting; {} still waits for the hospital's answer. Run the same command again to keep waiting.",
                    view.id
                ));
                return Err(Stop::Exit(ExitCode::FAILURE));
            }
        }
    }
}

/// `Waiting for approval of r-… (0 of 1 approvals; asked 2m10s ago)…`
fn waiting(view: &RequestView, now: u64) -> String {
    format!(
        "Waiting for approval of {} ({} of {} approvals; asked {})…",
        view.id,
        view.approvers.len(),
        view.approvals_needed,
        when::ago(view.created_at, now)
    )
}

/// What to tell the technician about a request that is over before its session opened.
fn over(view: &RequestView) -> String {
    let by = |prefix: &str| {
        if view.ended_by.is_empty() {
            String::new()
        } else {
            format!("{prefix}{}", view.ended_by)
        }
    };
    let note = if view.note.is_empty() {
        String::new()
    } else {
        format!(": {}", view.note)
    };
    let ask_again = "ask again with `sekisho request`";
    match view.end_reason.as_str() {
        "denied" => {
            let by = by(" by ");
            if note.is_empty() {
                format!("Denied{by}.")
            } else {
                format!("Denied{by}{note}")
            }
        }
        "expired" if view.end_at == 0 => format!(
            "{} expired: nobody at the hospital answered in time; {ask_again}.",
            view.id
        ),
        "expired" => format!(
            "{} reached its end time before it was opened; {ask_again}.",
            view.id
        ),
        "revoked" => format!(
            "The hospital withdrew the approval of {}{}{note}; {ask_again} if the work is still needed.",
            view.id,
            by(" by "),
        ),
        "lockdown" => format!(
            "The hospital has stopped all remote access (lockdown){note}; call the hospital before trying again."
        ),
        "technician-disabled" => {
            "Your access has been disabled by the hospital; contact the hospital's IT.".to_owned()
        }
        "" => format!("{} is over; {ask_again}.", view.id),
        reason => format!("{} is over ({reason}); {ask_again}.", view.id),
    }
}

/// What ended a wait for a one-time password.
enum Wake {
    Read(Read),
    Interrupted,
    Event(SessionEvent),
}

/// Whether a request is opened for the first time or a live session taken up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Open,
    /// The broker is asked without a code first: a policy may allow that shortly after a loss.
    Resume,
}

/// What to open, for whom, and until when it is approved.
struct Ask<'a> {
    id: &'a str,
    end_at: u64,
    who: &'a str,
    attempt: Attempt,
}

/// Asks for the one-time password until the broker accepts one.
async fn open(
    session: &mut Session,
    ask: &Ask<'_>,
    console: &Console,
    interrupts: &mut Interrupts,
) -> Result<Opened, Stop> {
    if ask.attempt == Attempt::Resume {
        match session.open(ask.id, "").await {
            Ok(opened) => return Ok(opened),
            Err(ControlError::Refused(refusal)) if refusal.code == ErrorCode::OtpRequired => {}
            Err(e) => return Err(refused(session, ask.id, e, console).await),
        }
    }
    let source = CodeSource::stdin();
    let prompt = format!("One-time password for {}: ", ask.who);
    // A read in progress is kept across wake-ups: its thread will take the next line
    // whether or not anyone still listens.
    let mut pending = None;
    loop {
        let reading = pending.get_or_insert_with(|| {
            if !source.is_terminal() {
                console.say(prompt.trim_end());
            }
            source.read(prompt.clone())
        });
        let wake = tokio::select! {
            read = reading => Wake::Read(read.unwrap_or_else(|_| Read::Failed("the reader stopped".into()))),
            () = interrupts.next() => Wake::Interrupted,
            // Off a terminal nobody may be typing, so a request that ends meanwhile ends the
            // wait. On a terminal the prompt owns the terminal until it returns.
            event = session.next_event(), if !source.is_terminal() => Wake::Event(event),
        };
        let read = match wake {
            Wake::Read(read) => {
                pending = None;
                read
            }
            Wake::Interrupted => {
                if let (Some(reading), true) = (pending.take(), source.is_terminal()) {
                    // A Ctrl-C typed at the prompt also ends the read, which puts the
                    // terminal back as it was; give it a moment to.
                    let _ = tokio::time::timeout(PROMPT_RESTORE, reading).await;
                }
                Read::Interrupted
            }
            Wake::Event(SessionEvent::Status(changed)) if changed.state == RequestState::Ended => {
                console.say(over(&changed));
                return Err(Stop::Exit(ExitCode::FAILURE));
            }
            Wake::Event(SessionEvent::Lost(end)) => return Err(Stop::Error(end.reason)),
            Wake::Event(_) => continue,
        };
        let code = match read {
            Read::Code(code) if code.is_empty() => continue,
            Read::Code(code) => code,
            Read::End => {
                return Err(Stop::Error(
                    "No one-time password was given (standard input ended); run the command again and type the code from your authenticator app.".into(),
                ));
            }
            Read::Interrupted => {
                console.say(format!(
                    "Stopped before opening; {} stays approved until {}. Run the same command again to open it.",
                    ask.id,
                    when::clock(ask.end_at, when::now())
                ));
                return Err(Stop::Exit(ExitCode::FAILURE));
            }
            Read::Failed(why) => {
                return Err(Stop::Error(format!(
                    "Cannot read the one-time password ({why})."
                )));
            }
        };
        match session.open(ask.id, &code).await {
            Ok(opened) => return Ok(opened),
            Err(ControlError::Refused(refusal)) if refusal.code == ErrorCode::OtpRejected => {
                console.say(refusal.message);
            }
            Err(e) => return Err(refused(session, ask.id, e, console).await),
        }
    }
}

/// The stop for a refused open: a request that is over is told as such (who ended it and
/// why), anything else as the broker's sentence.
async fn refused(session: &mut Session, id: &str, error: ControlError, console: &Console) -> Stop {
    if let ControlError::Refused(refusal) = &error
        && refusal.code == ErrorCode::RequestNotOpenable
        && let Ok(view) = session.watch(id).await
        && view.state == RequestState::Ended
    {
        console.say(over(&view));
        return Stop::Exit(ExitCode::FAILURE);
    }
    Stop::error(error)
}

/// Reaches the broker again after a lost connection and takes session `ask.id` up, trying
/// until its end time (backing off between attempts) or Ctrl-C.
async fn reconnect(
    config: &ClientConfig,
    ask: &Ask<'_>,
    console: &Console,
    interrupts: &mut Interrupts,
) -> Result<(Session, Opened), Stop> {
    let mut pause = RECONNECT_FIRST;
    let mut told = String::new();
    loop {
        if when::now() >= ask.end_at {
            console.clear_status();
            console.say(format!(
                "{} reached its end time before the broker could be reached again; ask for a new session if the work is not finished.",
                ask.id
            ));
            return Err(Stop::Exit(ExitCode::FAILURE));
        }
        let connected = tokio::select! {
            connected = Session::connect(config) => connected,
            () = interrupts.next() => return Err(stopped_reconnecting(ask, console)),
        };
        let why = match connected {
            Ok(mut session) => {
                console.clear_status();
                let opened = open(&mut session, ask, console, interrupts).await?;
                return Ok((session, opened));
            }
            // Worth trying again: the network or the broker may come back, and the broker
            // may still count the lost connection against this technician for a moment.
            Err(e @ (ConnectError::Unreachable { .. } | ConnectError::Connection(_))) => {
                e.to_string()
            }
            Err(ConnectError::Refused(refusal)) if refusal.code == ErrorCode::RateLimited => {
                refusal.message
            }
            Err(e) => return Err(Stop::error(e)),
        };
        if why != told {
            console.say(format!("Still reconnecting: {why}"));
            told = why;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = interrupts.next() => return Err(stopped_reconnecting(ask, console)),
        }
        pause = (pause * 2).min(RECONNECT_LONGEST);
    }
}

/// Ctrl-C while reconnecting: the session stays approved, for `sekisho connect` later.
fn stopped_reconnecting(ask: &Ask<'_>, console: &Console) -> Stop {
    console.clear_status();
    console.say(format!(
        "Stopped reconnecting; {} stays approved until {}. Run `sekisho connect {}` with your forwards to take it up again.",
        ask.id,
        when::clock(ask.end_at, when::now()),
        ask.id
    ));
    Stop::Exit(ExitCode::FAILURE)
}

/// Serves the forwards of an open session until it ends or the technician presses Ctrl-C,
/// taking it up again on a new connection whenever the connection is lost.
async fn forward(
    config: &ClientConfig,
    mut session: Session,
    opened: Opened,
    listeners: Vec<(TcpListener, LocalForward)>,
    console: Arc<Console>,
    mut interrupts: Interrupts,
    who: &str,
) -> Outcome {
    let shutdown = CancellationToken::new();
    let events: EventSink = {
        let console = console.clone();
        Arc::new(move |event| tell(&console, event))
    };
    let link = SessionLink::new(&session);
    let forwarder = link.forwarder();
    let mut serving = tokio::task::JoinSet::new();
    let mut routes = Vec::new();
    for (listener, forward) in listeners {
        let local = listener.local_addr().map_err(Stop::error)?;
        routes.push(format!("{local} -> {}", forward.target));
        serving.spawn(serve_local_forward(
            forwarder.clone(),
            listener,
            forward.target,
            events.clone(),
            shutdown.clone(),
        ));
    }
    let mut end_at = opened.end_at;
    let now = when::now();
    let open = format!(
        "Session open until {} ({})",
        when::clock(end_at, now),
        when::until(end_at, now)
    );
    match routes.as_slice() {
        [route] => console.say(format!("{open}; forwarding {route}")),
        routes => {
            console.say(format!("{open}; forwarding:"));
            for route in routes {
                console.say(format!("  {route}"));
            }
        }
    }
    console.say("Press Ctrl-C to end the session.");

    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut interrupted = false;
    let code = loop {
        if console.is_live() {
            let left = end_at.saturating_sub(when::now());
            console.status(format!("Time left {}", when::countdown(left)));
        }
        tokio::select! {
            event = session.next_event() => match event {
                SessionEvent::Warning { seconds_left } => console.say(warning(seconds_left)),
                SessionEvent::Extended { end_at: new_end, by } => {
                    end_at = new_end;
                    let by = if by.is_empty() { String::new() } else { format!(" (by {by})") };
                    console.say(format!(
                        "The hospital moved the end to {}{by}.",
                        when::clock(new_end, when::now())
                    ));
                }
                SessionEvent::Ended { reason, message } => {
                    console.clear_status();
                    console.say(message);
                    break if reason == "expired" { ExitCode::SUCCESS } else { ExitCode::FAILURE };
                }
                SessionEvent::Lost(end) if end.by_technician => {
                    console.clear_status();
                    console.say(end.reason);
                    break ExitCode::SUCCESS;
                }
                SessionEvent::Lost(end) => {
                    link.detach();
                    console.clear_status();
                    console.say(format!(
                        "{} Reconnecting; the local ports stay open and new connections to them wait for the session.",
                        end.reason
                    ));
                    let ask = Ask { id: &opened.request_id, end_at, who, attempt: Attempt::Resume };
                    match reconnect(config, &ask, &console, &mut interrupts).await {
                        Ok((resumed, reopened)) => {
                            session = resumed;
                            link.attach(&session);
                            end_at = reopened.end_at;
                            console.say(format!(
                                "Session taken up again until {}.",
                                when::clock(end_at, when::now())
                            ));
                        }
                        Err(stop) => {
                            shutdown.cancel();
                            while serving.join_next().await.is_some() {}
                            return Err(stop);
                        }
                    }
                }
                // The request's own changes are the session's now; nothing to show.
                SessionEvent::Status(_) => {}
            },
            _ = ticks.tick(), if console.is_live() => {}
            () = interrupts.next() => {
                interrupted = true;
                break ExitCode::SUCCESS;
            }
        }
    };
    console.clear_status();
    shutdown.cancel();
    while serving.join_next().await.is_some() {}
    session.close().await;
    if interrupted {
        console.say("Session closed.");
    }
    Ok(code)
}

/// `The session ends in 10 minutes.`
fn warning(seconds_left: u32) -> String {
    let minutes = (seconds_left + 30) / 60;
    match (seconds_left, minutes) {
        (0..=59, _) => format!(
            "The session ends in {seconds_left} second{}.",
            if seconds_left == 1 { "" } else { "s" }
        ),
        (_, 1) => "The session ends in 1 minute.".to_owned(),
        _ => format!("The session ends in {minutes} minutes."),
    }
}

/// Shows what happened on a forward: refusals and cut connections; the rest is quiet.
fn tell(console: &Console, event: ForwardEvent) {
    match event {
        ForwardEvent::Opened { .. } => {}
        ForwardEvent::Failed { target, error } => console.say(format!("{target}: {error}")),
        ForwardEvent::Closed { target, outcome } => {
            if let SpliceEnd::TcpFailed(reason) | SpliceEnd::QuicFailed(reason) = outcome.end {
                console.say(format!(
                    "{target}: a forwarded connection was cut ({reason})."
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(reason: &str) -> RequestView {
        RequestView {
            id: "r-abc".into(),
            state: RequestState::Ended,
            targets: vec!["ehr-db".into()],
            purpose: "patch".into(),
            ticket: String::new(),
            wanted_secs: 3600,
            created_at: 1_000,
            answer_by: 2_800,
            approvers: Vec::new(),
            approvals_needed: 1,
            end_at: 0,
            ended_at: 0,
            end_reason: reason.into(),
            ended_by: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn a_denial_names_the_approver_and_the_reason() {
        let view = RequestView {
            ended_by: "suzuki".into(),
            note: "not during surgery".into(),
            ..ended("denied")
        };
        assert_eq!(over(&view), "Denied by suzuki: not during surgery");
        assert_eq!(over(&ended("denied")), "Denied.");
    }

    #[test]
    fn other_ends_say_what_to_do_next() {
        assert!(over(&ended("expired")).contains("nobody at the hospital answered in time"));
        let withdrawn = RequestView {
            ended_by: "suzuki".into(),
            end_at: 5_000,
            ..ended("revoked")
        };
        assert_eq!(
            over(&withdrawn),
            "The hospital withdrew the approval of r-abc by suzuki; ask again with `sekisho request` if the work is still needed."
        );
        assert!(over(&ended("closed")).contains("is over (closed)"));
    }

    #[test]
    fn warnings_round_to_minutes() {
        assert_eq!(warning(600), "The session ends in 10 minutes.");
        assert_eq!(warning(599), "The session ends in 10 minutes.");
        assert_eq!(warning(120), "The session ends in 2 minutes.");
        assert_eq!(warning(61), "The session ends in 1 minute.");
        assert_eq!(warning(30), "The session ends in 30 seconds.");
        assert_eq!(warning(1), "The session ends in 1 second.");
    }

    #[test]
    fn the_waiting_line_counts_approvals_and_time() {
        let view = RequestView {
            state: RequestState::Requested,
            ..ended("")
        };
        assert_eq!(
            waiting(&view, 1_130),
            "Waiting for approval of r-abc (0 of 1 approvals; asked 2m10s ago)…"
        );
    }
}
