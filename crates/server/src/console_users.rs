//! `idbridge console-user add|passwd|remove|list`: operator accounts of the web console
//! (`/console`). The server must be stopped: the store is single-process.

use std::io::BufRead;

use clap::Subcommand;
use idbridge_console::operators;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConsoleUserCommand {
    /// Add an operator. Without `--password-stdin` a random password is made and printed once.
    Add {
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an operator's password (same password rules as `add`).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an operator; its sessions end at their next request.
    Remove { username: String },
    /// List operators (names only).
    List,
}

/// The password to set, and whether it was generated (and so must be printed).
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((idbridge_secrets::random_alphanumeric(24), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
}

pub fn run(config: &Config, command: ConsoleUserCommand) -> anyhow::Result<()> {
    let store = crate::open_store(config)?;
    match command {
        ConsoleUserCommand::Add {
            username,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            operators::add(store.as_ref(), &username, &pw)?;
            if generated {
                println!("{pw}");
                eprintln!(
                    "added console operator {username:?}; its password is printed above, once"
                );
            } else {
                eprintln!("added console operator {username:?}");
            }
        }
        ConsoleUserCommand::Passwd {
            username,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            operators::set_password(store.as_ref(), &username, &pw)?;
            if generated {
                println!("{pw}");
            }
            eprintln!("changed the password of console operator {username:?}");
        }
        ConsoleUserCommand::Remove { username } => {
            operators::remove(store.as_ref(), &username)?;
            eprintln!("removed console operator {username:?}");
        }
        ConsoleUserCommand::List => {
            for name in operators::list(store.as_ref())? {
                println!("{name}");
            }
        }
    }
    Ok(())
}
