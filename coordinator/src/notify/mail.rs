//! Email notifications: the message ([`super::formats::email`], text and HTML) sent through
//! the configured SMTP server with `lettre` (STARTTLS or TLS with rustls; plain only to a
//! server on this machine).

use super::formats;
use dispatch_core::notify::Smtp;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// A sender through one SMTP server.
#[derive(Clone)]
pub(super) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The transport for `s` (its password file read now); an error naming what is wrong.
    pub(super) fn new(s: &Smtp) -> Result<Mailer, String> {
        let from = Mailer::address(&s.from).map_err(|e| format!("notify.smtp.from: {e}"))?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host).port(s.port());
        if s.security() != "none" {
            let mut tls = TlsParameters::builder(s.host.clone());
            if let Some(ca) = &s.ca {
                let pem = std::fs::read(ca).map_err(|e| format!("notify.smtp.ca {ca}: {e}"))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("notify.smtp.ca {ca}: {e}"))?;
                tls = tls.add_root_certificate(cert);
            }
            let tls = tls
                .build_rustls()
                .map_err(|e| format!("notify.smtp: TLS for {}: {e}", s.host))?;
            b = b.tls(if s.security() == "tls" {
                Tls::Wrapper(tls)
            } else {
                Tls::Required(tls)
            });
        }
        if let (Some(user), Some(file)) = (&s.user, &s.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("notify.smtp.password_file {file}: {e}"))?;
            b = b.credentials(Credentials::new(
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ));
        }
        Ok(Mailer {
            transport: b.timeout(Some(std::time::Duration::from_secs(30))).build(),
            from,
        })
    }

    /// `text` as a mailbox (`name <addr>` or `addr`).
    pub(super) fn address(text: &str) -> Result<Mailbox, String> {
        text.parse::<Mailbox>()
            .map_err(|e| format!("not an email address ({e})"))
    }

    /// Sends `m` to `to`.
    pub(super) async fn send(&self, to: &Mailbox, m: &formats::Message) -> Result<(), String> {
        let (subject, text, html) = formats::email(m);
        let mail = lettre::Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("cannot form the email: {e}"))?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}
