//! The commands and options of `sekisho`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sekisho_client::{ClientConfig, LocalForward};

use super::Stop;

const CREDENTIALS_HELP: &str = "\
First, once: enroll with the command the hospital's IT gave you. It makes your key on this \
computer and stores your certificate in the configuration directory (--config-dir, \
SEKISHO_CONFIG_DIR, default ~/.config/sekisho), and shows your one-time-password secret once:
  sekisho enroll --broker HOST:PORT --token TOKEN --ca-fingerprint sha256:...

Then:
  id=$(sekisho request --target ehr-db --purpose \"apply patch 5.2.1\" --ticket INC-1234 --for 1h)
  sekisho connect \"$id\" -L 15432:ehr-db      # waits for approval, asks for the one-time password
  psql -h 127.0.0.1 -p 15432 ...              # in another terminal, while the session is open

Credentials from elsewhere can be given instead with --broker, --ca, --cert and --key (or \
SEKISHO_BROKER, SEKISHO_CA, SEKISHO_CERT, SEKISHO_KEY).";

#[derive(Debug, Parser)]
#[command(
    name = "sekisho",
    version,
    about = "Remote maintenance through a hospital's sekisho broker: ask for a session, wait for \
             the hospital's approval, open it with your one-time password.",
    after_help = CREDENTIALS_HELP
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) credentials: Credentials,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the broker is and who the technician is; global to every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Broker and credentials (from the hospital)")]
pub(crate) struct Credentials {
    /// The hospital's broker, as HOST:PORT; repeat it (or separate with commas) for a
    /// hospital with several brokers: they are tried in order.
    #[arg(
        long,
        global = true,
        env = "SEKISHO_BROKER",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    broker: Vec<String>,
    /// The broker's CA certificate (PEM), the only one this client trusts.
    #[arg(long, global = true, env = "SEKISHO_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Your client certificate (PEM).
    #[arg(long, global = true, env = "SEKISHO_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Your private key (PEM).
    #[arg(long, global = true, env = "SEKISHO_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// How to reach the broker: auto (QUIC, with TLS over TCP raced a moment later for
    /// networks that pass no UDP), quic, or tcp.
    #[arg(
        long,
        global = true,
        env = "SEKISHO_TRANSPORT",
        default_value = "auto",
        value_name = "auto|quic|tcp"
    )]
    pub(crate) transport: sekisho_client::transport::TransportChoice,
    /// An HTTP proxy for TLS over TCP, `http://[USER:PASSWORD@]HOST:PORT` [default: from
    /// HTTPS_PROXY, unless NO_PROXY names the broker].
    #[arg(long, global = true, value_name = "URL")]
    proxy: Option<String>,
    /// Your user name at the HTTP proxy: its password is asked for (hidden at a terminal;
    /// otherwise the first line of standard input), never taken from the command line.
    #[arg(long, global = true, env = "SEKISHO_PROXY_USER", value_name = "NAME")]
    proxy_user: Option<String>,
    /// Seconds to wait for the broker before saying it is unreachable.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub(crate) connect_timeout: u64,
    /// The largest QUIC packets to try, in bytes: 1452 fits every Ethernet path; 8952 only if
    /// the hospital says your path to the broker carries jumbo frames.
    #[arg(
        long,
        global = true,
        env = "SEKISHO_MAX_PACKET_SIZE",
        default_value_t = tunnel::udp::PacketSize::ETHERNET,
        value_name = "BYTES"
    )]
    pub(crate) max_packet_size: tunnel::udp::PacketSize,
    /// The congestion controller QUIC sends with (what flows to the targets): cubic, bbr or
    /// newreno.
    #[arg(
        long,
        global = true,
        env = "SEKISHO_QUIC_CONGESTION",
        default_value_t = tunnel::udp::Congestion::default(),
        value_name = "CONTROLLER"
    )]
    pub(crate) quic_congestion: tunnel::udp::Congestion,
    /// Where enrollment stores your certificate, key and the broker's CA [default:
    /// $XDG_CONFIG_HOME/sekisho or ~/.config/sekisho].
    #[arg(long, global = true, env = "SEKISHO_CONFIG_DIR", value_name = "DIR")]
    pub(crate) config_dir: Option<PathBuf>,
}

impl Credentials {
    /// The configuration directory: `--config-dir`, else the default one.
    pub(crate) fn config_dir(&self) -> Result<PathBuf, Stop> {
        self.config_dir
            .clone()
            .or_else(sekisho_client::files::default_config_dir)
            .ok_or_else(|| {
                Stop::Error(
                    "Cannot tell where your configuration lives (HOME is not set); give --config-dir DIR.".to_owned(),
                )
            })
    }

    /// The client configuration: from --broker/--ca/--cert/--key (or their variables) when
    /// any is given, all four then being needed; else from what enrollment stored.
    pub(crate) fn config(&self) -> Result<ClientConfig, Stop> {
        let given = [
            !self.broker.is_empty(),
            self.ca.is_some(),
            self.cert.is_some(),
            self.key.is_some(),
        ];
        let mut config = if given.iter().any(|given| *given) {
            self.config_from_options()?
        } else {
            let dir = self.config_dir()?;
            ClientConfig::from_dir(&dir)
                .map_err(Stop::error)?
                .ok_or_else(|| {
                    Stop::Error(format!(
                        "You are not enrolled yet (nothing in {}); run the `sekisho enroll …` command the hospital's IT gave you first.",
                        dir.display()
                    ))
                })?
        };
        config.connect_timeout = Duration::from_secs(self.connect_timeout);
        config.max_packet = self.max_packet_size;
        config.congestion = self.quic_congestion;
        config.transport = self.transport;
        config.proxy = self.proxy_for(&config.broker)?;
        Ok(config)
    }

