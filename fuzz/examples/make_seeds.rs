//! Writes the committed seed corpus, `fuzz/seeds/<target>/`: real frames, the repository's
//! policies, tokens in their printed form, certificate requests made as the client makes
//! them (`client/src/enroll.rs`), and addresses as policy files write them.
//!
//! Run once from the repository root when what the seeds should hold changes:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! It replaces the files it writes and leaves others (such as crash inputs added by hand as
//! regression seeds) alone. The requests are signed with a new key each run, so their bytes
//! change every time.

use std::fs;
use std::path::{Path, PathBuf};

use proto::{
    Connect, Connected, Ended, EnrollCsr, EnrollOffer, EnrollStart, Enrolled, ErrorCode,
    ErrorMessage, Extended, Hello, Message, Open, Opened, RequestAccess, RequestState, RequestView,
    StatusDone, Warning, Watch, Welcome,
};
use sekisho_broker::encoding::base32_encode;
use sekisho_broker::identity::parse_enrollment_token;
use sekisho_broker::pki::{RequestRefusal, TechnicianIdentity, check_request_der};
use sekisho_broker::policy::PolicySet;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    proto_decode(&seeds.join("proto_decode"));
    policy_load(&root.join("../policies"), &seeds.join("policy_load"));
    enroll_input(&seeds.join("enroll_input"));
    target_address(&seeds.join("target_address"));
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).expect("create the seed directory");
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).expect("write a seed");
    println!("{}", path.display());
}

