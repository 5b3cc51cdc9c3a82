//! The agreement written back: per vendor, the responsibility matrix and the technical
//! controls the broker enforces, in Japanese and English, as Markdown or self-contained HTML,
//! ready to attach to the maintenance contract the hospital and the vendor sign.
//!
//! Rendering is a pure function of a [`PolicySet`]: the same policies always give the same
//! bytes (the snapshot tests rely on it). Everything taken from a policy file is escaped for
//! the output format (table cells in Markdown, text and attributes in HTML), so a policy can
//! never inject markup into the document.

use std::fmt::Write as _;
use std::time::Duration;

use super::{PolicySet, Responsibility, VendorPolicy};

/// The output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One self-contained HTML page with print styles; each vendor starts a new page.
    Html,
}

/// The document for `vendors` (every vendor when empty), in `format`. Vendors appear in
/// load order. The caller checks that named vendors exist.
pub fn render(policies: &PolicySet, vendors: &[&VendorPolicy], format: Format) -> String {
    render_with_checkpoint_key(policies, vendors, format, None)
}

/// [`render`], naming in the audit row the fingerprint of the key the broker signs audit
/// checkpoints with, when one is given (`policy render` reads it from the data directory).
pub fn render_with_checkpoint_key(
    policies: &PolicySet,
    vendors: &[&VendorPolicy],
    format: Format,
    checkpoint_key: Option<&str>,
) -> String {
    let all: Vec<&VendorPolicy> = if vendors.is_empty() {
        policies.vendors().collect()
    } else {
        vendors.to_vec()
    };
    let documents: Vec<Document> = all
        .iter()
        .map(|vendor| Document::new(policies, vendor, checkpoint_key))
        .collect();
    match format {
        Format::Markdown => markdown(&documents),
        Format::Html => html(&documents),
    }
}

/// One vendor's document, as labelled rows, before it is written in a format.
struct Document {
    title: String,
    parties: Vec<Row>,
    matrix: Vec<Responsibility>,
    targets: Vec<[String; 4]>,
    controls: Vec<Row>,
}

/// A labelled value: Japanese label, English label, value.
struct Row {
    ja: &'static str,
    en: &'static str,
    value: String,
}

fn row(ja: &'static str, en: &'static str, value: impl Into<String>) -> Row {
    Row {
        ja,
        en,
        value: value.into(),
    }
}

fn human(duration: Duration) -> String {
    proto::duration::format_duration(duration)
}

