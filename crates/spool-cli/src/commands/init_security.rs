//! `spool init-security`: the files of a first secure setup in one
//! command: a CA (`ca.pem`, `ca.key`), a server certificate it signed for
//! the given hosts (`server.pem`, `server.key`), a token file with an
//! admin token (`tokens.toml`, the token itself in `admin.token`), all
//! with mode 0600; then the flags that start `spoold` and the clients with
//! them. Existing files are never overwritten.
//!
//! For a cluster (`--node ID=HOSTS`, one per node) it writes a certificate
//! per node (`node-ID.pem`, `node-ID.key`) instead of the server's: each
//! names the node's hosts and may serve as a TLS server and a TLS client,
//! since a node presents it both on its listeners and when it calls its
//! peers. `ca.pem` is then also the nodes' CA (`peer_tls_ca`): it signs
//! nodes only, so that no application's certificate makes it a peer.

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

/// Files every run writes; `server.*` or one `node-ID.*` pair per node
/// come besides.
const FILES: [&str; 4] = ["ca.pem", "ca.key", "tokens.toml", "admin.token"];

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

/// The subject alternative names of `hosts`: IP addresses as such, the
/// rest as DNS names.
fn alt_names(hosts: &[String]) -> anyhow::Result<Vec<SanType>> {
    hosts
        .iter()
        .map(|host| match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => host
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("{host:?} is neither a host name nor an IP address")),
        })
        .collect()
}

/// A key and a certificate signed by `issuer` for `hosts`, named
/// `common_name`, for the uses in `usages` (server, and client too for a
/// node, which presents it to its peers).
fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    hosts: &[String],
    usages: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate().context("cannot generate a key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = alt_names(hosts)?;
    params.extended_key_usages = usages;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    valid_for(&mut params, days);
    let certificate = params
        .signed_by(&key, issuer)
        .with_context(|| format!("cannot sign the certificate of {common_name}"))?;
    Ok((certificate, key))
}

/// The files this run writes, in order: name and contents.
type Files = Vec<(String, String)>;

pub fn run(args: InitSecurityArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names: Vec<String> = FILES.iter().map(|name| (*name).to_owned()).collect();
    if args.nodes.is_empty() {
        names.extend(["server.pem".to_owned(), "server.key".to_owned()]);
    }
    for (id, _) in &args.nodes {
        names.extend([format!("node-{id}.pem"), format!("node-{id}.key")]);
    }
    if let Some(existing) = names.iter().map(|name| dir.join(name)).find(|path| path.exists()) {
        anyhow::bail!(
            "{} exists already; init-security never overwrites: choose another --dir",
            existing.display()
        );
    }
    let mut ids: Vec<u64> = args.nodes.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    if let Some(twice) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        anyhow::bail!("node {} is given twice (--node)", twice[0]);
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

    let mut files: Files = vec![
        ("ca.pem".to_owned(), ca.pem()),
        ("ca.key".to_owned(), ca_key.serialize_pem()),
    ];
    if args.nodes.is_empty() {
        let (server, server_key) = leaf(
            &issuer,
            &hosts[0],
            &hosts,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            args.days,
        )?;
        files.push(("server.pem".to_owned(), server.pem()));
        files.push(("server.key".to_owned(), server_key.serialize_pem()));
    }
    for (id, node_hosts) in &args.nodes {
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (node, node_key) = leaf(
            &issuer,
            &format!("spool-node-{id}"),
            node_hosts,
            usages,
            args.days,
        )?;
        files.push((format!("node-{id}.pem"), node.pem()));
        files.push((format!("node-{id}.key"), node_key.serialize_pem()));
    }

    let mut tokens = Tokens::default();
    let grants = ["cluster=admin", "topic:*=*", "queue:*=*"]
        .iter()
        .map(|g| Grant::parse(g))
        .collect::<Result<Vec<_>, _>>()?;
    let token = tokens
        .create(&args.principal, grants, now_ms())
        .map_err(anyhow::Error::msg)?;
    files.push(("tokens.toml".to_owned(), tokens.to_toml()));
    files.push(("admin.token".to_owned(), format!("{token}\n")));
    for (name, text) in &files {
        write_private(&dir.join(name), text)?;
    }

    let d = dir.display();
    let written: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    outln!("Created in {d} (mode 0600): {}", written.join(" "))?;
    let client_host = match args.nodes.first() {
        None => {
            outln!("Server certificate for: {}", hosts.join(", "))?;
            outln!()?;
            outln!("Start the server:")?;
            outln!(
                "  spoold --listen 0.0.0.0:7070 --tls-cert {d}/server.pem --tls-key {d}/server.key --tokens-file {d}/tokens.toml"
            )?;
            hosts[0].clone()
        }
        Some((_, first_hosts)) => {
            print_cluster(&args.nodes, &d.to_string())?;
            first_hosts[0].clone()
        }
    };
    outln!()?;
    outln!("Point the clients at it (spool and spool-worker read the same variables):")?;
    outln!("  export SPOOL_SERVER=https://{client_host}:7070")?;
    outln!("  export SPOOL_TLS_CA={d}/ca.pem")?;
    outln!("  export SPOOL_TOKEN=$(cat {d}/admin.token)")?;
    outln!()?;
    outln!("Then give each application its own token, for example:")?;
    outln!("  spool token create billing --grant 'topic:orders-*=consume'")?;
    errln!(
        "keep ca.key offline once the certificates you need are signed: it can sign any server's certificate{}",
        if args.nodes.is_empty() {
            ""
        } else {
            " and make anyone a peer of the cluster"
        }
    );
    Ok(())
}

/// Prints each node's certificate hosts and `spoold` command: clients on
/// port 7070 and peers on 7080 of the node's first IP address (a peer
/// address is IP:PORT; a node given by names only gets its first name, to
/// be replaced by its IP).
fn print_cluster(nodes: &[(u64, Vec<String>)], d: &str) -> anyhow::Result<()> {
    let address = |hosts: &[String]| -> String {
        hosts
            .iter()
            .find(|host| host.parse::<IpAddr>().is_ok())
            .unwrap_or(&hosts[0])
            .clone()
    };
    let peers = nodes
        .iter()
        .map(|(id, hosts)| format!("{id}={}", socket(&address(hosts), 7080)))
        .collect::<Vec<_>>()
        .join(",");
    for (id, hosts) in nodes {
        outln!("Node {id} certificate (node-{id}.pem) for: {}", hosts.join(", "))?;
    }
    outln!()?;
    outln!("Copy ca.pem, tokens.toml and its own node-ID.pem and node-ID.key to each node, and start it:")?;
    for (id, hosts) in nodes {
        outln!(
            "  spoold --node-id {id} --peers {peers} --listen {} --tls-cert {d}/node-{id}.pem --tls-key {d}/node-{id}.key \\\n      --peer-tls-ca {d}/ca.pem --tokens-file {d}/tokens.toml",
            socket(&address(hosts), 7070)
        )?;
    }
    Ok(())
}

/// `host:port`, with an IPv6 address in brackets.
fn socket(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
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