fn proto_decode(dir: &Path) {
    let view = RequestView {
        id: "r-7kq3m2xa".into(),
        state: RequestState::Approved,
        targets: vec!["ehr-db".into(), "ehr-web".into()],
        purpose: "apply patch 5.2.1".into(),
        ticket: "INC-1234".into(),
        wanted_secs: 3600,
        created_at: 1_799_990_000,
        answer_by: 1_799_991_800,
        approvers: vec!["suzuki".into()],
        approvals_needed: 1,
        end_at: 1_800_000_000,
        ended_at: 0,
        end_reason: String::new(),
        ended_by: String::new(),
        note: String::new(),
    };
    let messages = [
        Message::Hello(Hello {
            version: proto::PROTOCOL_VERSION,
            client_software: "sekisho/0.1.0".into(),
        }),
        Message::Welcome(Welcome {
            version: proto::PROTOCOL_VERSION,
            vendor: "acme-ehr".into(),
            technician: "tanaka".into(),
            broker_name: "Demo General Hospital".into(),
        }),
        Message::Connect(Connect {
            target: "ehr-db".into(),
        }),
        Message::Connected(Connected),
        Message::RequestAccess(RequestAccess {
            targets: vec!["ehr-db".into(), "ehr-web".into()],
            purpose: "apply patch 5.2.1".into(),
            ticket: "INC-1234".into(),
            duration_secs: 3600,
        }),
        Message::RequestStatus(view.clone()),
        Message::RequestStatus(RequestView {
            state: RequestState::Ended,
            ended_at: 1_800_000_600,
            end_reason: "revoked".into(),
            ended_by: "suzuki".into(),
            note: "作業終了 / work done".into(),
            ..view
        }),
        Message::Watch(Watch {
            request_id: "r-7kq3m2xa".into(),
        }),
        Message::Open(Open {
            request_id: "r-7kq3m2xa".into(),
            otp: "123456".into(),
        }),
        Message::Opened(Opened {
            request_id: "r-7kq3m2xa".into(),
            end_at: 1_800_000_000,
            targets: vec!["ehr-db".into()],
        }),
        Message::Warning(Warning { seconds_left: 600 }),
        Message::Extended(Extended {
            end_at: 1_800_003_600,
            by: "suzuki".into(),
        }),
        Message::Ended(Ended {
            reason: "expired".into(),
            message: "The session reached its end time.".into(),
        }),
        Message::StatusQuery,
        Message::StatusDone(StatusDone { count: 3 }),
        Message::EnrollStart(EnrollStart {
            version: proto::PROTOCOL_VERSION,
            token: "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567".into(),
        }),
        Message::EnrollOffer(EnrollOffer {
            vendor: "acme-ehr".into(),
            technician: "tanaka".into(),
            display_name: "田中 花子".into(),
            hospital: "Demo General Hospital".into(),
        }),
        Message::EnrollCsr(EnrollCsr {
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
        }),
        Message::Enrolled(Enrolled {
            certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                .into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
            otpauth_uri:
                "otpauth://totp/Demo%20General%20Hospital:acme-ehr%2Ftanaka?secret=JBSWY3DPEHPK3PXP"
                    .into(),
            not_after: 1_900_000_000,
        }),
        Message::Error(ErrorMessage::new(
            ErrorCode::TargetRefused,
            "病院側の許可がありません / not allowed",
        )),
        Message::Error(ErrorMessage {
            code: ErrorCode::Unknown(999),
            message: "a code from a newer broker".into(),
        }),
    ];
    for (i, message) in messages.iter().enumerate() {
        let name = format!("{i:02}-{}.bin", message.name().to_ascii_lowercase());
        write(dir, &name, message.to_frame());
    }

    // A control stream: several frames back to back, the last one cut short.
    let mut stream = Vec::new();
    for message in &messages[..2] {
        message.encode(&mut stream);
    }
    messages[4].encode(&mut stream);
    messages[8].encode(&mut stream);
    let mut cut = Vec::new();
    messages[5].encode(&mut cut);
    stream.extend_from_slice(&cut[..cut.len() / 2]);
    write(dir, "stream-control.bin", &stream);

    // A forward stream: the answer frame, then raw bytes that are not frames.
    let mut forward = Message::Connected(Connected).to_frame();
    forward.extend_from_slice(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 raw TLS bytes");
    write(dir, "stream-forward.bin", &forward);

    // Refusals the decoder must report: a body over the limit, an unknown tag, trailing
    // bytes, a state outside the protocol, a list count larger than its body.
    let mut too_long = vec![0x10];
    too_long.extend_from_slice(&(16 * 1024 + 1u32).to_be_bytes());
    write(dir, "bad-too-long.bin", too_long);
    write(dir, "bad-unknown-tag.bin", [0x55, 0, 0, 0, 0]);
    write(dir, "bad-trailing.bin", [0x11, 0, 0, 0, 1, 0xAA]);
    let mut bad_state = messages[5].to_frame();
    bad_state[5 + 2 + 10] = 9;
    write(dir, "bad-state.bin", bad_state);
    write(dir, "bad-list-count.bin", [0x20, 0, 0, 0, 2, 0xff, 0xff]);
}

/// Writes a `policy_load` seed after checking that it loads, or is refused, as its name says.
fn policy_seed(dir: &Path, name: &str, input: &str, loads: bool) {
    let mut parts = input.split('\0');
    let hospital = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let vendors: Vec<(&str, &str)> = rest.chunks(2).map(|pair| (pair[0], pair[1])).collect();
    let result = PolicySet::from_texts(hospital, &vendors);
    assert_eq!(result.is_ok(), loads, "seed {name}: {result:?}");
    write(dir, name, input);
}

fn policy_load(policies: &Path, dir: &Path) {
    let read = |relative: &str| {
        fs::read_to_string(policies.join(relative)).expect("read a repository policy file")
    };
    let hospital = read("hospital.toml");
    let vendors = ["acme-ehr.toml", "kanto-net.toml", "nihon-pacs.toml"];
    // One seed per vendor, and one with all of them: `hospital NUL name NUL text …`.
    let mut all = hospital.clone();
    for name in vendors {
        let text = read(&format!("vendors/{name}"));
        let stem = name.trim_end_matches(".toml");
        let input = format!("{hospital}\0{name}\0{text}");
        policy_seed(dir, &format!("repo-{stem}.txt"), &input, true);
        all.push_str(&format!("\0{name}\0{text}"));
    }
    policy_seed(dir, "repo-all.txt", &all, true);

    let minimal_hospital = "[hospital]\nname = \"Test Hospital\"\ntimezone = \"UTC\"\n";
    policy_seed(dir, "minimal-hospital-only.txt", minimal_hospital, true);
    let small_vendor = r#"[vendor]
id = "v"
name = "Vendor"

[[target]]
name = "pacs"
address = "[2001:db8::10]:104"
critical = true

[[target]]
name = "dev"
address = "127.0.0.1:8080"
allow_loopback = true

[[target]]
name = "nas"
address = "nas.hospital.internal:445"
allow_file_share = true

[access]
hours = "Mon-Fri 08:30-17:15; Sat,Sun 09:00-12:00"
holidays = ["2026-12-31", "2027-01-01"]
max_session = "1h30m"
idle_timeout = "15m"
approvals = 2
critical_approvals = 3
source_networks = ["203.0.113.0/24", "2001:db8:100::/48"]

[[responsibility]]
item = "Imaging archive"
owner = "shared"
note = "<b>escaped</b> | in both formats"
"#;
    let input = format!("{minimal_hospital}\0v.toml\0{small_vendor}");
    policy_seed(dir, "small-vendor.txt", &input, true);
    // Refused: an unknown key, a syntax error, an id that is not its file name, a bad hours.
    let input = format!(
        "{minimal_hospital}[defaults]\nwarnings = []\n\0w.toml\0[vendor]\nid = \"x\"\nname = \"\"\n[access]\nhours = \"Sun 25:00-26:00\"\napprovals = 9\n"
    );
    policy_seed(dir, "bad-vendor.txt", &input, false);
    let input =
        "[hospital]\nname = \"H\"\ntimezone = \"UTC\"\ncolour = 1\n\0x.toml\0[vendor\nid = \"x";
    policy_seed(dir, "bad-syntax.txt", input, false);
}

fn enroll_input(dir: &Path) {
    // A token as the broker prints it (20 bytes, base32, groups of four), and as a person
    // might type it.
    let bytes: Vec<u8> = (0u8..20)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let encoded = base32_encode(&bytes);
    let printed = encoded
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-");
    assert_eq!(
        parse_enrollment_token(&printed).map(Vec::from),
        Some(bytes.clone())
    );
    write(dir, "token-printed.txt", &printed);
    write(
        dir,
        "token-typed.txt",
        format!(" {} \n", printed.to_ascii_lowercase().replace('-', " ")),
    );
    assert_eq!(parse_enrollment_token(&printed[..printed.len() - 1]), None);
    write(dir, "token-short.txt", &printed[..printed.len() - 1]);

    // Requests as the client makes them (a P-256 key; the technician as the common name and
    // the identity as a URI name).
    let key = rcgen::KeyPair::generate().expect("a key");
    let as_client = |_: &mut rcgen::CertificateParams| {};
    let tanaka_uri = "urn:sekisho:technician:acme-ehr:tanaka";
    let tanaka = client_request(&key, "tanaka", tanaka_uri, as_client);
    write(dir, "csr-tanaka.pem", tanaka.pem().expect("PEM"));
    write(dir, "csr-tanaka.der", tanaka.der());
    let sato_uri = "urn:sekisho:technician:acme-ehr:sato";
    let sato = client_request(&key, "sato", sato_uri, as_client);
    write(dir, "csr-sato.der", sato.der());
    // Asking to be a CA: an extension the broker reads and ignores (the certificate carries
    // the broker's extensions only).
    let ca = client_request(&key, "tanaka", tanaka_uri, |params| {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    write(dir, "csr-asks-ca.der", ca.der());
    // An extension the broker does not understand: refused.
    let unknown = client_request(&key, "tanaka", tanaka_uri, |params| {
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 55555, 1],
            vec![0x05, 0x00],
        )];
    });
    write(dir, "csr-unknown-extension.der", unknown.der());
    let identity = TechnicianIdentity::new("acme-ehr", "tanaka").expect("a valid identity");
    assert!(check_request_der(&identity, tanaka.der()).is_ok());
    assert!(matches!(
        check_request_der(&identity, sato.der()),
        Err(RequestRefusal::OtherIdentity { .. })
    ));
    assert!(check_request_der(&identity, ca.der()).is_ok());
    assert_eq!(
        check_request_der(&identity, unknown.der()).err(),
        Some(RequestRefusal::Malformed)
    );

    // Requests the harness signs itself.
    write(
        dir,
        "sign-tanaka.txt",
        "sign:urn:sekisho:technician:acme-ehr:tanaka",
    );
    write(
        dir,
        "sign-two.txt",
        "sign:urn:sekisho:technician:acme-ehr:tanaka\nurn:sekisho:technician:acme-ehr:sato",
    );
    write(
        dir,
        "sign-odd.txt",
        "sign:urn:sekisho:technician:acme-ehr:tanaka:x\nurn:sekisho:technician::",
    );
}