    /// The configuration from the four options; a missing one is one sentence naming every
    /// missing option and its variable.
    fn config_from_options(&self) -> Result<ClientConfig, Stop> {
        let missing: Vec<&str> = [
            (
                self.broker.is_empty(),
                "--broker HOST:PORT (SEKISHO_BROKER)",
            ),
            (self.ca.is_none(), "--ca FILE (SEKISHO_CA)"),
            (self.cert.is_none(), "--cert FILE (SEKISHO_CERT)"),
            (self.key.is_none(), "--key FILE (SEKISHO_KEY)"),
        ]
        .into_iter()
        .filter_map(|(absent, option)| absent.then_some(option))
        .collect();
        let (Some((broker, further)), Some(ca), Some(cert), Some(key)) =
            (self.broker.split_first(), &self.ca, &self.cert, &self.key)
        else {
            return Err(Stop::Error(format!(
                "Missing {}; give all four, or none to use what `sekisho enroll` stored (see `sekisho --help`).",
                missing.join(", ")
            )));
        };
        let mut config = ClientConfig::from_files(broker, ca, cert, key).map_err(Stop::error)?;
        config.further_brokers = further.to_vec();
        Ok(config)
    }

    /// The HTTP proxy for reaching `broker`: --proxy, else the environment's.
    pub(crate) fn proxy_for(
        &self,
        broker: &str,
    ) -> Result<Option<sekisho_client::proxy::Proxy>, Stop> {
        let mut proxy = match &self.proxy {
            Some(url) => sekisho_client::proxy::Proxy::from_url(url)
                .map(Some)
                .map_err(|e| Stop::Error(format!("{e}.")))?,
            None => sekisho_client::proxy::Proxy::from_env(broker)
                .map_err(|e| Stop::Error(format!("{e} (from HTTPS_PROXY).")))?,
        };
        if let (Some(user), Some(proxy)) = (&self.proxy_user, proxy.as_mut())
            && !proxy.has_credentials()
        {
            use super::code::{CodeSource, Read};
            let source = CodeSource::stdin();
            let prompt = format!("Password for {user} at the proxy {proxy}: ");
            if !source.is_terminal() {
                eprintln!("{}", prompt.trim_end());
            }
            match source.read_now(&prompt) {
                Read::Code(password) => proxy.set_credentials(user, &password),
                Read::End | Read::Interrupted => {
                    return Err(Stop::Error(
                        "No proxy password was given; run the command again and type it at the prompt.".to_owned(),
                    ));
                }
                Read::Failed(why) => {
                    return Err(Stop::Error(format!(
                        "Cannot read the proxy password ({why})."
                    )));
                }
            }
        }
        Ok(proxy)
    }

    /// The broker addresses given with --broker (or SEKISHO_BROKER), in order.
    pub(crate) fn brokers(&self) -> &[String] {
        &self.broker
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Enroll with the hospital's broker, once: makes your key on this computer, gets your
    /// certificate, and shows your one-time-password secret (only this once).
    Enroll {
        /// The one-time enrollment token from the hospital's IT.
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// The broker CA's fingerprint from the hospital's IT (sha256:…); enrollment stops if
        /// the broker shows another.
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: String,
    },
    /// Ask the hospital for a session; prints the request's id on standard output.
    Request {
        /// A target to reach, by the name in your vendor's agreement (repeatable).
        #[arg(long = "target", value_name = "NAME", required = true)]
        targets: Vec<String>,
        /// What the work is, for the approver.
        #[arg(long, value_name = "TEXT")]
        purpose: String,
        /// Your ticket or incident reference.
        #[arg(long, value_name = "REF", default_value = "")]
        ticket: String,
        /// How long the work needs: 30m, 1h, 1h30m, 90s.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        wanted: u32,
    },
    /// Wait for the hospital's approval, type the one-time password, and forward local ports
    /// to the targets until the session ends.
    Connect {
        /// The request's id, as `sekisho request` printed it.
        #[arg(value_name = "REQUEST_ID")]
        request: String,
        #[arg(
            help = "A local forward, [BIND:]LOCAL_PORT:TARGET (repeatable). Binds 127.0.0.1 unless BIND is given; port 0 picks a free port.",
            short = 'L',
            long = "forward",
            value_name = "[BIND:]PORT:TARGET",
            required = true
        )]
        forwards: Vec<LocalForward>,
    },
    /// List your recent requests and sessions.
    Status,
}

/// `30m`, `1h`, `1h30m`, `90s`, `2h15m30s` (the syntax policies use, see
/// [`proto::duration`]; upper-case units are accepted too), as whole seconds, more than zero.
pub(crate) fn parse_duration(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a duration; write it like 30m, 1h, 1h30m or 90s");
    proto::duration::parse_duration(&text.trim().to_ascii_lowercase())
        .filter(|duration| !duration.is_zero())
        .and_then(|duration| u32::try_from(duration.as_secs()).ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h15m30s"), Ok(8130));
        assert_eq!(parse_duration("1H"), Ok(3600));
    }

    #[test]
    fn malformed_durations_say_what_is_expected() {
        for bad in [
            "", "1", "h", "30", "1x", "30m1h", "1h1h", "0m", "1h 30m", "-5m",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("write it like 30m"), "{bad}: {err}");
        }
        assert!(parse_duration("99999999999h").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
