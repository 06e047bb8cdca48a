//! The `seed serve` command line and the checked configuration it becomes.

use std::net::SocketAddr;

use seed_event::{Error, Result};

/// Options of `seed serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one); other than loopback only with a token
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7007")]
    pub listen: SocketAddr,
    /// Every request but /healthz and the console's files needs `Authorization: Bearer TOKEN`
    #[arg(long, value_name = "TOKEN", env = "SEED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest request body accepted, in bytes (suffixes KiB and MiB); larger ones get 413
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Allow this browser origin to call the API (CORS is off without it)
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// Events a live stream may fall behind before it is ended with an `error` event
    #[arg(long, value_name = "N", default_value_t = 4096, hide = true)]
    pub stream_buffer: usize,
    /// Milliseconds between the comment lines that keep an idle event stream open
    #[arg(long, value_name = "MS", default_value_t = 15_000, hide = true)]
    pub keep_alive_ms: u64,
    /// State watches open at once (each holds a thread and a store follower); more get 503
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_state_watches: usize,
}

impl Default for ServeArgs {
    /// The command line's defaults: loopback port 7007, no token, 1 MiB bodies, no CORS.
    fn default() -> ServeArgs {
        ServeArgs {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7007)),
            token: None,
            max_body: 1 << 20,
            cors: None,
            stream_buffer: 4096,
            keep_alive_ms: 15_000,
            max_state_watches: 256,
        }
    }
}

/// A checked server configuration.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The bearer token, if any (never printed: see the `Debug` impl).
    pub token: Option<String>,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// The origin CORS allows, if any.
    pub cors: Option<axum::http::HeaderValue>,
    /// Capacity of each pattern's broadcast channel.
    pub stream_buffer: usize,
    /// How often an idle event stream sends a comment line.
    pub keep_alive: std::time::Duration,
    /// State watches open at once.
    pub max_state_watches: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("max_body", &self.max_body)
            .field("cors", &self.cors)
            .field("stream_buffer", &self.stream_buffer)
            .field("keep_alive", &self.keep_alive)
            .field("max_state_watches", &self.max_state_watches)
            .finish()
    }
}

impl Config {
    /// Checks `args`: a non-loopback address needs a token, the CORS origin must be a header value.
    pub fn from_args(args: &ServeArgs) -> Result<Config> {
        let token = args.token.clone().filter(|t| !t.is_empty());
        if token.is_none() && !args.listen.ip().is_loopback() {
            return Err(Error::invalid(
                "--listen",
                format!(
                    "{} is not a loopback address; listening there needs --token (or SEED_TOKEN)",
                    args.listen
                ),
            ));
        }
        let cors = match &args.cors {
            None => None,
            Some(origin) => Some(origin.parse().map_err(|_| {
                Error::invalid(
                    "--cors",
                    format!("{origin:?} is not an origin such as https://example.org"),
                )
            })?),
        };
        if args.stream_buffer == 0 || args.keep_alive_ms == 0 || args.max_state_watches == 0 {
            return Err(Error::invalid(
                "--stream-buffer/--keep-alive-ms/--max-state-watches",
                "must be at least 1",
            ));
        }
        Ok(Config {
            listen: args.listen,
            token,
            max_body: args.max_body,
            cors,
            stream_buffer: args.stream_buffer,
            keep_alive: std::time::Duration::from_millis(args.keep_alive_ms),
            max_state_watches: args.max_state_watches,
        })
    }
}

/// Bytes, or a number with `KiB` or `MiB`.
fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let text = s.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{s:?}: expected bytes such as 65536, 64KiB or 1MiB");
    let n: usize = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).filter(|n| *n > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, token: Option<&str>) -> ServeArgs {
        ServeArgs {
            listen: listen.parse().unwrap(),
            token: token.map(String::from),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn the_defaults_are_the_command_lines() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parsed = Cli::try_parse_from(["seed"]).unwrap().serve;
        let default = ServeArgs::default();
        assert_eq!(
            (
                parsed.listen,
                parsed.max_body,
                parsed.stream_buffer,
                parsed.keep_alive_ms,
                parsed.cors,
                parsed.max_state_watches
            ),
            (
                default.listen,
                default.max_body,
                default.stream_buffer,
                default.keep_alive_ms,
                default.cors,
                default.max_state_watches
            )
        );
    }

    #[test]
    fn other_addresses_than_loopback_need_a_token() {
        assert!(Config::from_args(&args("127.0.0.1:0", None)).is_ok());
        assert!(Config::from_args(&args("[::1]:0", None)).is_ok());
        let e = Config::from_args(&args("0.0.0.0:0", None)).unwrap_err();
        assert!(e.to_string().contains("needs --token"), "{e}");
        assert!(Config::from_args(&args("0.0.0.0:0", Some(""))).is_err());
        assert!(Config::from_args(&args("0.0.0.0:0", Some("t"))).is_ok());
    }

    #[test]
    fn the_token_is_not_in_the_debug_form() {
        let config = Config::from_args(&args("127.0.0.1:0", Some("s3cr3t"))).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1MB").is_err());
        assert!(parse_size("0").is_err());
    }
}