fn client_request(
    key: &rcgen::KeyPair,
    technician: &str,
    uri: &str,
    change: impl FnOnce(&mut rcgen::CertificateParams),
) -> rcgen::CertificateSigningRequest {
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, technician);
    params.distinguished_name = name;
    params.subject_alt_names = vec![rcgen::SanType::URI(
        uri.to_owned().try_into().expect("an IA5 string"),
    )];
    change(&mut params);
    params.serialize_request(key).expect("a request")
}

fn target_address(dir: &Path) {
    let addresses = [
        ("name", "ehr-db.hospital.internal:5432"),
        ("name-trailing-dot", "pacs.hospital.internal.:104"),
        ("name-windows", "WIN_HOST01:3389"),
        ("ipv4", "10.0.0.5:22"),
        ("ipv4-loopback", "127.0.0.1:8080"),
        ("ipv4-metadata", "169.254.169.254:80"),
        ("ipv4-broadcast", "255.255.255.255:9"),
        ("ipv6", "[2001:db8::1]:65535"),
        ("ipv6-loopback", "[::1]:22"),
        ("ipv6-mapped", "[::ffff:127.0.0.1]:22"),
        ("ipv6-link-local", "[fe80::1]:443"),
        ("ipv6-unbracketed", "2001:db8::1:22"),
        ("ipv6-unclosed", "[2001:db8::1:22"),
        ("ipv4-in-brackets", "[10.0.0.1]:22"),
        ("port-zero", "ehr-db:0"),
        ("port-big", "ehr-db:70000"),
        ("port-plus", "ehr-db:+22"),
        ("port-leading-zeros", "ehr-db:0022"),
        ("no-port", "ehr-db"),
        ("empty-host", ":5432"),
        ("bad-ipv4", "10.0.0.256:22"),
        ("label-dash", "-ehr.hospital:22"),
        ("unicode", "病院.example:22"),
    ];
    for (name, address) in addresses {
        write(dir, &format!("{name}.txt"), address);
    }
}
