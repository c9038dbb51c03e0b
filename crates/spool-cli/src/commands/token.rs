//! `spool token create|list|revoke`: the token file, edited in place (the
//! same file `spoold` reads), or, without `--file` and with `--server`,
//! through the server's `spool.v1.Admin` service, which edits its own file.

use anyhow::Context as _;
use serde_json::json;
use spool_auth::{Grant, Tokens};

use crate::args::TokenCommand;
use crate::args::jobs::OutputFormat;
use crate::output::{errln, outln};
use crate::table::Table;
use crate::time::{format_timestamp_ms, now_ms};
use crate::{Context, Explain};

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            principal,
            grants,
            file,
        } => {
            let path = file.path();
            let grants: Vec<Grant> = grants
                .iter()
                .map(|text| Grant::parse(text))
                .collect::<Result<_, _>>()?;
            if grants.is_empty() {
                errln!("note: a token without --grant authenticates but is allowed nothing");
            }
            let mut tokens = Tokens::load(&path)?;
            let token = tokens
                .create(&principal, grants, now_ms())
                .map_err(anyhow::Error::msg)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            tokens.save(&path)?;
            outln!("{token}")?;
            errln!(
                "created a token for {principal} in {}: it is shown only now",
                path.display()
            );
            Ok(())
        }
        TokenCommand::List { file, format } => {
            let path = file.path();
            let tokens = Tokens::load(&path)?;
            match format {
                OutputFormat::Json => {
                    for entry in tokens.entries() {
                        let grants: Vec<String> = entry.grants.iter().map(ToString::to_string).collect();
                        outln!(
                            "{}",
                            json!({
                                "id": entry.id,
                                "principal": entry.principal,
                                "created_time_ms": entry.created_time_ms,
                                "grants": grants,
                            })
                        )?;
                    }
                }
                OutputFormat::Human => {
                    let mut table = Table::new(&["ID", "PRINCIPAL", "CREATED", "GRANTS"]);
                    for entry in tokens.entries() {
                        let grants: Vec<String> = entry.grants.iter().map(ToString::to_string).collect();
                        table.row(vec![
                            entry.id.clone(),
                            entry.principal.clone(),
                            format_timestamp_ms(entry.created_time_ms),
                            grants.join(" "),
                        ]);
                    }
                    crate::output::out!("{}", table.render())?;
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id, file } => {
            let path = file.path();
            let mut tokens = Tokens::load(&path)?;
            anyhow::ensure!(
                tokens.revoke(&id),
                "no token {id:?} in {}; `spool token list` shows the ids",
                path.display()
            );
            tokens.save(&path)?;
            errln!("revoked token {id}");
            Ok(())
        }
    }
}

/// The same commands through the server (`--server`); `--file` is not
/// used there: the server edits the token file it reads.
pub async fn remote(context: &Context, command: TokenCommand) -> anyhow::Result<()> {
    let client = &context.client;
    match command {
        TokenCommand::Create {
            principal, grants, ..
        } => {
            for text in &grants {
                Grant::parse(text)?;
            }
            if grants.is_empty() {
                errln!("note: a token without --grant authenticates but is allowed nothing");
            }
            let (token, info) = client
                .create_token(&principal, &grants)
                .await
                .explain(context.subject())?;
            outln!("{token}")?;
            errln!(
                "created token {} for {principal} on {}: it is shown only now",
                info.id,
                context.server
            );
        }
        TokenCommand::List { format, .. } => {
            let tokens = client.list_tokens().await.explain(context.subject())?;
            match format {
                OutputFormat::Json => {
                    for entry in &tokens {
                        outln!(
                            "{}",
                            json!({
                                "id": entry.id,
                                "principal": entry.principal,
                                "created_time_ms": entry.created_time_ms,
                                "grants": entry.grants,
                            })
                        )?;
                    }
                }
                OutputFormat::Human => {
                    let mut table = Table::new(&["ID", "PRINCIPAL", "CREATED", "GRANTS"]);
                    for entry in &tokens {
                        table.row(vec![
                            entry.id.clone(),
                            entry.principal.clone(),
                            format_timestamp_ms(entry.created_time_ms),
                            entry.grants.join(" "),
                        ]);
                    }
                    crate::output::out!("{}", table.render())?;
                }
            }
        }
        TokenCommand::Revoke { id, .. } => {
            client.revoke_token(&id).await.explain(context.subject())?;
            errln!("revoked token {id}");
        }
    }
    Ok(())
}
