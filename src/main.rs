//! The `catalytic` binary: parse the command line, then serve or run an admin command.

use catalytic::config::{self, Command};
use catalytic::{cli, reactor::Server};
use std::collections::HashMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    let command = match config::parse(&args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("catalytic: {e}\n\n{}", config::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", catalytic::help::help());
            Ok(())
        }
        Command::Version => {
            println!("{}", catalytic::help::version());
            Ok(())
        }
        Command::AdminCreate { email, db } => cli::admin_create(&email, &db),
        Command::AdminToken { email, db, ttl } => {
            cli::admin_token(&email, &db, ttl).map(|token| println!("{token}"))
        }
        Command::AdminRevoke { email, db } => cli::admin_revoke(&email, &db).map(|_| ()),
        Command::Serve(cfg) => {
            let logger = simple_logger::SimpleLogger::new()
                .with_level(cfg.log_level)
                .with_utc_timestamps();
            if let Err(e) = logger.init() {
                eprintln!("catalytic: logger: {e}");
            }
            Server::bind(cfg)
                .and_then(|server| server.run().map_err(|e| format!("event loop: {e}")))
                .map_err(cli::Failure::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("catalytic: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