impl Document {
    fn new(policies: &PolicySet, vendor: &VendorPolicy, checkpoint_key: Option<&str>) -> Document {
        let hospital = policies.hospital();
        let access = &vendor.access;
        let defaults = &hospital.defaults;
        let none = "— (なし / none)";

        let mut parties = vec![
            row("病院", "Hospital", hospital.name.clone()),
            row(
                "事業者",
                "Vendor",
                format!("{} ({})", vendor.name, vendor.id),
            ),
            row(
                "契約",
                "Contract",
                vendor.contract.clone().unwrap_or_else(|| none.to_owned()),
            ),
            row(
                "病院の緊急連絡先",
                "Hospital emergency contact",
                hospital
                    .emergency_contact
                    .clone()
                    .unwrap_or_else(|| none.to_owned()),
            ),
            row(
                "事業者の緊急連絡先",
                "Vendor emergency contact",
                vendor
                    .emergency_contact
                    .clone()
                    .unwrap_or_else(|| none.to_owned()),
            ),
        ];
        parties.push(row(
            "再委託先",
            "Sub-contractors",
            if vendor.subcontractors.is_empty() {
                none.to_owned()
            } else {
                vendor.subcontractors.join("; ")
            },
        ));

        let targets = vendor
            .targets
            .iter()
            .map(|target| {
                [
                    target.name.clone(),
                    target.address(),
                    target.description.clone().unwrap_or_default(),
                    if target.critical {
                        format!(
                            "重要 / critical ({} 承認 / approvals)",
                            access.critical_approvals
                        )
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();

        let hours = match &access.hours {
            Some(hours) => format!("{hours} ({})", hospital.timezone),
            None => format!("常時 / any time ({})", hospital.timezone),
        };
        let holidays = if access.holidays.is_empty() {
            none.to_owned()
        } else {
            access
                .holidays
                .iter()
                .map(|date| date.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sources = if access.source_networks.is_empty() {
            "制限なし / any address".to_owned()
        } else {
            access
                .source_networks
                .iter()
                .map(|network| network.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let warnings = defaults
            .warnings
            .iter()
            .map(|warning| human(*warning))
            .collect::<Vec<_>>()
            .join(", ");
        let controls = vec![
            row(
                "接続先",
                "Targets",
                "上表の接続先のみ。承認時に名前解決し、そのアドレスに固定 / only the targets above; names are resolved at approval and the addresses pinned for the session",
            ),
            row("利用可能時間", "Allowed hours", hours),
            row("利用不可日", "Days without access", holidays),
            row(
                "最長接続時間",
                "Maximum session",
                format!(
                    "{} (終了時刻に切断、{warnings} 前に警告 / cut at the end time, warned {warnings} before)",
                    human(access.max_session)
                ),
            ),
            row(
                "無通信切断",
                "Idle timeout",
                format!(
                    "{} 通信がなければ切断 / ended after {} without traffic",
                    human(access.idle_timeout),
                    human(access.idle_timeout)
                ),
            ),
            row(
                "切断後の再開",
                "Resuming after a lost connection",
                match (access.resume.allowed, access.resume.without_code_within.is_zero()) {
                    (false, _) => "不可: 接続が切れるとセッションは終了 / not allowed: a lost connection ends the session".to_owned(),
                    (true, true) => "終了時刻まで可、再開ごとに新しいワンタイムパスワード / allowed until the end time, each time with a new one-time password".to_owned(),
                    (true, false) => format!(
                        "終了時刻まで可、切断から {} 以内はワンタイムパスワード不要、以降は新しいワンタイムパスワード / allowed until the end time; within {} of the loss without a new one-time password, later with one",
                        human(access.resume.without_code_within),
                        human(access.resume.without_code_within)
                    ),
                },
            ),
            row(
                "承認",
                "Approvals",
                format!(
                    "{} 名 (重要な接続先は {} 名)、申請者本人は承認不可、{} 以内に未回答なら失効。延長も同数の承認者が必要で、接続開始から {} まで{} / {} approver(s) ({} for critical targets), never the requester; unanswered requests expire after {}. An extension needs as many approvers and ends at most {} after the opening{}",
                    access.approvals,
                    access.critical_approvals,
                    human(defaults.answer_within),
                    human(access.max_session),
                    if defaults.require_approval_comment {
                        "。承認・延長には理由の記載が必須"
                    } else {
                        ""
                    },
                    access.approvals,
                    access.critical_approvals,
                    human(defaults.answer_within),
                    human(access.max_session),
                    if defaults.require_approval_comment {
                        "; every approval and extension must say why"
                    } else {
                        ""
                    },
                ),
            ),
            row("接続元", "Source networks", sources),
            row(
                "二要素認証",
                "Two-factor authentication",
                format!(
                    "技術者ごとのクライアント証明書とワンタイムパスワード (TOTP)、{} 回連続失敗でロック / a client certificate and a one-time password (TOTP) per technician; locked after {} wrong codes in a row",
                    defaults.otp_lockout_after, defaults.otp_lockout_after
                ),
            ),
            row(
                "監査",
                "Audit",
                match checkpoint_key {
                    None => "申請・承認・接続・転送 (接続先、バイト数、時間) をすべてハッシュチェーン付きで記録 / every request, approval, session and forward (target, bytes, duration) recorded in a hash-chained log".to_owned(),
                    Some(key) => format!("申請・承認・接続・転送 (接続先、バイト数、時間) をすべてハッシュチェーン付きで記録し、数秒ごとに署名付きチェックポイントをデータベースの外へ送る (署名鍵 {key}) / every request, approval, session and forward (target, bytes, duration) recorded in a hash-chained log, with signed checkpoints sent outside the database every few seconds (signing key {key})"),
                },
            ),
            row(
                "点検",
                "Review",
                format!(
                    "終了したセッションは {} 以内に病院が点検 / the hospital reviews each ended session within {}",
                    human(hospital.review_within),
                    human(hospital.review_within)
                ),
            ),
            row(
                "職務分離",
                "Separation of duties",
                staff_duties(&hospital.staff),
            ),
        ];

        Document {
            title: format!("{} — {}", hospital.name, vendor.name),
            parties,
            matrix: vendor.responsibility_matrix(hospital),
            targets,
            controls,
        }
    }
}

/// How the hospital's staff share their duties (`[staff]` of hospital.toml), one line.
pub fn staff_duties(staff: &super::StaffRules) -> String {
    let roles = match &staff.combined_roles {
        None => {
            "監査者は承認者・管理者を兼ねない / no account is both auditor and approver or admin"
                .to_owned()
        }
        Some(reason) => format!(
            "監査者と承認者・管理者の兼務を認める (理由: {reason}) / one account may be auditor with approver or admin (why: {reason})"
        ),
    };
    let lift = match staff.lockdown_lift_admins {
        1 => "緊急遮断の解除は管理者 / a lockdown is lifted by an admin".to_owned(),
        n => format!(
            "緊急遮断の解除は異なる管理者 {n} 名 / a lockdown is lifted by {n} different admins"
        ),
    };
    format!("{roles}; {lift}")
}

const HEADING: &str = "遠隔保守 責任分界・技術的管理 / Remote maintenance: responsibility boundary and technical controls";
const MATRIX_HEADING: &str = "1. 責任分界 / Responsibility matrix";
const TARGETS_HEADING: &str = "2. 接続先 / Targets";
const CONTROLS_HEADING: &str =
    "3. sekisho が強制する技術的管理 / Technical controls enforced by sekisho";
const SIGN_HEADING: &str = "4. 合意 / Agreement";

fn owner_label(item: &Responsibility) -> String {
    format!("{} / {}", item.owner.japanese(), item.owner)
}

/// A Markdown table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
}

fn markdown(documents: &[Document]) -> String {
    let mut out = String::new();
    for (i, doc) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("\n---\n\n");
        }
        let _ = writeln!(out, "# {HEADING}\n\n## {}\n", cell(&doc.title));
        out.push_str("| 項目 / Item | 内容 / Value |\n|---|---|\n");
        for row in &doc.parties {
            let _ = writeln!(out, "| {} / {} | {} |", row.ja, row.en, cell(&row.value));
        }
        let _ = writeln!(out, "\n## {MATRIX_HEADING}\n");
        out.push_str("| 項目 / Item | 責任 / Owner | 備考 / Note |\n|---|---|---|\n");
        for item in &doc.matrix {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&item.item),
                owner_label(item),
                cell(item.note.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out, "\n## {TARGETS_HEADING}\n");
        out.push_str(
            "| 名前 / Name | アドレス / Address | 説明 / Description | 区分 / Class |\n|---|---|---|---|\n",
        );
        for target in &doc.targets {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                cell(&target[0]),
                cell(&target[1]),
                cell(&target[2]),
                cell(&target[3])
            );
        }
        let _ = writeln!(out, "\n## {CONTROLS_HEADING}\n");
        out.push_str("| 管理 / Control | 内容 / Setting |\n|---|---|\n");
        for row in &doc.controls {
            let _ = writeln!(out, "| {} / {} | {} |", row.ja, row.en, cell(&row.value));
        }
        let _ = writeln!(out, "\n## {SIGN_HEADING}\n");
        out.push_str(
            "| | 病院 / Hospital | 事業者 / Vendor |\n|---|---|---|\n| 氏名 / Name | | |\n| 署名 / Signature | | |\n| 日付 / Date | | |\n",
        );
    }
    out
}

/// Text and attribute values: `&`, `<`, `>`, `"` and `'` escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:\"Noto Sans JP\",\"Hiragino Sans\",\"Yu Gothic\",sans-serif;font-size:10.5pt;line-height:1.45;color:#000;background:#fff;max-width:60em;margin:2em auto;padding:0 1em}\
h1{font-size:14pt;margin:0 0 .2em}h2{font-size:12pt;margin:1.2em 0 .4em}h3{font-size:11pt;margin:1em 0 .4em}\
table{border-collapse:collapse;width:100%;margin:.3em 0}th,td{border:1px solid #444;padding:.25em .45em;vertical-align:top;text-align:left}\
th{background:#eee}td.owner{white-space:nowrap}code{font-family:monospace}\
section.vendor{page-break-after:always;break-after:page}section.vendor:last-child{page-break-after:auto;break-after:auto}\
@media print{body{margin:0;max-width:none}@page{size:A4;margin:15mm}th{background:#eee;-webkit-print-color-adjust:exact;print-color-adjust:exact}tr,td,th{page-break-inside:avoid;break-inside:avoid}}";

fn html(documents: &[Document]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"ja\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>{}</title>", escape(HEADING));
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    for doc in documents {
        out.push_str("<section class=\"vendor\">\n");
        let _ = writeln!(
            out,
            "<h1>{}</h1>\n<h2>{}</h2>",
            escape(HEADING),
            escape(&doc.title)
        );
        out.push_str("<table>\n<tr><th>項目 / Item</th><th>内容 / Value</th></tr>\n");
        for row in &doc.parties {
            let _ = writeln!(
                out,
                "<tr><th>{} / {}</th><td>{}</td></tr>",
                row.ja,
                row.en,
                escape(&row.value)
            );
        }
        let _ = writeln!(out, "</table>\n<h3>{}</h3>", escape(MATRIX_HEADING));
        out.push_str(
            "<table>\n<tr><th>項目 / Item</th><th>責任 / Owner</th><th>備考 / Note</th></tr>\n",
        );
        for item in &doc.matrix {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"owner\">{}</td><td>{}</td></tr>",
                escape(&item.item),
                owner_label(item),
                escape(item.note.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out, "</table>\n<h3>{}</h3>", escape(TARGETS_HEADING));
        out.push_str("<table>\n<tr><th>名前 / Name</th><th>アドレス / Address</th><th>説明 / Description</th><th>区分 / Class</th></tr>\n");
        for target in &doc.targets {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&target[0]),
                escape(&target[1]),
                escape(&target[2]),
                escape(&target[3])
            );
        }
        let _ = writeln!(out, "</table>\n<h3>{}</h3>", escape(CONTROLS_HEADING));
        out.push_str("<table>\n<tr><th>管理 / Control</th><th>内容 / Setting</th></tr>\n");
        for row in &doc.controls {
            let _ = writeln!(
                out,
                "<tr><th>{} / {}</th><td>{}</td></tr>",
                row.ja,
                row.en,
                escape(&row.value)
            );
        }
        let _ = writeln!(out, "</table>\n<h3>{}</h3>", escape(SIGN_HEADING));
        out.push_str("<table>\n<tr><th></th><th>病院 / Hospital</th><th>事業者 / Vendor</th></tr>\n<tr><th>氏名 / Name</th><td></td><td></td></tr>\n<tr><th>署名 / Signature</th><td></td><td></td></tr>\n<tr><th>日付 / Date</th><td></td><td></td></tr>\n</table>\n</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_every_special_character() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn markdown_cells_stay_one_line_and_keep_their_pipes() {
        assert_eq!(cell("a|b\nc <i>"), "a\\|b c &lt;i>");
    }
}
