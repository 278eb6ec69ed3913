//! `idbridge api-key create|list|revoke`.

use idbridge_sso::api_keys as auth;

use crate::cli::ApiKeyCommand;
use crate::config::Config;

pub fn run(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config)?;
    match command {
        ApiKeyCommand::Create { name } => {
            let key = auth::create_api_key(store.as_ref(), &name)?;
            println!("{}", key.plaintext);
            eprintln!(
                "created {} ({}); store it now, it is not shown again",
                key.record.id, key.record.name
            );
        }
        ApiKeyCommand::List => {
            for k in auth::list_api_keys(store.as_ref())? {
                println!("{}\t{}\t...{}\t{}", k.id, k.name, k.last4, k.created_at);
            }
        }
        ApiKeyCommand::Revoke { key } => match auth::revoke_api_key(store.as_ref(), &key)? {
            Some(r) => println!("revoked {} ({})", r.id, r.name),
            None => anyhow::bail!("no single key matches {key:?}; use the id from `api-key list`"),
        },
    }
    Ok(())
}
