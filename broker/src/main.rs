//! `sekisho-broker`: the hospital's command line. Parses arguments, calls the library
//! (`sekisho_broker::cli` holds the commands), prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sekisho_broker::approval::Desk;
use sekisho_broker::audit::Actor;
use sekisho_broker::cli::{self, CommandClock};
use sekisho_broker::staff::{Duty, StaffDirectory};
use sekisho_broker::store::StoreLocation;
use sekisho_broker::{Broker, BrokerConfig, DEFAULT_PORT, Hospital};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sekisho-broker",
    version,
    about = "The hospital's remote-maintenance access broker"
)]
struct Cli {
    /// Where the broker keeps its CA, keys and state.
    #[arg(
        long,
        global = true,
        default_value = "sekisho-data",
        env = "SEKISHO_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// The directory with hospital.toml and vendors/*.toml.
    #[arg(
        long,
        global = true,
        default_value = "policies",
        env = "SEKISHO_POLICIES"
    )]
    policies: PathBuf,
    /// The database: postgres://user@host:port/db, or a SQLite file path [default:
    /// DATA_DIR/sekisho.db].
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "SEKISHO_DATABASE",
        hide_env_values = true
    )]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (creates the data directory and CA on first start).
    Serve {
        /// The UDP address technicians connect to.
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
        listen: SocketAddr,
        /// Also offer TLS over TCP here, for technicians whose network passes no UDP (port 0:
        /// the --listen port's number, so technicians need one HOST:PORT for both).
        #[arg(long, value_name = "ADDR", env = "SEKISHO_LISTEN_TCP")]
        listen_tcp: Option<SocketAddr>,
        /// Also append every audit event, as one JSON line, to this file for a SIEM to follow.
        #[arg(long, value_name = "FILE", env = "SEKISHO_AUDIT_STREAM")]
        audit_stream: Option<PathBuf>,
        /// Also send every audit event to this syslog collector (SIEM) as an RFC 5424 message
        /// whose text is the same JSON line: tls://HOST:PORT (RFC 5425) or tcp://HOST:PORT
        /// (plain; this host or a trusted management network). UDP is refused: it loses events
        /// silently.
        #[arg(long, value_name = "URL", env = "SEKISHO_AUDIT_SYSLOG")]
        audit_syslog: Option<String>,
        /// The CA certificate(s) (PEM) that issued the collector's certificate, trusted with
        /// the broker's own CA instead of the system's roots (tls:// only).
        #[arg(
            long,
            value_name = "FILE",
            env = "SEKISHO_AUDIT_SYSLOG_CA",
            requires = "audit_syslog"
        )]
        audit_syslog_ca: Option<PathBuf>,
        /// Threads carrying tunnels, each with its own socket on the listening port [default:
        /// one per core].
        #[arg(long, value_name = "N", env = "SEKISHO_DATA_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
        data_threads: Option<u16>,
        /// The largest QUIC packets to accept and probe for, in bytes: 1452 fits every
        /// Ethernet path; raise it (8952) only where technicians' paths carry jumbo frames.
        #[arg(
            long,
            value_name = "BYTES",
            env = "SEKISHO_MAX_PACKET_SIZE",
            default_value_t = tunnel::udp::PacketSize::ETHERNET
        )]
        max_packet_size: tunnel::udp::PacketSize,
        /// The congestion controller the broker's QUIC connections send with (what flows to
        /// technicians): cubic, bbr or newreno. `sekisho-bench wan` compares them.
        #[arg(
            long,
            value_name = "CONTROLLER",
            env = "SEKISHO_QUIC_CONGESTION",
            default_value_t = tunnel::udp::Congestion::default()
        )]
        quic_congestion: tunnel::udp::Congestion,
        /// Connections one technician may hold at once (each `sekisho connect` or `sekisho
        /// status` is one); more are refused with a sentence saying so.
        #[arg(
            long,
            value_name = "N",
            env = "SEKISHO_MAX_CONNECTIONS_PER_TECHNICIAN",
            default_value_t = 4,
            value_parser = clap::value_parser!(u16).range(1..)
        )]
        max_connections_per_technician: u16,
        /// Requests one technician may make per minute (refused ones do not count).
        #[arg(
            long,
            value_name = "N",
            env = "SEKISHO_REQUESTS_PER_MINUTE",
            default_value_t = 10,
            value_parser = clap::value_parser!(u32).range(1..)
        )]
        requests_per_minute: u32,
        #[command(flatten)]
        web: WebArgs,
    },
    /// Check or show policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Technicians' requests: list, approve, deny.
    Request {
        #[command(subcommand)]
        command: RequestCommand,
    },
    /// Live sessions: list, revoke, move the end time.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// The emergency stop: cut every session and refuse new ones.
    Lockdown {
        #[command(subcommand)]
        command: LockdownCommand,
    },
    /// Technicians: add (prints their enrollment command), list, disable, enable, unlock,
    /// reset.
    Technician {
        #[command(subcommand)]
        command: TechnicianCommand,
    },
    /// The audit log: prove it untouched, read it, export it, review ended sessions.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Vendors: take one on (it needs a policy file), list, disable, enable.
    Vendor {
        #[command(subcommand)]
        command: VendorCommand,
    },
    /// Staff accounts of the web UI: list, one-time links to create or reset one, disable,
    /// enable (for when no admin can log in).
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// The hospital's brokers at a glance: lockdown, requests and live sessions, the audit
    /// log's head, who sends the webhook and the audit syslog, and each broker's clock. Exits
    /// 1 when a sender has stopped or fallen behind, a running broker's clock is not
    /// synchronised, or a clock was stepped in the last 24 hours (for monitoring).
    Status,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check every policy file without starting the broker; prints each problem as file:line: reason.
    Check {
        /// The policies directory (defaults to --policies).
        dir: Option<PathBuf>,
    },
    /// Print the responsibility document (matrix and enforced controls) per vendor, in
    /// Japanese and English, to attach to the maintenance contract.
    Render {
        /// Only this vendor (default: every vendor).
        #[arg(long)]
        vendor: Option<String>,
        /// Markdown, or one self-contained HTML page that prints cleanly.
        #[arg(long, value_enum, default_value_t = RenderFormat::Md)]
        format: RenderFormat,
        /// The policies directory (defaults to --policies).
        dir: Option<PathBuf>,
    },
    /// Check the policies, then have every running broker on the database reload its own
    /// (a broker also reloads on SIGHUP). A policy that fails the check is not applied.
    Reload {
        #[command(flatten)]
        staff: StaffArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderFormat {
    /// Markdown.
    Md,
    /// HTML with print styles.
    Html,
}

#[derive(Subcommand)]
enum RequestCommand {
    /// Requests waiting for an answer, approved or live.
    List {
        /// Also requests that ended (newest first, at most 100).
        #[arg(long)]
        all: bool,
    },
    /// Approve a request until an end time.
    Approve {
        /// The request id (r-…).
        id: String,
        #[command(flatten)]
        end: EndArgs,
        /// Why you approve, on the record (the hospital's policy may require it).
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Deny a request, telling the technician why.
    Deny {
        /// The request id (r-…).
        id: String,
        /// Why; the technician is told.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Live sessions, with their end time and time left.
    List,
    /// End a live session now (or withdraw an approval not yet used).
    Revoke {
        /// The request id (r-…).
        id: String,
        /// Why; the technician is told.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Move a live session's end time (--for adds to the current end).
    Extend {
        /// The request id (r-…).
        id: String,
        #[command(flatten)]
        end: EndArgs,
        /// Why, on the record (the hospital's policy may require it).
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        staff: StaffArg,
    },
}

#[derive(Subcommand)]
enum LockdownCommand {
    /// Stop all remote access now: every live session is cut, no new ones start.
    On {
        /// Why; recorded and shown to technicians.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Allow remote access again.
    Off {
        /// Why (optional; recorded).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Whether remote access is stopped, since when and by whom.
    Status,
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Take on a vendor that has a policy file (policies/vendors/VENDOR.toml).
    Add {
        /// The vendor id, as its policy file names it.
        vendor: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Every vendor with a policy file or a record, and whether it is enabled.
    List,
    /// Refuse every technician of the vendor and end their sessions now.
    Disable {
        /// The vendor id.
        vendor: String,
        /// Why; recorded and shown to the vendor's technicians.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Let the vendor's technicians connect again.
    Enable {
        /// The vendor id.
        vendor: String,
        #[command(flatten)]
        staff: StaffArg,
    },
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Every account, its roles, and whether it is locked or disabled.
    List,
    /// A one-time link (24 hours) that creates the account, or resets it: a new password and
    /// one-time-password secret, and the lockout lifted.
    Invite {
        /// The account's name (the name every action is recorded under).
        #[arg(value_name = "NAME")]
        account: String,
        /// approver, admin or auditor (repeat, or separate with commas).
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// The web UI's address as staff reach it, e.g. https://broker.hospital.local:8443.
        #[arg(long, value_name = "URL", env = "SEKISHO_WEB_URL")]
        web_url: Option<String>,
        #[command(flatten)]
        staff: StaffAdminArg,
    },
    /// End the account's browser sessions and refuse its logins.
    Disable {
        /// The account's name.
        #[arg(value_name = "NAME")]
        account: String,
        #[command(flatten)]
        staff: StaffAdminArg,
    },
    /// Let a disabled account log in again.
    Enable {
        /// The account's name.
        #[arg(value_name = "NAME")]
        account: String,
        #[command(flatten)]
        staff: StaffAdminArg,
    },
}

/// Where technicians reach the broker and how long a token works, for the printed command.
#[derive(Args)]
struct EnrollmentArgs {
    /// HOST:PORT technicians reach this broker at, printed in their enrollment command.
    #[arg(long, value_name = "HOST:PORT", env = "SEKISHO_PUBLIC_ADDRESS")]
    broker_address: Option<String>,
    /// How long the enrollment token works: 24h (default), 2d, 30m; at most 7 days.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    valid_for: String,
}

#[derive(Subcommand)]
enum TechnicianCommand {
    /// Add a technician of a vendor and print the one-time enrollment command for them.
    Add {
        /// The vendor id.
        vendor: String,
        /// The technician's id: lowercase letters, digits, '.', '_' or '-'.
        technician: String,
        /// Their full name, as on their ID.
        #[arg(long = "name", id = "full_name", value_name = "TEXT")]
        full_name: String,
        /// How to reach them.
        #[arg(long, value_name = "ADDRESS", default_value = "")]
        email: String,
        #[command(flatten)]
        enrollment: EnrollmentArgs,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Every technician: enrolled or not, disabled, locked, certificate expiry.
    List,
    /// Refuse the technician at their next connection and end their sessions now.
    Disable {
        /// The vendor id.
        vendor: String,
        /// The technician id.
        technician: String,
        /// Why; recorded and shown to the technician.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Let a disabled technician connect again.
    Enable {
        /// The vendor id.
        vendor: String,
        /// The technician id.
        technician: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Unlock a technician locked after too many wrong one-time passwords.
    Unlock {
        /// The vendor id.
        vendor: String,
        /// The technician id.
        technician: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Revoke the technician's certificate and one-time-password secret, end their sessions,
    /// and print a new enrollment command (a lost phone or laptop, a leaked secret).
    Reset {
        /// The vendor id.
        vendor: String,
        /// The technician id.
        technician: String,
        #[command(flatten)]
        enrollment: EnrollmentArgs,
        #[command(flatten)]
        staff: StaffArg,
    },
}

/// Signed checkpoints `audit verify` checks the chain against, besides the database's and the
/// data directory's checkpoint file.
#[derive(Args)]
struct CheckpointArgs {
    /// A file holding signed checkpoints: a copy of a broker's audit-checkpoints.jsonl, the
    /// SIEM's JSON-lines stream or a syslog capture (repeat for several).
    #[arg(long = "checkpoints", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Also trust checkpoints signed by this key (sha256:…, as `status` shows it; repeat for
    /// several): another broker's, or the hospital's key when checking an export elsewhere.
    #[arg(long, value_name = "FINGERPRINT")]
    trust_key: Vec<String>,
}

impl CheckpointArgs {
    fn sources(self, data_dir: &std::path::Path) -> cli::CheckpointSources {
        cli::CheckpointSources {
            data_dir: Some(data_dir.to_owned()),
            files: self.files,
            trust: self.trust_key,
        }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// How many events, and the last one's hash: write it down or send it elsewhere, and
    /// `audit verify --expect-head` later proves nothing was cut off the end.
    Head,
    /// Check that no event was edited, deleted, inserted or reordered.
    Verify {
        /// A head printed by `audit head` earlier: it must still be in the chain.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// Check a JSON Lines export on its own, without the database.
        #[arg(long, value_name = "EXPORT.jsonl")]
        file: Option<PathBuf>,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
    },
    /// Events as a table, oldest first (the newest 200 unless --limit says otherwise).
    List {
        #[command(flatten)]
        filter: EventFilterArgs,
    },
    /// One session's whole story, event by event, with a summary and its reviews.
    Show {
        /// The session's request id (r-…).
        session: String,
    },
    /// Write events as JSON Lines or CSV, to a file or standard output; the export is
    /// itself recorded in the audit log.
    Export {
        /// jsonl (checkable with `audit verify --file`) or csv.
        #[arg(long, value_enum)]
        format: FormatArg,
        #[command(flatten)]
        filter: EventFilterArgs,
        /// The file to write (readable by its owner only) [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Mark an ended session reviewed, with what you checked.
    Review {
        /// The session's request id (r-…).
        session: String,
        /// What you checked; kept with the review.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        staff: StaffArg,
    },
    /// Ended sessions nobody has reviewed yet, oldest first, with the overdue ones marked.
    Unreviewed {
        /// How long after its end a session may wait for review: 3d, 1d12h, 72h, 90m
        /// (default: the hospital's `review_within`, 3 days unless hospital.toml says otherwise).
        #[arg(long, value_name = "DURATION")]
        within: Option<String>,
    },
}

#[derive(Args)]
struct EventFilterArgs {
    /// Events at or after: YYYY-MM-DD, "YYYY-MM-DD HH:MM" (hospital time zone) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Events before: same forms; a date alone takes in that whole day.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this vendor's events.
    #[arg(long, value_name = "VENDOR")]
    vendor: Option<String>,
    /// Only this technician's events (TECHNICIAN or VENDOR/TECHNICIAN).
    #[arg(long, value_name = "TECHNICIAN")]
    technician: Option<String>,
    /// Only events about this target.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Only events of this session (request id r-…).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Only events of this kind (repeat, or separate with commas).
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Only the newest N matching events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

impl EventFilterArgs {
    fn query(self) -> cli::EventQuery {
        cli::EventQuery {
            since: self.since,
            until: self.until,
            vendor: self.vendor,
            technician: self.technician,
            target: self.target,
            session: self.session,
            kinds: self.kinds,
            limit: self.limit,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// JSON Lines: one event per line, with its hashes.
    Jsonl,
    /// CSV with a header row (RFC 4180).
    Csv,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct EndArgs {
    /// How long: 30m, 1h30m, 2h (approve: from now; extend: added to the current end).
    #[arg(long = "for", value_name = "DURATION")]
    for_duration: Option<String>,
    /// The end time, in the hospital's time zone: HH:MM (today), "YYYY-MM-DD HH:MM", or RFC
    /// 3339 with an offset.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

/// Who acts: a staff account, proven with a current code from its own authenticator.
#[derive(Args)]
struct StaffArg {
    /// Your staff account (the web UI's); you are asked for a current one-time code from its
    /// authenticator, and the action is recorded under it.
    #[arg(long = "as", visible_alias = "by", value_name = "STAFF")]
    name: Option<String>,
    /// Read the one-time code as one line from standard input instead of asking on the
    /// terminal (for scripts).
    #[arg(long)]
    code_stdin: bool,
}

/// Who acts on staff accounts: an admin, or the host's administrator when no admin can log in.
#[derive(Args)]
struct StaffAdminArg {
    #[command(flatten)]
    staff: StaffArg,
    /// No admin can log in: act as this host's operating-system administrator instead,
    /// recorded as `host:USER` (the OS account running the command), never as a staff name.
    #[arg(long, conflicts_with_all = ["name", "code_stdin"])]
    host_admin: bool,
}

/// What is logged when `SEKISHO_LOG` is not set: information, but not PostgreSQL's notices,
/// which say on every start that the migrations table "already exists, skipping" (a warning
/// or worse from PostgreSQL still shows).
const DEFAULT_LOG: &str = "info,sqlx::postgres::notice=warn";

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho-broker: {}", one_message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Help and version are printed as asked; a mistake in the arguments is one sentence and
/// exit code 1, like every other failure.
fn argument_error(error: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            std::process::ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            std::process::ExitCode::FAILURE
        }
        _ => {
            // The first paragraph says what is wrong (its indented lines belong to it); a
            // "tip:" paragraph may follow the usage.
            let text = error.render().to_string();
            let mut paragraphs = text.split("\n\n").map(|paragraph| {
                paragraph
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let first = paragraphs.next().unwrap_or_default();
            let mut sentence = first.strip_prefix("error: ").unwrap_or(&first).to_owned();
            for tip in paragraphs.filter(|paragraph| paragraph.starts_with("tip: ")) {
                sentence.push_str("; ");
                sentence.push_str(&tip);
            }
            eprintln!("sekisho-broker: {sentence}; see --help.");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message already holds
/// (many errors here print their source in their own message).
fn one_message(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = BrokerConfig {
        database: cli.database.as_deref().map(StoreLocation::parse),
        ..BrokerConfig::new(cli.data_dir, cli.policies)
    };
    let now = SystemTime::now();
    let output = match cli.command {
        Command::Serve {
            listen,
            listen_tcp,
            audit_stream,
            audit_syslog,
            audit_syslog_ca,
            data_threads,
            max_packet_size,
            quic_congestion,
            max_connections_per_technician,
            requests_per_minute,
            web,
        } => {
            let limits = sekisho_broker::Limits {
                max_connections_per_technician: usize::from(max_connections_per_technician),
                requests_per_minute,
                ..config.limits.clone()
            };
            return serve(BrokerConfig {
                listen,
                listen_tcp,
                audit_stream,
                audit_syslog: audit_syslog.map(|url| sekisho_broker::audit::syslog::SyslogConfig {
                    url,
                    ca_file: audit_syslog_ca,
                }),
                data_threads: data_threads.map_or(config.data_threads, usize::from),
                max_packet: max_packet_size,
                congestion: quic_congestion,
                limits,
                webhook: web.webhook(),
                web: web.resolve()?,
                ..config
            })
            .await;
        }
        Command::Policy { command } => match policy(&config, command, now).await {
            Ok(text) if text.ends_with('\n') => {
                print!("{text}");
                return Ok(());
            }
            Ok(text) => text,
            Err(cli::CliError::Policy { dir, errors }) => {
                println!("{errors}");
                bail!("{} problem(s) in {}", errors.0.len(), dir.display())
            }
            Err(e) => return Err(e.into()),
        },
        Command::Vendor { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = vendor(&desk, &staff_dir, command).await;
            desk.store().close().await;
            result?
        }
        Command::Staff { command } => {
            cli::expect_existing_database(&config)?;
            let hospital = Hospital::open(&config).await?;
            let directory = staff_directory(&hospital, now);
            let result = staff(&directory, command).await;
            hospital.store.close().await;
            result?
        }
        Command::Request { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = request(&desk, &staff_dir, command, now).await;
            desk.store().close().await;
            result?
        }
        Command::Session { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = session(&desk, &staff_dir, command, now).await;
            desk.store().close().await;
            result?
        }
        Command::Lockdown { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = lockdown(&desk, &staff_dir, command).await;
            desk.store().close().await;
            result?
        }
        Command::Technician { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = technician(&desk, &staff_dir, &config, command).await;
            desk.store().close().await;
            result?
        }
        Command::Status => {
            let (desk, _) = open_desk(&config, now).await?;
            let result = cli::status_in(&desk, now, &config.data_dir).await;
            desk.store().close().await;
            let status = result?;
            println!("{}", status.text);
            match status.problems.len() {
                0 => return Ok(()),
                1 => bail!("1 problem; see PROBLEM above"),
                n => bail!("{n} problems; see PROBLEM above"),
            }
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    expect_head,
                    file: Some(file),
                    checkpoints,
                },
        } => cli::audit_verify_file(
            &file,
            expect_head.as_deref(),
            &checkpoints.sources(&config.data_dir),
        )?,
        Command::Audit { command } => {
            let (desk, staff_dir) = open_desk(&config, now).await?;
            let result = audit(&desk, &staff_dir, command, &config.data_dir).await;
            desk.store().close().await;
            match result? {
                Printed::Line(text) => text,
                Printed::Raw(export) => {
                    print!("{export}");
                    return Ok(());
                }
            }
        }
    };
    println!("{output}");
    Ok(())
}

async fn request(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    command: RequestCommand,
    now: SystemTime,
) -> Result<String, cli::CliError> {
    match command {
        RequestCommand::List { all } => cli::request_list(desk, all, now).await,
        RequestCommand::Approve {
            id,
            end,
            comment,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Decide).await?;
            let until = end.until(desk, now)?;
            cli::request_approve(desk, &id, until, &comment, &staff).await
        }
        RequestCommand::Deny { id, reason, staff } => {
            let staff = operator(staff_dir, &staff, Duty::Decide).await?;
            cli::request_deny(desk, &id, &reason, &staff).await
        }
    }
}

async fn session(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    command: SessionCommand,
    now: SystemTime,
) -> Result<String, cli::CliError> {
    match command {
        SessionCommand::List => cli::session_list(desk, now).await,
        SessionCommand::Revoke { id, reason, staff } => {
            let staff = operator(staff_dir, &staff, Duty::Decide).await?;
            cli::session_revoke(desk, &id, &reason, &staff).await
        }
        SessionCommand::Extend {
            id,
            end,
            comment,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Decide).await?;
            let until = end.until(desk, now)?;
            cli::session_extend(desk, &id, until, &comment, &staff, now).await
        }
    }
}

async fn lockdown(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    command: LockdownCommand,
) -> Result<String, cli::CliError> {
    match command {
        LockdownCommand::On { reason, staff } => {
            let staff = operator(staff_dir, &staff, Duty::LockdownOn).await?;
            cli::lockdown_on(desk, &reason, &staff).await
        }
        LockdownCommand::Off { reason, staff } => {
            let staff = operator(staff_dir, &staff, Duty::LockdownLift).await?;
            cli::lockdown_off(desk, &reason, &staff).await
        }
        LockdownCommand::Status => cli::lockdown_status(desk).await,
    }
}

async fn staff(
    directory: &sekisho_broker::staff::StaffDirectory,
    command: StaffCommand,
) -> Result<String, cli::CliError> {
    match command {
        StaffCommand::List => cli::staff_list(directory).await,
        StaffCommand::Invite {
            account,
            roles,
            web_url,
            staff,
        } => {
            let by = staff_admin(directory, &staff).await?;
            cli::staff_invite(directory, &account, &roles, web_url.as_deref(), &by).await
        }
        StaffCommand::Disable { account, staff } => {
            let by = staff_admin(directory, &staff).await?;
            cli::staff_set_disabled(directory, &account, true, &by).await
        }
        StaffCommand::Enable { account, staff } => {
            let by = staff_admin(directory, &staff).await?;
            cli::staff_set_disabled(directory, &account, false, &by).await
        }
    }
}

async fn vendor(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    command: VendorCommand,
) -> Result<String, cli::CliError> {
    match command {
        VendorCommand::Add { vendor, staff } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::vendor_add(desk, &vendor, &staff).await
        }
        VendorCommand::List => cli::vendor_list(desk).await,
        VendorCommand::Disable {
            vendor,
            reason,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::vendor_set_enabled(desk, &vendor, false, &reason, &staff).await
        }
        VendorCommand::Enable { vendor, staff } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::vendor_set_enabled(desk, &vendor, true, "", &staff).await
        }
    }
}

impl EnrollmentArgs {
    /// The token's validity and what the printed command says about this broker.
    fn resolve(
        &self,
        config: &BrokerConfig,
    ) -> Result<(std::time::Duration, cli::EnrollmentHints), cli::CliError> {
        let valid_for = cli::parse_duration(self.valid_for.trim())
            .filter(|duration| !duration.is_zero())
            .ok_or_else(|| {
                cli::CliError::Input(format!(
                    "--valid-for `{}` is not a duration; write it like 24h, 2d or 30m.",
                    cli::clean(&self.valid_for)
                ))
            })?;
        let pki = sekisho_broker::pki::BrokerPki::load_or_create(&config.data_dir)?;
        Ok((
            valid_for,
            cli::EnrollmentHints {
                broker_address: self.broker_address.clone(),
                ca_fingerprint: pki.ca_fingerprint(),
            },
        ))
    }
}

async fn technician(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    config: &BrokerConfig,
    command: TechnicianCommand,
) -> Result<String, cli::CliError> {
    match command {
        TechnicianCommand::Add {
            vendor,
            technician,
            full_name,
            email,
            enrollment,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            let (valid_for, hints) = enrollment.resolve(config)?;
            let add = cli::TechnicianToAdd {
                vendor,
                technician,
                display_name: full_name,
                email,
                valid_for,
            };
            cli::technician_add(desk, &add, &hints, &staff).await
        }
        TechnicianCommand::List => cli::technician_list(desk).await,
        TechnicianCommand::Disable {
            vendor,
            technician,
            reason,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::technician_set_enabled(desk, &vendor, &technician, false, &reason, &staff).await
        }
        TechnicianCommand::Enable {
            vendor,
            technician,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::technician_set_enabled(desk, &vendor, &technician, true, "", &staff).await
        }
        TechnicianCommand::Unlock {
            vendor,
            technician,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            cli::technician_unlock(desk, &vendor, &technician, &staff).await
        }
        TechnicianCommand::Reset {
            vendor,
            technician,
            enrollment,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Identities).await?;
            let (valid_for, hints) = enrollment.resolve(config)?;
            cli::technician_reset(desk, &vendor, &technician, valid_for, &hints, &staff).await
        }
    }
}

/// What an audit command prints: a sentence or a table, or an export exactly as it is.
enum Printed {
    Line(String),
    Raw(String),
}

async fn audit(
    desk: &Desk,
    staff_dir: &StaffDirectory,
    command: AuditCommand,
    data_dir: &std::path::Path,
) -> Result<Printed, cli::AuditError> {
    let text = match command {
        AuditCommand::Head => cli::audit_head(desk).await?,
        // `run` checks an export file without opening the database.
        AuditCommand::Verify {
            expect_head,
            file,
            checkpoints,
        } => {
            let sources = checkpoints.sources(data_dir);
            match file {
                Some(file) => cli::audit_verify_file(&file, expect_head.as_deref(), &sources)?,
                None => cli::audit_verify(desk, expect_head.as_deref(), &sources).await?,
            }
        }
        AuditCommand::List { filter } => cli::audit_list(desk, &filter.query()).await?,
        AuditCommand::Show { session } => cli::audit_show(desk, &session).await?,
        AuditCommand::Export {
            format,
            filter,
            out,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Audit).await?;
            let request = cli::ExportRequest {
                format: match format {
                    FormatArg::Jsonl => cli::ExportFormat::JsonLines,
                    FormatArg::Csv => cli::ExportFormat::Csv,
                },
                query: filter.query(),
                out,
            };
            return Ok(match cli::audit_export(desk, &request, &staff).await? {
                cli::Exported::ToFile(sentence) => Printed::Line(sentence),
                cli::Exported::ToStdout(export) => Printed::Raw(export),
            });
        }
        AuditCommand::Review {
            session,
            comment,
            staff,
        } => {
            let staff = operator(staff_dir, &staff, Duty::Audit).await?;
            cli::audit_review(desk, &session, &comment, &staff).await?
        }
        AuditCommand::Unreviewed { within } => {
            let within = match within {
                Some(within) => cli::parse_within(&within)?,
                None => desk.policies().hospital().review_within,
            };
            cli::audit_unreviewed(desk, within).await?
        }
    };
    Ok(Printed::Line(text))
}

impl EndArgs {
    fn until(
        &self,
        desk: &Desk,
        now: SystemTime,
    ) -> Result<sekisho_broker::approval::Until, cli::CliError> {
        cli::end_time(
            self.for_duration.as_deref(),
            self.until.as_deref(),
            desk.zone(),
            now,
        )
    }
}

async fn policy(
    config: &BrokerConfig,
    command: PolicyCommand,
    now: SystemTime,
) -> Result<String, cli::CliError> {
    match command {
        PolicyCommand::Check { dir } => {
            cli::policy_check(dir.as_deref().unwrap_or(&config.policies_dir))
        }
        PolicyCommand::Render {
            vendor,
            format,
            dir,
        } => {
            let format = match format {
                RenderFormat::Md => sekisho_broker::policy::render::Format::Markdown,
                RenderFormat::Html => sekisho_broker::policy::render::Format::Html,
            };
            cli::policy_render(
                dir.as_deref().unwrap_or(&config.policies_dir),
                vendor.as_deref(),
                format,
                sekisho_broker::audit::checkpoint::fingerprint_in(&config.data_dir).as_deref(),
            )
        }
        PolicyCommand::Reload { staff } => {
            // Problems in the policies are listed before anyone is asked for a code.
            cli::policy_check(&config.policies_dir)?;
            cli::expect_existing_database(config)?;
            let hospital = Hospital::open(config).await?;
            let staff_dir = staff_directory(&hospital, now);
            let by = operator(&staff_dir, &staff, Duty::Policy).await;
            hospital.store.close().await;
            cli::policy_reload(config, &by?, now).await
        }
    }
}

/// The hospital's desk and staff accounts over an existing database, with the time the
/// command started.
async fn open_desk(
    config: &BrokerConfig,
    now: SystemTime,
) -> Result<(Desk, StaffDirectory), cli::CliError> {
    cli::expect_existing_database(config)?;
    let hospital = Hospital::open(config).await?;
    let staff = staff_directory(&hospital, now);
    Ok((hospital.desk(Arc::new(CommandClock(now))), staff))
}

/// The staff accounts, with the hospital's lockout and `[staff]` rules.
fn staff_directory(hospital: &Hospital, now: SystemTime) -> StaffDirectory {
    let lockout = hospital.policies.hospital().defaults.staff_lockout;
    let rules = hospital.policies.hospital().staff.clone();
    StaffDirectory::new(
        hospital.store.clone(),
        hospital.sealing_key.clone(),
        Arc::new(CommandClock(now)),
        &hospital.policies.hospital().name,
        sekisho_broker::staff::DEFAULT_IDLE_TIMEOUT,
    )
    .with_lockout(move || lockout)
    .with_rules(move || rules.clone())
}

/// The staff member `--as` names, authenticated with their own one-time code for `duty`;
/// their canonical name.
async fn operator(
    staff: &StaffDirectory,
    arg: &StaffArg,
    duty: Duty,
) -> Result<String, cli::CliError> {
    cli::authenticate(staff, arg.name.as_deref(), arg.code_stdin, duty).await
}

/// Who acts on staff accounts: an admin with their code, or the host's administrator.
async fn staff_admin(staff: &StaffDirectory, arg: &StaffAdminArg) -> Result<Actor, cli::CliError> {
    if arg.host_admin {
        return Ok(cli::host_admin());
    }
    operator(staff, &arg.staff, Duty::Staff)
        .await
        .map(Actor::Staff)
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    // Behind a reverse proxy (plain HTTP on loopback) the proxy is what opens it to the LAN.
    let behind_proxy = config
        .web
        .as_ref()
        .is_some_and(|web| web.tls == sekisho_broker::web::WebTls::PlainHttpOnLoopback);
    let broker = Broker::bind(config).await?;
    // Watch for the stop signals before saying that the broker listens: a SIGTERM that
    // follows at once must stop it cleanly, not kill it.
    let stop = StopSignals::install()?;
    match broker.local_tcp_addr() {
        Some(tcp) => eprintln!(
            "sekisho-broker for {} listening on UDP {} (QUIC) and TCP {} (TLS)",
            broker.policies().hospital().name,
            broker.local_addr(),
            tcp
        ),
        None => eprintln!(
            "sekisho-broker for {} listening on UDP {}",
            broker.policies().hospital().name,
            broker.local_addr()
        ),
    }
    eprintln!(
        "Broker CA fingerprint (technicians check it when they enroll): {}",
        broker.pki().ca_fingerprint()
    );
    eprintln!(
        "CA certificate: {}",
        data_dir.join("pki").join("ca.pem").display()
    );
    if let Some(addr) = broker.web_addr() {
        eprintln!("Web UI for staff on TCP {addr}");
        if let Some(hint) = sekisho_broker::web::lan_hint(addr).filter(|_| !behind_proxy) {
            eprintln!("{hint}");
        }
    }
    if let Some(webhook) = broker.webhook_description() {
        eprintln!("Approvers' webhook: {webhook}");
    }
    if let Some(url) = broker.audit_syslog_url() {
        eprintln!("Audit log sent to the syslog collector at {url}");
    }
    if let Some(url) = broker.first_admin_url() {
        eprintln!(
            "No admin account exists yet. Open this one-time link within 24 hours to create the first admin (it is shown only now):\n  {url}"
        );
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        stop.wait().await;
        eprintln!("Stopping: closing every session.");
        signal.cancel();
    });
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch for SIGHUP")?;
    let reloader = broker.reloader();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload("sighup").await {
                Ok(done) => eprintln!("Policies reloaded (sha256 {}).", done.sha256),
                Err(e) => eprintln!("{e}"),
            }
        }
    });
    broker.run(shutdown).await;
    Ok(())
}

/// The web UI's flags of `serve`.
#[derive(clap::Args)]
struct WebArgs {
    /// The TCP address of the staff web UI (HTTPS, TLS 1.3). The default answers on this
    /// host only; to open it to the hospital's LAN give e.g. 0.0.0.0:8443 (with --web-name and
    /// --web-allow).
    #[arg(long, default_value_t = sekisho_broker::web::DEFAULT_WEB_LISTEN)]
    web_listen: SocketAddr,
    /// Only these source networks may connect to the web UI, e.g. 10.20.0.0/16 (repeat);
    /// connections from elsewhere are closed, counted and logged. Default: any.
    #[arg(long, value_name = "CIDR", value_parser = parse_network)]
    web_allow: Vec<sekisho_broker::policy::IpNetwork>,
    /// Serve no web UI.
    #[arg(long, conflicts_with_all = ["web_cert", "web_plain_http"])]
    no_web: bool,
    /// The web UI's certificate chain (PEM); without it the broker's CA issues one for
    /// --web-name.
    #[arg(long, value_name = "FILE", requires = "web_key")]
    web_cert: Option<PathBuf>,
    /// The private key of --web-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "web_cert")]
    web_key: Option<PathBuf>,
    /// A DNS name or IP address staff type to reach the web UI (repeat): the broker-issued
    /// certificate's names, and the first is used in the printed first-admin link (default:
    /// localhost and the listen address, or this host's name on 0.0.0.0).
    #[arg(long, value_name = "NAME")]
    web_name: Vec<String>,
    /// Plain HTTP (only on a loopback --web-listen, behind a reverse proxy doing TLS).
    #[arg(long, conflicts_with = "web_cert")]
    web_plain_http: bool,
    /// POST a JSON message to this URL for each new request, approval, denial and
    /// revocation, and each staff account locked after failed logins: https://, or http://
    /// only to a relay on this host.
    #[arg(long, value_name = "URL")]
    web_webhook: Option<String>,
    /// The CA certificate(s) (PEM) that issued the webhook receiver's certificate, trusted
    /// with the broker's own CA instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "web_webhook")]
    web_webhook_ca: Option<PathBuf>,
    /// A file holding the secret that signs every webhook message (X-Sekisho-Signature).
    #[arg(long, value_name = "FILE", requires = "web_webhook")]
    web_webhook_secret_file: Option<PathBuf>,
    /// Minutes a staff login lasts without use (1 to 1440).
    #[arg(long, value_name = "MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=1440))]
    web_idle_minutes: u64,
    /// Hours a staff login lasts at most, in use or not (1 to 168).
    #[arg(long, value_name = "HOURS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=168))]
    web_session_hours: u64,
    /// HOST:PORT technicians reach this broker at, printed in the enrollment commands the
    /// web UI shows.
    #[arg(long, value_name = "HOST:PORT", env = "SEKISHO_PUBLIC_ADDRESS")]
    broker_address: Option<String>,
}

impl WebArgs {
    /// The webhook, checked when the broker binds (before anything is created).
    fn webhook(&self) -> Option<sekisho_broker::webhook::WebhookConfig> {
        use sekisho_broker::webhook::WebhookConfig;
        self.web_webhook.as_ref().map(|url| WebhookConfig {
            ca_file: self.web_webhook_ca.clone(),
            secret_file: self.web_webhook_secret_file.clone(),
            ..WebhookConfig::new(url.clone())
        })
    }

    fn resolve(self) -> anyhow::Result<Option<sekisho_broker::web::WebConfig>> {
        use sekisho_broker::web::{WebConfig, WebTls};
        if self.no_web {
            return Ok(None);
        }
        if self.web_plain_http && !self.web_listen.ip().is_loopback() {
            bail!(
                "--web-plain-http is allowed only on a loopback --web-listen (127.0.0.1 or [::1]), not {}; staff passwords must not cross the network unencrypted.",
                self.web_listen
            );
        }
        // Ranges checked by clap; the products cannot overflow.
        let idle_timeout = self
            .web_idle_minutes
            .checked_mul(60)
            .map(std::time::Duration::from_secs)
            .context("--web-idle-minutes is out of range")?;
        let session_lifetime = self
            .web_session_hours
            .checked_mul(3600)
            .map(std::time::Duration::from_secs)
            .context("--web-session-hours is out of range")?;
        let link_name = self.web_name.first().cloned();
        let tls = match (self.web_cert, self.web_key, self.web_plain_http) {
            (_, _, true) => WebTls::PlainHttpOnLoopback,
            (Some(cert), Some(key), false) => WebTls::Files { cert, key },
            _ => WebTls::BrokerIssued {
                names: self.web_name,
            },
        };
        Ok(Some(WebConfig {
            tls,
            idle_timeout,
            session_lifetime,
            allow: self.web_allow,
            link_name,
            broker_address: self.broker_address,
            ..WebConfig::new(self.web_listen)
        }))
    }
}

/// A `--web-allow` network, with the policy files' sentence when it is not one.
fn parse_network(text: &str) -> Result<sekisho_broker::policy::IpNetwork, String> {
    text.trim()
        .parse()
        .map_err(|e: sekisho_broker::policy::ParseIpNetworkError| format!("`{text}` {e}"))
}

/// Ctrl-C (SIGINT) or SIGTERM (what systemd sends).
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
