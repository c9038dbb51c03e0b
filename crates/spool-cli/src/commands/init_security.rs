//! `spool init-security`: the files of a first secure setup in one
//! command: a CA (`ca.pem`, `ca.key`), a server certificate it signed for
//! the given hosts (`server.pem`, `server.key`), a token file with an
//! admin token (`tokens.toml`, the token itself in `admin.token`), all
//! with mode 0600; then the flags that start `spoold` and the clients with
//! them. Existing files are never overwritten.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use spool_auth::{Grant, Tokens};

use crate::args::InitSecurityArgs;
use crate::output::{errln, outln};
use crate::time::now_ms;

const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "tokens.toml",
    "admin.token",
];

/// Writes a new file with mode 0600; an existing one is an error.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Year, month and day of a Unix day number (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// Sets a certificate's validity: from yesterday (clocks differ) to
/// `days` from now.
fn valid_for(params: &mut CertificateParams, days: u32) {
    let today = now_ms().div_euclid(86_400_000);
    let (year, month, day) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    let (year, month, day) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(year, month, day);
}

pub fn run(args: InitSecurityArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(existing) = FILES.iter().map(|name| dir.join(name)).find(|path| path.exists()) {
        anyhow::bail!(
            "{} exists already; init-security never overwrites: choose another --dir",
            existing.display()
        );
    }
    let hosts = if args.hosts.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        args.hosts.clone()
    };

    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "Spool CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid_for(&mut ca_params, args.days.saturating_mul(10).min(3_650));
    let ca = ca_params
        .self_signed(&ca_key)
        .context("cannot sign the CA certificate")?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate().context("cannot generate the server key")?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = DistinguishedName::new();
    server_params
        .distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    server_params.subject_alt_names = hosts
        .iter()
        .map(|host| match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => host
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("{host:?} is neither a host name nor an IP address")),
        })
        .collect::<anyhow::Result<_>>()?;
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    valid_for(&mut server_params, args.days);
    let server = server_params
        .signed_by(&server_key, &issuer)
        .context("cannot sign the server certificate")?;

    let mut tokens = Tokens::default();
    let grants = ["cluster=admin", "topic:*=*", "queue:*=*"]
        .iter()
        .map(|g| Grant::parse(g))
        .collect::<Result<Vec<_>, _>>()?;
    let token = tokens
        .create(&args.principal, grants, now_ms())
        .map_err(anyhow::Error::msg)?;

    write_private(&dir.join("ca.pem"), &ca.pem())?;
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_private(&dir.join("server.pem"), &server.pem())?;
    write_private(&dir.join("server.key"), &server_key.serialize_pem())?;
    write_private(&dir.join("tokens.toml"), &tokens.to_toml())?;
    write_private(&dir.join("admin.token"), &format!("{token}\n"))?;

    let d = dir.display();
    outln!("Created in {d} (mode 0600): ca.pem ca.key server.pem server.key tokens.toml admin.token")?;
    outln!("Server certificate for: {}", hosts.join(", "))?;
    outln!()?;
    outln!("Start the server:")?;
    outln!(
        "  spoold --listen 0.0.0.0:7070 --tls-cert {d}/server.pem --tls-key {d}/server.key --tokens-file {d}/tokens.toml"
    )?;
    outln!()?;
    outln!("Point the clients at it (spool and spool-worker read the same variables):")?;
    outln!("  export SPOOL_SERVER=https://{}:7070", hosts[0])?;
    outln!("  export SPOOL_TLS_CA={d}/ca.pem")?;
    outln!("  export SPOOL_TOKEN=$(cat {d}/admin.token)")?;
    outln!()?;
    outln!("Then give each application its own token, for example:")?;
    outln!("  spool token create billing --grant 'topic:orders-*=consume'")?;
    errln!(
        "keep ca.key offline once the certificates you need are signed: it can sign any server's certificate"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
