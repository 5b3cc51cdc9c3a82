//! `sekisho enroll`: the one-time token and the CA fingerprint the hospital gave, turned into
//! credentials in the configuration directory, and the one-time-password secret shown once
//! (as a QR code to scan and as the `otpauth://` URI).
//!
//! Progress goes to standard error; the secret goes to standard output, so that it can be
//! shown on the screen and nowhere else (it is never written to a file by the client).

use std::process::ExitCode;

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use sekisho_client::enroll::{self, EnrollArgs};

use super::args::Credentials;
use super::{Outcome, Stop, when};

pub(crate) async fn run(credentials: &Credentials, token: &str, ca_fingerprint: &str) -> Outcome {
    let Some((broker, further)) = credentials.brokers().split_first() else {
        return Err(Stop::Error(
            "Give the broker's address with --broker HOST:PORT, as in the command the hospital's IT gave you.".to_owned(),
        ));
    };
    let args = EnrollArgs {
        broker: broker.to_owned(),
        further_brokers: further.to_vec(),
        transport: credentials.transport,
        proxy: credentials.proxy_for(broker)?,
        token: token.to_owned(),
        ca_fingerprint: ca_fingerprint.to_owned(),
        dir: credentials.config_dir()?,
        connect_timeout: std::time::Duration::from_secs(credentials.connect_timeout),
    };
    // Check what was typed before anything goes on the network.
    let fingerprint = enroll::parse_fingerprint(ca_fingerprint).map_err(Stop::error)?;
    eprintln!("Enrolling with the broker at {broker}…");
    let enrollment = enroll::enroll(&args).await.map_err(Stop::error)?;
    let offer = &enrollment.offer;
    let name = if offer.display_name.is_empty() {
        String::new()
    } else {
        format!("{} ", offer.display_name)
    };
    eprintln!(
        "The broker's CA matches the fingerprint you were given ({}).",
        enroll::format_fingerprint(&fingerprint)
    );
    eprintln!(
        "Enrolled {name}({}/{}) with {}. Your certificate is valid until {}; it and the key made on this computer are in {}.",
        offer.vendor,
        offer.technician,
        offer.hospital,
        when::clock(enrollment.not_after, when::now()),
        enrollment.dir.display()
    );
    eprintln!();
    eprintln!(
        "Your one-time-password secret is shown now and never again. Scan the code with your authenticator app (or add the otpauth:// line by hand):"
    );
    match QrCode::new(enrollment.otpauth_uri.as_bytes()) {
        Ok(code) => {
            let drawn = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            println!("{drawn}");
        }
        Err(e) => eprintln!("(The QR code cannot be drawn: {e}.)"),
    }
    println!("{}", enrollment.otpauth_uri);
    eprintln!();
    eprintln!(
        "If you lose it, ask the hospital's IT to reset your enrollment. Next: sekisho request --target TARGET --purpose TEXT --for 1h"
    );
    Ok(ExitCode::SUCCESS)
}
