//! The command line: `hookgate serve | validate | send | test | token | keys | plugin | catch`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A webhook dispatch gateway: YAML templates, hot reload, retries, auth plugins, per-campaign stats",
    long_about = "hookgate sends campaign data to partners' servers as webhooks. Drop YAML templates \
                  into CONFIG/templates/, run `hookgate serve`, and dispatch payloads through the HTTP API."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The config folder, shared by the commands that read it.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config folder: hookgate.yaml and templates/.
    #[arg(long, short = 'c', value_name = "DIR", default_value = "config", env = "HOOKGATE_CONFIG", global = true)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: load and watch the templates, deliver dispatches, serve the HTTP API.
    #[command(long_about = "Run the gateway on the config folder. Templates in DIR/templates/ are loaded, \
        verified (the test payload must get a 2xx) and reloaded live when their files change. \
        The HTTP API listens on `listen` from hookgate.yaml (default 127.0.0.1:8080). \
        Stop with Ctrl-C or SIGTERM: deliveries in progress finish first.")]
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check hookgate.yaml and every template; print `file:line:col: message` per problem.
    #[command(long_about = "Parse and check hookgate.yaml and every template in DIR/templates/. \
        Each problem is printed as `file:line:col: message`; the exit code is 1 if there is any. \
        With --verify, each valid template is also sent the test payload and must get a 2xx.")]
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Also send each template's test payload and require a 2xx answer.
        #[arg(long)]
        verify: bool,
    },
    /// Dispatch one payload through a template without a server, wait for the outcome, print the stats.
    #[command(long_about = "Dispatch one payload (the reference format: targetId, key_values, profiles) \
        through TEMPLATE, with its batching, auth, timeout and retries, and wait until every request is \
        delivered or failed. The template is used as it is, without the on-load verification. \
        Exit code 1 if any request failed.")]
    Send {
        /// The template's name.
        template: String,
        /// A JSON payload file, or `-` (the default) for standard input.
        #[arg(default_value = "-", value_name = "PAYLOAD.json|-")]
        payload: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Obtain an OAuth access token for a template now (the reference document's "Generate").
    #[command(long_about = "Run the template's OAuth grant now and show the token's expiry, scopes and a \
        masked token (never the token itself). Useful to check credentials before dispatching.")]
    Token {
        /// The template's name.
        template: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage the RSA signing keys of JWT client assertions (in DATA_DIR/keys/).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// WASM plugins: start a project, check a built one against the contract.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Send a template's test payload (`is_test: true`) and show the answer.
    Test {
        /// The template's name.
        template: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// A local request catcher: prints every request it gets and answers it (for trying templates).
    Catch {
        /// The address to listen on.
        #[arg(long, short = 'l', default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// The HTTP status to answer with (try 500 or 429 to watch retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Print a JSON Schema (of a template file or of hookgate.yaml) or the API's OpenAPI document.
    #[command(long_about = "Print the JSON Schema (draft 2020-12) of a template file (`template`) or of \
        hookgate.yaml (`config`), for editors' completion and checking (the `yaml-language-server` line in \
        README.md), or the HTTP API's OpenAPI 3.1 document (`openapi`, also served at GET /openapi.json). \
        Copies are committed in schemas/.")]
    Schema {
        /// What to print.
        #[arg(value_enum)]
        of: SchemaOf,
    },
}

/// What `hookgate schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaOf {
    /// A template file (`templates/NAME.yaml`).
    Template,
    /// `hookgate.yaml`.
    Config,
    /// The HTTP API (OpenAPI 3.1).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; it becomes the active key if there is none yet.
    Generate {
        #[command(flatten)]
        key: NewKey,
    },
    /// Create a key and make it active; the previous key stays in the JWKS (and may still
    /// sign) for `keys.grace` so partners can switch.
    Rotate {
        #[command(flatten)]
        key: NewKey,
    },
    /// List the keys and their status (active, standby, retired, expired).
    List,
    /// Print the JWK Set served at /.well-known/jwks.json.
    Jwks,
    /// Print a public key as PEM, to paste into the partner's auth server.
    Public {
        /// The key id; default the active key.
        id: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct NewKey {
    /// The key id (`kid`); default a generated one.
    #[arg(long)]
    pub id: Option<String>,
    /// The RSA modulus size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    pub bits: usize,
    /// The algorithm the key is published for (its JWK `alg`).
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "RS384", "RS512"])]
    pub alg: String,
}

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Write a ready plugin project in Rust, Python or JavaScript: an auth plugin that signs
    /// every webhook, the SDK and the WIT contract copied in, and a README with the commands
    /// to build it, check it and install it.
    #[command(long_about = "Write a ready plugin project into DIR (default ./NAME): an auth plugin that signs \
        every webhook (HMAC-SHA256 of its timestamp and body under the template's `secret`), the SDK of \
        its language and the WIT contract copied in (so it builds on its own, with no checkout of \
        hookgate), a template that uses it, and a README with the three commands: build, \
        `hookgate plugin check`, copy into config/plugins/. Rust needs the wasm32-wasip2 target, Python \
        componentize-py (pip), JavaScript Node.js and npm.")]
    New {
        /// The plugin's name: the `.wasm` file's stem, which templates use (`auth: {type: NAME}`).
        /// Lowercase letters, digits, `-` and `_`, starting with a letter.
        name: String,
        /// The language of the project.
        #[arg(long, value_enum)]
        lang: PluginLang,
        /// The folder to write it into (new, or empty); default ./NAME.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Load a plugin against the WIT contract (hookgate:plugin@0.1.0), report its version
    /// and exports, and run it on a sample request, within the configured limits.
    Check {
        /// The plugin file.
        file: PathBuf,
        /// The plugin config to run with, as JSON (what a template's `auth` keys would be).
        #[arg(long, value_name = "JSON", default_value = "{}")]
        with: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The languages `hookgate plugin new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginLang {
    Rust,
    Python,
    Js,
}

impl PluginLang {
    pub fn label(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::Python => "Python",
            Self::Js => "JavaScript",
        }
    }
}
