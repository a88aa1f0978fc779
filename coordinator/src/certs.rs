//! `dispatch-coordinator certs …`: a private CA, the coordinator's server certificate and node
//! client certificates (rcgen, ECDSA P-256), so a TLS set-up needs no openssl.
//!
//! Files, in one directory: `ca.pem` (give it to every client: `--ca`), `ca.key` (keep it
//! here), `server.pem` + `server.key` (`--tls-cert`, `--tls-key`), and `node-NAME.pem` +
//! `node-NAME.key` for each node (`dispatch-agent --tls-cert … --tls-key …`). Keys are 0600.

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Names every server certificate holds besides the given hosts, so the coordinator's own
/// machine can always reach it.
const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
}

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<PathBuf> {
    let path = dir.join(name);
    if secret {
        dispatch_core::fs::write_private(&path, text.as_bytes())
    } else {
        std::fs::write(&path, text)
    }
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A node name as a file name part and certificate name: the node-name rules.
fn check_node(name: &str) -> Result<()> {
    dispatch_core::limits::check_name("node name", name)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    if name.contains('*') {
        bail!("node certificate `{name}`: a certificate names one node; make one per node");
    }
    Ok(())
}

fn node_cert(dir: &Path, name: &str, days: u32, ca: &Issuer<'_, KeyPair>) -> Result<[PathBuf; 2]> {
    check_node(name)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    if let Ok(dns) = name.to_string().try_into() {
        p.subject_alt_names = vec![rcgen::SanType::DnsName(dns)];
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, days);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca)?;
    Ok([
        write(dir, &format!("node-{name}.pem"), &cert.pem(), false)?,
        write(dir, &format!("node-{name}.key"), &key.serialize_pem(), true)?,
    ])
}

/// Makes a CA, a server certificate for `hosts` (and this machine's own names) and a client
/// certificate for each of `nodes` in `dir`; returns the files written. Refuses to replace an
/// existing CA unless `force`.
pub fn init(
    dir: &Path,
    hosts: &[String],
    nodes: &[String],
    days: u32,
    force: bool,
) -> Result<Vec<PathBuf>> {
    if hosts.is_empty() {
        bail!(
            "say which names clients reach the coordinator by: --host dispatch.example.com (repeatable; IP addresses too)"
        );
    }
    for n in nodes {
        check_node(n)?;
    }
    if dir.join("ca.key").exists() && !force {
        bail!(
            "{} already holds a CA (ca.key); certificates made from a new one would not be trusted by clients that have the old ca.pem. Add nodes with `dispatch-coordinator certs node {} NAME`, or pass --force to start over",
            dir.display(),
            dir.display()
        );
    }
    dispatch_core::fs::private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();

    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("dispatch CA ({})", hosts[0]));
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, days.saturating_mul(2));
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    written.push(write(dir, "ca.pem", &ca_cert.pem(), false)?);
    written.push(write(dir, "ca.key", &ca_key.serialize_pem(), true)?);
    let issuer = Issuer::new(ca, ca_key);

    let mut names: Vec<String> = hosts.to_vec();
    for l in LOCAL_NAMES {
        if !names.iter().any(|n| n == l) {
            names.push(l.to_string());
        }
    }
    let mut server = CertificateParams::new(names.clone()).with_context(|| {
        format!("--host: a name is not a valid DNS name or IP address: {names:?}")
    })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hosts[0].clone());
    server.distinguished_name = dn;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    validity(&mut server, days);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    written.push(write(dir, "server.pem", &server_cert.pem(), false)?);
    written.push(write(dir, "server.key", &server_key.serialize_pem(), true)?);

    for n in nodes {
        written.extend(node_cert(dir, n, days, &issuer)?);
    }
    Ok(written)
}

/// Adds client certificates for `nodes`, signed by the CA already in `dir`.
pub fn add_nodes(dir: &Path, nodes: &[String], days: u32) -> Result<Vec<PathBuf>> {
    if nodes.is_empty() {
        bail!("name at least one node");
    }
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).with_context(|| {
        format!(
            "cannot read {}; make a CA first with `dispatch-coordinator certs init {} --host NAME`",
            dir.join("ca.pem").display(),
            dir.display()
        )
    })?;
    let key_pem = std::fs::read_to_string(dir.join("ca.key"))
        .with_context(|| format!("cannot read {}", dir.join("ca.key").display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a private key", dir.join("ca.key").display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
        .with_context(|| format!("{} is not a CA certificate", dir.join("ca.pem").display()))?;
    let mut written = Vec::new();
    for n in nodes {
        written.extend(node_cert(dir, n, days, &issuer)?);
    }
    Ok(written)
}

/// The node a client certificate names: its subject's common name (else its first DNS name).
pub fn node_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_ca_a_server_and_nodes_and_refuses_to_replace_the_ca() {
        let d = tempfile::tempdir().unwrap();
        let files = init(
            d.path(),
            &["dispatch.example".into()],
            &["build-box".into()],
            30,
            false,
        )
        .unwrap();
        assert_eq!(files.len(), 6);
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "server.key", "node-build-box.key"] {
            let mode = std::fs::metadata(d.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let node = std::fs::read_to_string(d.path().join("node-build-box.pem")).unwrap();
        let der = rustls_pem(&node);
        assert_eq!(node_name(&der).as_deref(), Some("build-box"));
        let e = init(d.path(), &["x".into()], &[], 30, false).unwrap_err();
        assert!(e.to_string().contains("already holds a CA"), "{e}");
        add_nodes(d.path(), &["gpu-1".into()], 30).unwrap();
        let gpu = std::fs::read_to_string(d.path().join("node-gpu-1.pem")).unwrap();
        assert_eq!(node_name(&rustls_pem(&gpu)).as_deref(), Some("gpu-1"));
        assert!(add_nodes(d.path(), &["k8s-*".into()], 30).is_err());
        assert!(init(d.path(), &[], &[], 30, true).is_err());
    }

    fn rustls_pem(text: &str) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(text.as_bytes())
            .unwrap()
            .to_vec()
    }
}
